#!/usr/bin/env bash
# Side by side with the peers: writes bench/PEERS.md (tables with ratios, peer versions, machine,
# date) from in-process runs of Portcullis, Cedar, Casbin and Regorus on worlds S and M.
#
# Usage: bash bench/peers.sh
#   PEERS_WORLDS=S            only world S (default: S,M)
#   PEERS_ENGINES=portcullis,cedar   only some engines
#   PEERS_P99_SECS=10         time budget per engine and world of the p99 harness
# Takes ~30-60 min on 2 cores (world M with Casbin dominates). Release profile (cargo bench).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

mkdir -p bench/out
rm -f bench/out/agree.jsonl bench/out/p99.jsonl bench/out/mem.jsonl

log "build (release)"
cargo bench --bench peers --no-run

log "same decisions on every bench request"
PEERS_MODE=agree cargo bench --bench peers

log "criterion: median per check"
cargo bench --bench peers

log "p99 harness"
PEERS_MODE=p99 cargo bench --bench peers

log "memory of each engine's loaded world (child processes)"
PEERS_MODE=mem cargo bench --bench peers

if [ -x bench/peers_http.sh ] || [ -f bench/peers_http.sh ]; then
  log "HTTP: Portcullis vs Cerbos (bench/peers_http.sh)"
  bash bench/peers_http.sh || log "HTTP comparison failed (see above); report written without it"
fi

log "report"
PEERS_MODE=report cargo bench --bench peers
echo "wrote bench/PEERS.md" >&2
