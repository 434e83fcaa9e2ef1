# The llmfleet operator: Node, its production npm dependencies (node-llama-cpp left out) and the
# TypeScript it runs through tsx. Built by scripts/images/build.sh (npm run images:build), which
# stages the context and passes BASE: Debian minbase + ca-certificates, user 65532.
# The Pulumi node-group provider also needs the pulumi CLI (LLMFLEET_PULUMI_ROOT), not in this image.
ARG BASE
FROM ${BASE}
ARG VERSION
COPY node/bin/node /usr/local/bin/node
# Dependencies first: they change with package-lock.json only, so an edit of the operator
# rebuilds the small layers below.
COPY operator/node_modules /opt/llmfleet/node_modules
COPY operator/package.json operator/tsconfig.json /opt/llmfleet/
COPY operator/crds /opt/llmfleet/crds
COPY operator/lib /opt/llmfleet/lib
COPY operator/operator /opt/llmfleet/operator
LABEL org.opencontainers.image.title="llmfleet operator" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/llmfleet/llmfleet"
# Read-only root file system: tsx keeps its compile cache under /tmp (a volume in the chart).
USER 65532:65532
WORKDIR /opt/llmfleet
ENV NODE_ENV=production HOME=/tmp
ENTRYPOINT ["node", "--import", "tsx", "operator/main.ts"]
