#!/usr/bin/env bash
# Core-engine benchmarks in one command: criterion benches (build, check, filter, scopes,
# explain), then the report harness (check latency percentiles on world L, filter throughput,
# bytes per assignment, build time of the largest tenant, RSS), which writes the "Core engine"
# section of bench/RESULTS.md. Release profile (the bench profile inherits it).
#
# Usage: bash bench/core.sh            # everything (~10 min on 2 cores)
#        QUICK=1 bash bench/core.sh    # report harness only (skips criterion, ~3 min)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

log "compile: cargo bench --bench core --bench latency --no-run"
cargo bench --bench core --bench latency --no-run

if [ -z "${QUICK:-}" ]; then
  log "criterion: cargo bench --bench core"
  # Stale estimates must not leak into the report.
  rm -rf "${CARGO_TARGET_DIR:-target}/criterion"
  cargo bench --bench core
fi

log "report: cargo bench --bench latency (writes bench/RESULTS.md)"
cargo bench --bench latency

log "done: bench/RESULTS.md"
