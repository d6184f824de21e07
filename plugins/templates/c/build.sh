#!/usr/bin/env bash
# Builds __NAME__.wasm with clang and lld (Debian/Ubuntu: apt-get install clang lld). No libc:
# -nostdlib; exports are marked with export_name; the only import is portcullis.set_reason.
set -euo pipefail
cd "$(dirname "$0")"
CLANG="${CLANG:-clang}"
command -v "$CLANG" >/dev/null || CLANG=/usr/bin/clang
"$CLANG" --target=wasm32 -nostdlib -Wl,--no-entry -Wl,--strip-all -O2 -Wall -o __NAME__.wasm plugin.c
echo "built __NAME__.wasm ($(wc -c < __NAME__.wasm) bytes)"
