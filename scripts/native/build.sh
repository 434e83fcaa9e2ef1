#!/usr/bin/env bash
# Builds the engine's native addon (engine/native) with llama.cpp from the source that
# node-llama-cpp bundles (node_modules/node-llama-cpp/llama/gitRelease.bundle), once per source
# hash, into ~/.cache/llmfleet/native/<variant>-<hash>/ (LLMFLEET_CACHE overrides the root).
# Prints the path of llmfleet_native.node on stdout; progress goes to stderr.
#
#   scripts/native/build.sh            CPU build (what CI and `--backend native` on CPU use)
#   scripts/native/build.sh --cuda     CUDA build for sm_90 (H100/H200), needs nvcc (CUDACXX)
#   ... --tools                        also builds llama.cpp's llama-batched-bench and llama-bench
#                                      from the same source (the GPU benchmark's baseline)
#   ... --server                       also builds llama-server from the same source, without its web
#                                      UI (bench:http's baseline)
#   ... --shared                       llama.cpp and ggml as shared libraries beside the addon, so the
#                                      addon, llama-server and the tools share one ggml-cuda build
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VARIANT=cpu
TOOLS=0
SERVER=0
SHARED=0
for arg in "$@"; do
  case "$arg" in
    --cuda) VARIANT=cuda ;;
    --tools) TOOLS=1 ;;
    --server) SERVER=1 ;;
    --shared) SHARED=1 ;;
    *) echo "unknown argument: $arg (expected --cuda, --tools, --server, --shared)" >&2; exit 2 ;;
  esac
done
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/native"
LLAMA_PKG="$ROOT/node_modules/node-llama-cpp/llama"
if [ -n "${LLAMA_CPP_SOURCE:-}" ]; then
  # An unpacked copy of the same source (the GPU machine gets it as a tarball: no node_modules there).
  SRC="$LLAMA_CPP_SOURCE"
  TAG="${LLAMA_CPP_TAG:?set LLAMA_CPP_TAG with LLAMA_CPP_SOURCE}"
else
  [ -f "$LLAMA_PKG/gitRelease.bundle" ] || { echo "node-llama-cpp's llama.cpp source bundle is missing: run npm install" >&2; exit 1; }
  TAG="$(node -p "require('$LLAMA_PKG/llama.cpp.info.json').tag")"
  SRC="$CACHE/llama.cpp-$TAG"
fi
HASH="$( (echo "$TAG $VARIANT $TOOLS $SERVER $SHARED ${CMAKE_CUDA_ARCHITECTURES:-90}"; cat "$ROOT"/engine/native/CMakeLists.txt "$ROOT"/engine/native/src/*) | sha256sum | cut -c1-16)"
OUT="$CACHE/$VARIANT-$HASH"
if [ -f "$OUT/llmfleet_native.node" ] && { [ "$TOOLS" = 0 ] || [ -x "$OUT/llama-batched-bench" ]; } && { [ "$SERVER" = 0 ] || [ -x "$OUT/llama-server" ]; }; then
  echo "$OUT/llmfleet_native.node"
  exit 0
fi
mkdir -p "$CACHE"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  echo "native: unpacking llama.cpp $TAG from node-llama-cpp's bundle" >&2
  rm -rf "$SRC.tmp"
  git clone --quiet "$LLAMA_PKG/gitRelease.bundle" "$SRC.tmp" 2>/dev/null
  mv "$SRC.tmp" "$SRC"
fi
NODE_INCLUDE="$(node -p "require('path').resolve(process.execPath, '../../include/node')")"
[ -f "$NODE_INCLUDE/node_api.h" ] || NODE_INCLUDE=/usr/include/node
[ -f "$NODE_INCLUDE/node_api.h" ] || { echo "node_api.h not found (Node's headers)" >&2; exit 1; }
ADDON_API="$(cd "$ROOT" && node -p "require('node-addon-api').include_dir")"
case "$ADDON_API" in /*) ;; *) ADDON_API="$ROOT/$ADDON_API" ;; esac

# One build tree per variant and checkout, so an edit of the addon recompiles only the addon. CMake
# refuses a build tree configured for another source directory, so two clones (a worktree, CI's clean
# clone) each get their own tree instead of failing on the other's.
BUILD="$CACHE/build-$VARIANT-tools$TOOLS-$(printf %s "$ROOT" | sha256sum | cut -c1-8)"
if [ "$SERVER" = 1 ]; then BUILD="$BUILD-server"; fi
if [ "$SHARED" = 1 ]; then BUILD="$BUILD-shared"; fi
args=(-S "$ROOT/engine/native" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release
  -DLLAMA_SOURCE_DIR="$SRC" -DNODE_INCLUDE_DIR="$NODE_INCLUDE" -DNODE_ADDON_API_DIR="$ADDON_API")
targets=(llmfleet_native)
if [ "$VARIANT" = cuda ]; then
  args+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CMAKE_CUDA_ARCHITECTURES:-90}" -DGGML_NATIVE=OFF)
fi
if [ "$TOOLS" = 1 ] || [ "$SERVER" = 1 ]; then args+=(-DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON); fi
if [ "$TOOLS" = 1 ]; then targets+=(llama-batched-bench llama-bench); fi
if [ "$SERVER" = 1 ]; then
  args+=(-DLLMFLEET_SERVER=ON)
  targets+=(llama-server)
fi
if [ "$SHARED" = 1 ]; then args+=(-DLLMFLEET_SHARED=ON); fi
echo "native: building the $VARIANT addon (${targets[*]}) — a few minutes the first time, cached after" >&2
start=$(date +%s)
cmake "${args[@]}" >"$BUILD.configure.log" 2>&1 || { tail -40 "$BUILD.configure.log" >&2; exit 1; }
cmake --build "$BUILD" --target "${targets[@]}" -j "$(nproc)" >"$BUILD.build.log" 2>&1 || { tail -60 "$BUILD.build.log" >&2; exit 1; }
mkdir -p "$OUT.tmp"
cp "$BUILD/llmfleet_native.node" "$OUT.tmp/"
if [ "$TOOLS" = 1 ]; then cp "$BUILD"/bin/llama-batched-bench "$BUILD"/bin/llama-bench "$OUT.tmp/"; fi
if [ "$SERVER" = 1 ]; then cp "$BUILD"/bin/llama-server "$OUT.tmp/"; fi
# Shared builds: the libraries beside the addon (its RPATH is $ORIGIN; the tools take LD_LIBRARY_PATH).
if [ "$SHARED" = 1 ]; then find "$BUILD" -name 'lib*.so*' -exec cp -P {} "$OUT.tmp/" \; ; fi
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "native: built in $(( $(date +%s) - start )) s → $OUT" >&2
echo "$OUT/llmfleet_native.node"
