#!/usr/bin/env bash
# The one command on the GPU machine (device call, run from the repo root, carrying .device and
# node_modules/node-addon-api — see scripts/native/device-pack.sh): unpacks Node and the llama.cpp
# source, builds the CUDA addon and llama.cpp's tools (scripts/native/build.sh --cuda --tools),
# then runs the GPU benchmark. Arguments go to the benchmark; results and logs go to $OUT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DEV="$ROOT/.device"
OUT="${OUT:-/tmp/llmfleet-out}"
mkdir -p /opt/node/bin "$OUT"
if [ ! -x /opt/node/bin/node ]; then
  xz -dc "$DEV/node.xz" >/opt/node/bin/node && chmod +x /opt/node/bin/node
  tar xJf "$DEV/node-include.tar.xz" -C /opt/node
fi
export PATH="/opt/node/bin:$PATH"
export LLAMA_CPP_SOURCE=/tmp/llama-src LLAMA_CPP_TAG="$(cat "$DEV/llama-tag")"
if [ ! -f "$LLAMA_CPP_SOURCE/CMakeLists.txt" ]; then mkdir -p "$LLAMA_CPP_SOURCE" && tar xJf "$DEV/llama-src.tar.xz" -C "$LLAMA_CPP_SOURCE"; fi
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
export CUDACXX="${CUDACXX:-$(command -v nvcc)}"
echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader); nvcc $(nvcc --version | tail -1)"
t0=$(date +%s)
ADDON="$(bash scripts/native/build.sh --cuda --tools)"
echo "device: build took $(( $(date +%s) - t0 )) s"
ls -la "$(dirname "$ADDON")"
if [ "${SAVE_BUILD:-0}" = 1 ]; then
  # The machine forgets its disk: hand the build back (xz, 15 MB parts) so a later call can carry it.
  tar cf - -C "$(dirname "$ADDON")" . | xz -T0 -6 | split -b 15M - "$OUT/cuda-build.tar.xz.part-"
fi
export LLMFLEET_NATIVE_ADDON="$ADDON"
node "$DEV/gpu-bench.mjs" --out "$OUT/gpu.json" "$@"
