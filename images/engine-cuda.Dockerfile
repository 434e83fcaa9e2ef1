# The llmfleet engine on NVIDIA GPUs (sm_90, H100/H200). node-llama-cpp's prebuilt CUDA binary
# fails on CUDA 13.0 drivers ("PTX compiled with an unsupported toolchain"), so llama.cpp is built
# from the source node-llama-cpp ships (llama/gitRelease.bundle), as ../shared/GPU.md records.
#   docker build -f images/engine-cuda.Dockerfile -t llmfleet/engine:0.1.0-cuda .
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates git cmake build-essential python3 \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y nodejs && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --no-audit --no-fund && npm install --no-save tsx@4
RUN cd node_modules/node-llama-cpp/llama && git clone gitRelease.bundle llama.cpp \
 && cd /app && node -e 'import("node-llama-cpp").then(({getLlama}) => getLlama({gpu: "cuda", build: "forceRebuild", cmakeOptions: {CMAKE_CUDA_ARCHITECTURES: "90"}}))'

FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates python3-pip \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y nodejs && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY engine ./engine
# The router's EndpointSlice discovery (engine/router/endpoint-slices.ts) uses the shared Kubernetes library.
COPY lib ./lib
COPY crds/schema/common.ts ./crds/schema/common.ts
USER 65532:65532
ENV LLMFLEET_CACHE=/var/cache/llmfleet HOME=/tmp
# --backend llama: the engine's default backend (native) compiles its addon on first use, and this
# image has neither the toolchain nor scripts/native; it serves with node-llama-cpp until it ships a
# built addon (LLMFLEET_NATIVE_ADDON). A Model's extraArgs "--backend native" still wins (the last flag does).
ENTRYPOINT ["node", "--import", "tsx", "engine/main.ts", "--backend", "llama"]
