#!/usr/bin/env bash
# The GPU HTTP benchmark's steps on the device machine (run from the repo root, carrying .device —
# `npm run bench:gpu:pack` fills it here first). One device call may run at most 10 minutes and the
# machine keeps its disk only while it stays warm, so the work is split into steps, each short:
#
#   bash bench/gpu/http-device.sh setup        Node, the llama.cpp source; the CUDA addon, llama-server
#                                              and ggml as shared libraries in one CMake tree (ggml-cuda
#                                              compiles once), or the build carried in .device/cuda-build
#                                              (SAVE_BUILD=1 hands a fresh build back in $OUT as parts);
#                                              the synthetic 7B f16 model written while it builds
#   bash bench/gpu/http-device.sh setup-image  the CUDA addon built by the CUDA image's own recipe
#                                              (engine/native/build-cuda-image.sh: static, sm_90 machine
#                                              code only, x86-64-v3), no llama-server; the model as setup
#                                              writes it (SAVE_BUILD=1 returns the addon in $OUT as xz parts
#                                              named by scripts/native/cuda-image-stamp.sh; kept in
#                                              ~/.cache/llmfleet/device-pack, bench:gpu:pack carries them and a
#                                              later call on the same sources skips the ~150 s build).
#                                              The sections after it serve with that addon
#                                              (the images issue's proof that the image's build serves)
#   bash bench/gpu/http-device.sh SECTION...   bench:http sections (engine, llama-server, inprocess, soak,
#                                              stress, pd, reuse), each merged into $OUT/gpu-http.json;
#                                              extra bench:http flags in BENCH_ARGS. pd (issue 18: P/D over
#                                              the TCP hand-off and over HTTP vs aggregated, 1K/4K prompts,
#                                              1/8/32 streams) and reuse (issue 19: 1K/4K/8K contexts, in-pod,
#                                              via a kvstore pod, the 100-request mix) each start 3-4 engine
#                                              processes on the one GPU; split them over calls with
#                                              BENCH_ARGS="--pd-transports tcp" / "--reuse-contexts 8192"
#                                              if a call would pass 10 minutes
#   bash bench/gpu/http-device.sh rag          bench:rag (issue 26): TTFT of 6 documents in a new order, joined
#                                              from their own KV against computed in place, into $OUT/rag.json.
#                                              bench:rag's device mode (--model): random weights, so TTFT only;
#                                              the corpus from the working tree's files (no git history here),
#                                              cut by the served model's tokenizer. One engine per configuration,
#                                              each with its own copy of the 14.5 GB model on the GPU: full,
#                                              prefix-only and one per recompute fraction, so the fractions are
#                                              RAG_FRACTIONS (default 0,0.5: 4 engines fit 80 GB; 9 would not)
#   bash bench/gpu/http-device.sh transfer     bench:kv-transfer (issue 18): the TCP hand-off alone, GB/s over loopback into a
#                                              decode pod started from the bundle with the CUDA addon (its staging memory
#                                              page-locked, from the host pool), one connection against 2/4/8 (LFKN v2) and
#                                              HTTP, BENCH_STATE_MB (default 512, a 4K prompt's state) into $OUT/kv-transfer.json
#   bash bench/gpu/http-device.sh wire         the wire alone (bench:kv-transfer BENCH_WIRE=1, one process, pool reused):
#                                              128/512 MiB states, 1/4/8 connections, socket buffers 8 MiB and autotuned,
#                                              into $OUT/kv-wire-*.json
#   bash bench/gpu/http-device.sh two-gpu      issue 27, on a two-GPU kind (nvidia-h200-x2 / nvidia-h100-x2) after setup-image:
#                                              bench:http's pd2gpu (P/D with prefill on GPU 0 and decode on GPU 1, over
#                                              TCP and device to device, against aggregated on one GPU; 1K/4K prompts,
#                                              1/8/32 streams) and tp2 (one replica over both GPUs as the operator plans
#                                              gpusPerReplica: 2, layer and row split, against one GPU; a KV cache past
#                                              one GPU's memory) in one call, into $OUT/gpu-http.json (bench/http/two-gpu.ts)
#   bash bench/gpu/http-device.sh sanitize     a short stress run of the engine under compute-sanitizer
#                                              memcheck on the 1B model (finds a bad device access)
#
# $OUT/gpu-http.json is seeded from bench/results/gpu-http.json when RESULTS_IN names one (a later
# call continuing a file an earlier call returned).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DEV="$ROOT/.device"
OUT="${OUT:-/tmp/llmfleet-out}"
BUILT=/tmp/llmfleet-cuda
mkdir -p /opt/node/bin "$OUT"
if [ ! -x /opt/node/bin/node ]; then
  xz -dc "$DEV/node.xz" >/opt/node/bin/node && chmod +x /opt/node/bin/node
  tar xJf "$DEV/node-include.tar.xz" -C /opt/node
fi
export PATH="/opt/node/bin:/usr/local/cuda/bin:$PATH"
MODEL=/tmp/llmfleet-bench-8b.gguf

setup() {
  echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader); nvcc $(nvcc --version | tail -1)"
  node "$DEV/http-bench.mjs" --prepare --preset 8b >"$OUT/model-write.log" 2>&1 &
  local writer=$!
  node "$DEV/http-bench.mjs" --prepare --preset 1b >>"$OUT/model-write.log" 2>&1 &
  local writer1b=$!
  if [ -f "$DEV/cuda-build/llmfleet_native.node" ]; then
    mkdir -p "$BUILT" && cp -a "$DEV/cuda-build/." "$BUILT/"
    echo "device: using the carried CUDA build"
  elif ls "$DEV"/cuda-build.tar.xz.part-* >/dev/null 2>&1; then
    mkdir -p "$BUILT" && cat "$DEV"/cuda-build.tar.xz.part-* | xz -dc | tar xf - -C "$BUILT"
    echo "device: using the carried CUDA build (parts)"
  else
    export LLAMA_CPP_SOURCE=/tmp/llama-src LLAMA_CPP_TAG="$(cat "$DEV/llama-tag")"
    if [ ! -f "$LLAMA_CPP_SOURCE/CMakeLists.txt" ]; then mkdir -p "$LLAMA_CPP_SOURCE" && tar xJf "$DEV/llama-src.tar.xz" -C "$LLAMA_CPP_SOURCE"; fi
    export CUDACXX="${CUDACXX:-$(command -v nvcc)}"
    local t0
    t0=$(date +%s)
    local addon
    addon="$(bash scripts/native/build.sh --cuda --server --shared)"
    echo "device: build took $(( $(date +%s) - t0 )) s"
    rm -rf "$BUILT" && mkdir -p "$BUILT" && cp -a "$(dirname "$addon")/." "$BUILT/"
    if [ "${SAVE_BUILD:-0}" = 1 ]; then
      tar cf - -C "$BUILT" . | xz -T0 -6 | split -b 15M - "$OUT/cuda-build.tar.xz.part-"
    fi
  fi
  ls -la "$BUILT"
  wait "$writer" "$writer1b"
  ls -la /tmp/*.gguf
}

setup_image() {
  echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader); nvcc $(nvcc --version | tail -1)"
  node "$DEV/http-bench.mjs" --prepare --preset 8b >"$OUT/model-write.log" 2>&1 &
  local writer=$!
  local stamp t0
  stamp="$(bash scripts/native/cuda-image-stamp.sh)"
  rm -rf "$BUILT" && mkdir -p "$BUILT"
  if ls "$DEV/cuda-image-addon-$stamp.xz.part-"* >/dev/null 2>&1; then
    # The addon this recipe built from the same sources in an earlier call (SAVE_BUILD=1), carried back.
    cat "$DEV/cuda-image-addon-$stamp.xz.part-"* | xz -dc >"$BUILT/llmfleet_native.node"
    bash engine/native/build-cuda-image.sh --libs "$BUILT"
    echo "device: using the image recipe's addon of these sources ($stamp), built in an earlier call"
  else
    if [ ! -f /tmp/llama-src/CMakeLists.txt ]; then mkdir -p /tmp/llama-src && tar xJf "$DEV/llama-src.tar.xz" -C /tmp/llama-src; fi
    t0=$(date +%s)
    bash engine/native/build-cuda-image.sh "$ROOT/engine/native" /tmp/llama-src /opt/node/include/node "$ROOT/node_modules/node-addon-api" "$BUILT"
    echo "device: the image recipe's build took $(( $(date +%s) - t0 )) s"
    if [ "${SAVE_BUILD:-0}" = 1 ]; then
      xz -T0 -6 -c "$BUILT/llmfleet_native.node" | split -b 15M - "$OUT/cuda-image-addon-$stamp.xz.part-"
      echo "device: the addon is in \$OUT as cuda-image-addon-$stamp.xz.part-*: keep them in ~/.cache/llmfleet/device-pack for the next calls"
    fi
  fi
  ls -la "$BUILT" "$BUILT/lib"
  wait "$writer"
  ls -la /tmp/*.gguf
}

bench() {
  [ -n "${RESULTS_IN:-}" ] && [ -f "$RESULTS_IN" ] && [ ! -f "$OUT/gpu-http.json" ] && cp "$RESULTS_IN" "$OUT/gpu-http.json"
  export LLMFLEET_NATIVE_ADDON="$BUILT/llmfleet_native.node" LD_LIBRARY_PATH="$BUILT:$BUILT/lib"
  local args=()
  for s in "$@"; do args+=(--section "$s"); done
  # shellcheck disable=SC2086
  node "$DEV/http-bench.mjs" "${args[@]}" --model "$MODEL" --engine "$DEV/engine.mjs" --llama-server "$BUILT/llama-server" \
    --out "$OUT/gpu-http.json" ${BENCH_ARGS:-}
}

sanitize() {
  export LLMFLEET_NATIVE_ADDON="$BUILT/llmfleet_native.node" LD_LIBRARY_PATH="$BUILT"
  # shellcheck disable=SC2086
  BENCH_ENGINE_WRAP="compute-sanitizer --tool memcheck --print-limit 20" timeout 240 node "$DEV/http-bench.mjs" --section stress \
    --model /tmp/llmfleet-bench-1b.gguf --engine "$DEV/engine.mjs" --out "$OUT/sanitize.json" \
    --stress-seconds 40 --stress-clients 48 --parallel 32 ${BENCH_ARGS:-} || echo "device: sanitizer run ended with $?"
}

rag() {
  export LLMFLEET_NATIVE_ADDON="$BUILT/llmfleet_native.node" LD_LIBRARY_PATH="$BUILT:$BUILT/lib"
  # shellcheck disable=SC2086
  node "$DEV/rag-bench.mjs" --engine "$DEV/engine.mjs" --model "$MODEL" --engine-args="--gpu-layers all --flash-attention --threads 8" \
    --fractions "${RAG_FRACTIONS:-0,0.5}" --out "$OUT/rag.json" ${BENCH_ARGS:-}
}

transfer() {
  export LLMFLEET_NATIVE_ADDON="$BUILT/llmfleet_native.node" LD_LIBRARY_PATH="$BUILT:$BUILT/lib"
  BENCH_ENGINE="$DEV/engine.mjs" BENCH_OUT="$OUT/kv-transfer.json" BENCH_STATE_MB="${BENCH_STATE_MB:-512}" BENCH_STREAMS="${BENCH_STREAMS:-1,2,4,8}" \
    node "$DEV/kv-transfer-bench.mjs"
}

# The wire alone (bench:kv-transfer BENCH_WIRE=1): states sent, taken and released in one process
# with the CUDA addon (page-locked pool blocks, reused after the first round), 128 and 512 MiB, 1/4/8
# connections, with the socket buffers asked for (8 MiB) and with the kernel's autotuning (0).
wire() {
  export LLMFLEET_NATIVE_ADDON="$BUILT/llmfleet_native.node" LD_LIBRARY_PATH="$BUILT:$BUILT/lib"
  echo "device: net.core.rmem_max $(cat /proc/sys/net/core/rmem_max), wmem_max $(cat /proc/sys/net/core/wmem_max), tcp_rmem $(cat /proc/sys/net/ipv4/tcp_rmem), tcp_wmem $(cat /proc/sys/net/ipv4/tcp_wmem)"
  for mb in 128 512; do
    for buf in 8388608 0; do
      LLMFLEET_KV_SOCKET_BUFFER=$buf BENCH_WIRE=1 BENCH_OUT="$OUT/kv-wire-${mb}mb-buf${buf}.json" BENCH_STATE_MB=$mb BENCH_STREAMS="${BENCH_STREAMS:-1,4,8}" \
        node "$DEV/kv-transfer-bench.mjs" 2>&1 | tail -1 | sed "s/^/device: ${mb} MiB, socket buffer ${buf}: /"
    done
  done
}

case "${1:-}" in
  setup) setup ;;
  setup-image) setup_image ;;
  rag) rag ;;
  transfer) transfer ;;
  wire) wire ;;
  sanitize) sanitize ;;
  two-gpu) BENCH_ARGS="${BENCH_ARGS:---pd-prompt-tokens 1024,4096 --pd-concurrency 1,8,32}" bench pd2gpu tp2 ;;
  "") echo "usage: $0 setup | setup-image | rag | transfer | wire | sanitize | two-gpu | SECTION..." >&2; exit 2 ;;
  *) bench "$@" ;;
esac
