#!/usr/bin/env bash
# Build every example plugin to plugins/out/*.wasm.
# Rust plugins: Debian rustc 1.63 + cargo + libstd-rust-dev-wasm32 (rustup's toolchain has no
# wasm32 target here and stays first on PATH, hence the absolute paths). C plugin: Debian clang + lld.
# Installs the Debian packages when absent (root or sudo).
set -euo pipefail
cd "$(dirname "$0")"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2
        return 1
    fi
}

missing=()
[ -x /usr/bin/rustc ] || missing+=(rustc)
[ -x /usr/bin/cargo ] || missing+=(cargo)
[ -d /usr/lib/rustlib/wasm32-unknown-unknown ] || missing+=(libstd-rust-dev-wasm32)
[ -x /usr/bin/clang ] || missing+=(clang)
[ -x /usr/bin/wasm-ld ] || missing+=(lld)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

export CARGO_TARGET_DIR="$PWD/target"
mkdir -p out
RUSTC=/usr/bin/rustc /usr/bin/cargo build --quiet --release --target wasm32-unknown-unknown
for crate in shift-hours channel device mfa; do
    cp "target/wasm32-unknown-unknown/release/${crate//-/_}.wasm" "out/$crate.wasm"
done
/usr/bin/clang --target=wasm32 -nostdlib -Wl,--no-entry -Wl,--strip-all -O2 \
    -o out/c-weekdays.wasm c-weekdays/weekdays.c
ls -l out/*.wasm
