#!/usr/bin/env bash
# Side by side with the peers: writes bench/PEERS.md (tables with ratios, peer versions, machine,
# date) from in-process runs of Portcullis, Cedar, Casbin and Regorus on worlds S and M, and the
# HTTP comparison with the Cerbos PDP (bench/peers/http.sh).
#
# Usage: bash bench/peers.sh
#   PEERS_WORLDS=S                   only world S (default: S,M)
#   PEERS_ENGINES=portcullis,cedar   only some engines (in-process parts)
#   PEERS_P99_SECS=10                time budget per engine and world of the p99 harness
#   PEERS_SKIP_HTTP=1                skip the HTTP comparison
# The peers live in their own package, bench/peers (see bench/peers/README.md); it shares the
# root target directory so the product's release artifacts are reused. Release profile.
# Takes ~30-60 min on 2 cores (world M with Casbin dominates).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
M=(--manifest-path bench/peers/Cargo.toml)

log() { printf '\n== %s\n' "$*" >&2; }

mkdir -p bench/out
rm -f bench/out/agree.jsonl bench/out/p99.jsonl bench/out/mem.jsonl bench/out/http.jsonl

log "build (release)"
cargo bench "${M[@]}" --bench peers --no-run

log "same decisions on every bench request"
PEERS_MODE=agree cargo bench "${M[@]}" --bench peers

log "criterion: median per check"
cargo bench "${M[@]}" --bench peers

log "p99 harness"
PEERS_MODE=p99 cargo bench "${M[@]}" --bench peers

log "memory of each engine's loaded world (child processes)"
PEERS_MODE=mem cargo bench "${M[@]}" --bench peers

if [ -z "${PEERS_SKIP_HTTP:-}" ]; then
  log "HTTP: portcullis serve vs the Cerbos PDP (bench/peers/http.sh)"
  bash bench/peers/http.sh || log "HTTP comparison failed (see above); report written without it"
fi

log "report"
PEERS_MODE=report cargo bench "${M[@]}" --bench peers
