#!/usr/bin/env bash
# Change-to-visible over NATS JetStream (bench/fleet_visible.rs), release profile:
# an admin write on `serve --nats` until a sidecar answers at its revision, 1000 writes.
# Needs nats-server 2.10+: $NATS_SERVER_BIN, else the one tests/run.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
NATS_SERVER_BIN="${NATS_SERVER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/nats-venv/bin/nats-server}"
[ -x "$NATS_SERVER_BIN" ] || { echo "no nats-server at $NATS_SERVER_BIN: run tests/run.sh or set NATS_SERVER_BIN" >&2; exit 1; }
cargo build --release --bin portcullis --example fleet_visible
out=bench/fleet-results.md
{
    echo "# Fleet: change-to-visible over NATS JetStream"
    echo
    echo "\`bash bench/fleet.sh $N\` — $(date -u +%Y-%m-%d), $(nproc) cores, $("$NATS_SERVER_BIN" --version), release profile, loopback."
    echo
    NATS_SERVER_BIN="$NATS_SERVER_BIN" PORTCULLIS_BIN=target/release/portcullis \
        target/release/examples/fleet_visible "$N"
} | tee "$out"
