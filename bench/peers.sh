#!/usr/bin/env bash
# Side by side with the peers: writes bench/PEERS.md (tables with ratios, peer versions, machine,
# load average during the run, date) from in-process runs of Portcullis, Cedar, Casbin and
# Regorus on worlds S and M, the HTTP comparison with the Cerbos PDP (bench/peers/http.sh) and
# the long randomized differential test against Cedar.
#
# Usage: bash bench/peers.sh
#   PEERS_WORLDS=S                   only world S (default: S,M)
#   PEERS_ENGINES=portcullis,cedar   only some engines (in-process parts)
#   PEERS_P99_SECS=10                time budget per engine and world of the p99 harness
#   PEERS_SKIP_HTTP=1                skip the HTTP comparison
#   PEERS_STEPS=p99,report           run only these steps (default: all of
#                                    agree,criterion,p99,mem,http,diff-long,report); the records
#                                    of the steps not run are kept from earlier runs
# The peers live in their own package, bench/peers (see bench/peers/README.md). Release profile.
# Takes ~30-60 min on 2 cores (world M with Casbin dominates).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
M=(--manifest-path bench/peers/Cargo.toml)
STEPS="${PEERS_STEPS:-agree,criterion,p99,mem,http,diff-long,report}"
[ -n "${PEERS_SKIP_HTTP:-}" ] && STEPS="${STEPS//http/}"
want() { [[ ",$STEPS," == *",$1,"* ]]; }

mkdir -p bench/out
log() {
  printf '\n== %s\n' "$*" >&2
  printf '%s\n' "$1" >bench/out/phase
}

# Load average during the run: sampled every 5 s with the step that was running
# (bench/out/loadavg.tsv: unix time, step, 1/5/15-min load averages); the report summarises it.
# A full run starts the file afresh; a run of some steps (PEERS_STEPS) appends to it.
if [ -z "${PEERS_STEPS:-}" ]; then : >bench/out/loadavg.tsv; fi
(
  while sleep 5; do
    printf '%s\t%s\t%s\n' "$(date +%s)" "$(cat bench/out/phase 2>/dev/null)" \
      "$(cut -d' ' -f1-3 /proc/loadavg)" >>bench/out/loadavg.tsv
  done
) &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null || true' EXIT

log build "(release)"
cargo bench "${M[@]}" --bench peers --no-run

if want agree; then
  log agree "- same decisions on every bench request"
  rm -f bench/out/agree.jsonl
  PEERS_MODE=agree cargo bench "${M[@]}" --bench peers
fi

if want criterion; then
  log criterion "- median per check"
  cargo bench "${M[@]}" --bench peers
fi

if want p99; then
  log p99 "- each check timed on its own"
  rm -f bench/out/p99.jsonl
  PEERS_MODE=p99 cargo bench "${M[@]}" --bench peers
fi

if want mem; then
  log mem "- memory of each engine's loaded world (child processes)"
  rm -f bench/out/mem.jsonl
  PEERS_MODE=mem cargo bench "${M[@]}" --bench peers
fi

if want http; then
  log http "- portcullis serve vs the Cerbos PDP (bench/peers/http.sh)"
  rm -f bench/out/http.jsonl
  bash bench/peers/http.sh || log http "comparison failed (see above); report written without it"
fi

if want diff-long; then
  log diff-long "- randomized differential test against Cedar (500k cases)"
  rm -f bench/out/differential.jsonl
  seed="${PEERS_SEED:-20261129}"
  cargo test "${M[@]}" --release --test differential_cedar --no-run
  t0=$(date +%s.%N)
  if PEERS_SEED="$seed" cargo test "${M[@]}" --release --test differential_cedar \
      -- --ignored --nocapture differential_long 2>&1 | tee bench/out/differential.log; then
    ok=true
  else
    ok=false
  fi
  t1=$(date +%s.%N)
  cases=$(grep -o '^[0-9]* cases agree' bench/out/differential.log | cut -d' ' -f1 || true)
  printf '{"test":"differential_long","seed":%s,"cases":%s,"passed":%s,"secs":%.1f}\n' \
    "$seed" "${cases:-0}" "$ok" "$(echo "$t1 - $t0" | bc)" >bench/out/differential.jsonl
fi

if want report; then
  log report "- bench/PEERS.md"
  PEERS_MODE=report cargo bench "${M[@]}" --bench peers
fi
