#!/usr/bin/env bash
# The test command: installs/starts what the tests need when it is absent, then runs them all.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

log "lint: cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

log "unit and integration tests: cargo test"
cargo test --all-targets

log "demo data assertions: portcullis test deploy/demo.yaml"
cargo run --quiet -- test deploy/demo.yaml
