#!/usr/bin/env bash
# The identity of what engine/native/build-cuda-image.sh builds from: its recipe, the addon's CMake
# file and sources, and the llama.cpp tag (.device/llama-tag on the device, node-llama-cpp's here).
# bench/gpu/http-device.sh setup-image reuses a carried addon only under the same stamp.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -f .device/llama-tag ]; then tag="$(cat .device/llama-tag)"; else tag="$(node -p "require('./node_modules/node-llama-cpp/llama/llama.cpp.info.json').tag")"; fi
{
  echo "$tag"
  for f in engine/native/build-cuda-image.sh engine/native/CMakeLists.txt $(find engine/native/src -type f | LC_ALL=C sort); do
    echo "$f"
    cat "$f"
  done
} | sha256sum | cut -c1-16
