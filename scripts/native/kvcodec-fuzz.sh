#!/usr/bin/env bash
# The native KV decoder fed corrupted bodies under AddressSanitizer and UndefinedBehaviorSanitizer:
# a truncated or corrupt entry must be refused with an error, never read or write out of bounds
# (engine/native/src/kvcodec-decode.cpp). Builds kvcodec-fuzz/fuzz.cpp with the decoder's sources
# (no llama.cpp, no Node) into a temporary directory, writes its corpus with kvcodec-fuzz/jobs.ts.
#
#   scripts/native/kvcodec-fuzz.sh [ITERATIONS] [SEED]     default 20000 iterations, seed 1
#   LLMFLEET_KVCODEC_SIMD=avx2|none ...                    the wide stream's AVX2 or one-lane path
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
SRC="$ROOT/engine/native/src"
node --import tsx "$ROOT/scripts/native/kvcodec-fuzz/jobs.ts" "$DIR/corpus.bin"
"${CXX:-g++}" -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -ffp-contract=off -I"$SRC" \
  "$ROOT/scripts/native/kvcodec-fuzz/fuzz.cpp" "$SRC/kvcodec-decode.cpp" "$SRC/kvcodec-block.cpp" "$SRC/kvcodec-wide.cpp" -o "$DIR/fuzz" -lpthread
"$DIR/fuzz" "$DIR/corpus.bin" "${2:-1}" "${1:-20000}"
