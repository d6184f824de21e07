#!/usr/bin/env bash
# The fleet over NATS JetStream (bench/fleet_visible.rs), release profile, one run: change-to-
# visible (an admin write on `serve --nats` until a sidecar answers at its revision, N writes),
# the same check over HTTP and NATS request-reply, and a burst of 10,000 events applied by a
# sidecar while it answers checks (vs idle). Prints a Markdown section (bench/fleet-results.md).
# Needs nats-server 2.10+: $NATS_SERVER_BIN, else the one tests/run.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
NATS_SERVER_BIN="${NATS_SERVER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/nats-venv/bin/nats-server}"
[ -x "$NATS_SERVER_BIN" ] || { echo "no nats-server at $NATS_SERVER_BIN: run tests/run.sh or set NATS_SERVER_BIN" >&2; exit 1; }
cargo build --release --bin portcullis --example fleet_visible
echo "\`bash bench/fleet.sh $N\` — $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores (load average before: $(cut -d' ' -f1-3 /proc/loadavg)), $("$NATS_SERVER_BIN" --version), release profile, loopback."
echo
NATS_SERVER_BIN="$NATS_SERVER_BIN" PORTCULLIS_BIN=target/release/portcullis \
    target/release/examples/fleet_visible "$N"
echo
echo "(load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
