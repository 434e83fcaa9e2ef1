# The llmfleet operator. Build from the repository root:
#   docker build -f images/operator.Dockerfile -t llmfleet/operator:0.1.0 .
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# The operator needs no model runtime: skip node-llama-cpp's native packages.
RUN npm install --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm install --no-save tsx@4

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY crds ./crds
COPY lib ./lib
COPY operator ./operator
USER 65532:65532
ENV NODE_ENV=production
ENTRYPOINT ["node", "--import", "tsx", "operator/main.ts"]
