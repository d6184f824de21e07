#!/usr/bin/env bash
# HTTP comparison: `portcullis serve` vs the Cerbos PDP on loopback, same requests, with wrk.
# Appends records to bench/out/http.jsonl (bench/peers.sh then writes bench/PEERS.md).
# Installs what it needs: wrk (Debian), the Cerbos binary (npm package @cerbos/cerbos-linux-x64).
# Usage: bash bench/peers/http.sh   (PEERS_WORLDS=S,M, PEERS_HTTP_SECS=10, PEERS_HTTP_ROUNDS=3, PEERS_HTTP_CONNS=32,
#        PEERS_HTTP_PIN=1; see http_compare.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
CERBOS_VERSION="${CERBOS_VERSION:-0.55.0}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [ ! -x bench/out/cerbos-bin/package/cerbos-linux-x64 ]; then
  mkdir -p bench/out/cerbos-bin
  (cd bench/out/cerbos-bin && npm pack --silent "@cerbos/cerbos-linux-x64@${CERBOS_VERSION}" >/dev/null \
    && tar xzf cerbos-cerbos-linux-x64-*.tgz)
fi

cargo build --release --bin portcullis
PEERS_MODE=cerbos-prep cargo bench --manifest-path bench/peers/Cargo.toml --bench peers
python3 bench/peers/http_compare.py
