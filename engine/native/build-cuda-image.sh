#!/usr/bin/env bash
# The CUDA engine image's addon recipe (images/engine-cuda.Dockerfile runs it), kept in one file so
# the same recipe can be run on a GPU machine to prove what the image ships (bench/gpu/http-device.sh
# setup-image): a static addon with ggml-cuda for one architecture as machine code only (no PTX:
# the lent GPU's driver is CUDA 13.0 and newer PTX fails to load there), portable x86-64-v3 CPU
# code (GGML_NATIVE=OFF), stripped, with the CUDA runtime and cuBLAS it links copied beside it.
#
#   build-cuda-image.sh NATIVE_DIR LLAMA_SOURCE NODE_INCLUDE_DIR NODE_ADDON_API_DIR OUT
#
# OUT gets llmfleet_native.node and lib/ (libcudart, libcublas, libcublasLt). CUDA_ARCH (default 90)
# picks the architecture; CUDA_ROOT (default /usr/local/cuda) the toolkit. LIBCUDA_STUB=1 (the image
# build, which has no driver) links against a libcuda.so stub made from the driver symbols
# ggml-cuda calls; a machine with the driver links against the toolkit's own stub.
#
#   build-cuda-image.sh --libs OUT    only the libraries into OUT/lib (beside an addon built before)
set -euo pipefail
CUDA="${CUDA_ROOT:-/usr/local/cuda}"

# The CUDA runtime and cuBLAS the addon links, from the toolkit into $1/lib.
copy_libs() {
  mkdir -p "$1/lib"
  local dirs=() d l f
  for d in "$CUDA/lib" "$CUDA/lib64"; do [ -d "$d" ] && dirs+=("$d"); done
  for l in cudart cublas cublasLt; do
    f="$(find -L "${dirs[@]}" -maxdepth 1 -name "lib$l.so.[0-9]*" | sort | head -1)"
    [ -n "$f" ] || { echo "build-cuda-image.sh: lib$l.so not found under $CUDA" >&2; exit 1; }
    cp -L "$f" "$1/lib/$(basename "$f" | sed -E 's/^(lib[a-zA-Z]+\.so\.[0-9]+).*/\1/')"
  done
}
if [ "${1:-}" = --libs ] && [ $# -eq 2 ]; then
  copy_libs "$2"
  exit 0
fi
[ $# -eq 5 ] || { echo "usage: $0 NATIVE_DIR LLAMA_SOURCE NODE_INCLUDE_DIR NODE_ADDON_API_DIR OUT | --libs OUT" >&2; exit 2; }
NATIVE="$1" LLAMA="$2" NODE_INC="$3" NAPI="$4" OUT="$5"
ARCH="${CUDA_ARCH:-90}"
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT
cmake -S "$NATIVE" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_SOURCE_DIR="$LLAMA" \
  -DNODE_INCLUDE_DIR="$NODE_INC" -DNODE_ADDON_API_DIR="$NAPI" \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${ARCH}-real" -DCUDAToolkit_ROOT="$CUDA" \
  -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON >"$BUILD/configure.log" \
  || { tail -40 "$BUILD/configure.log" >&2; exit 1; }
cmake --build "$BUILD" --target ggml-cuda -j"$(nproc)" >"$BUILD/build.log" || { tail -40 "$BUILD/build.log" >&2; exit 1; }
if [ "${LIBCUDA_STUB:-0}" = 1 ]; then
  nm -u "$(find "$BUILD" -name 'libggml-cuda.a')" | awk '$2 ~ /^cu[A-Z]/ { print "void " $2 "(void) {}" }' | sort -u >"$BUILD/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$BUILD/stub.c"
fi
cmake --build "$BUILD" --target llmfleet_native -j"$(nproc)" >>"$BUILD/build.log" || { tail -40 "$BUILD/build.log" >&2; exit 1; }
mkdir -p "$OUT"
strip --strip-unneeded -o "$OUT/llmfleet_native.node" "$BUILD/llmfleet_native.node"
copy_libs "$OUT"
echo "$OUT/llmfleet_native.node"
