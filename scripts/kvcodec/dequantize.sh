#!/usr/bin/env bash
# Makes (once, cached beside the models) the default model with its weights dequantised to F32
# (scripts/kvcodec/dequantize.py, with the gguf package from PyPI installed into a cached folder)
# and prints its path. Usage: dequantize.sh <model.gguf>
set -euo pipefail
GGUF_VERSION="${GGUF_VERSION:-0.17.1}"
SRC="$1"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
OUT="${SRC%.gguf}-f32-dequantized.gguf"
LIBS="$CACHE/pylibs/gguf-$GGUF_VERSION"
if [ ! -f "$LIBS/.ready" ]; then
  echo "dequantize: installing gguf==$GGUF_VERSION and numpy into $LIBS" >&2
  rm -rf "$LIBS.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --target "$LIBS.tmp" "gguf==$GGUF_VERSION" numpy >&2
  rm -rf "$LIBS" && mv "$LIBS.tmp" "$LIBS" && touch "$LIBS/.ready"
fi
if [ ! -f "$OUT" ]; then
  echo "dequantize: writing $OUT (about 1 GB)" >&2
  PYTHONPATH="$LIBS" python3 "$(dirname "${BASH_SOURCE[0]}")/dequantize.py" "$SRC" "$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"
