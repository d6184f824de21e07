#!/usr/bin/env bash
# Builds __NAME__.wasm (release profile of Cargo.toml) for wasm32-unknown-unknown with:
# - rustup's toolchain, when its wasm32-unknown-unknown target is installed
#   (rustup target add wasm32-unknown-unknown), else
# - Debian/Ubuntu's rustc 1.63+ (apt-get install rustc cargo libstd-rust-dev-wasm32), called by
#   absolute path because a rustup toolchain without the target may come first on PATH.
set -euo pipefail
cd "$(dirname "$0")"
if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    cargo build --release --target wasm32-unknown-unknown
elif [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/wasm32-unknown-unknown ]; then
    RUSTC=/usr/bin/rustc /usr/bin/cargo build --release --target wasm32-unknown-unknown
else
    echo "no Rust toolchain for wasm32: 'rustup target add wasm32-unknown-unknown', or" \
        "'apt-get install rustc cargo libstd-rust-dev-wasm32' (Debian/Ubuntu)" >&2
    exit 1
fi
cp target/wasm32-unknown-unknown/release/__CRATE__.wasm __NAME__.wasm
echo "built __NAME__.wasm ($(wc -c < __NAME__.wasm) bytes)"
