# The llmfleet operator: Node, the operator as one esbuild bundle (nothing compiled at start) and the
# one package the bundle leaves external, @pulumi/pulumi. Built by scripts/images/build.sh (npm run
# images:build), which stages the context and passes BASE: Debian minbase + ca-certificates, user 65532.
# The Pulumi node-group provider also needs the pulumi CLI (LLMFLEET_PULUMI_ROOT), the cloud's resource
# plugin and @pulumi/aws or @pulumi/gcp, none of them in this image (docs/images.md: extending it).
ARG BASE
FROM ${BASE}
ARG VERSION
COPY node/bin/node /usr/local/bin/node
# Dependencies first: they change with package-lock.json only, so an edit of the operator
# rebuilds the small layer below.
COPY operator/node_modules /opt/llmfleet/node_modules
COPY operator/package.json /opt/llmfleet/
COPY dist/operator.mjs /opt/llmfleet/operator.mjs
LABEL org.opencontainers.image.title="llmfleet operator" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/llmfleet/llmfleet"
USER 65532:65532
WORKDIR /opt/llmfleet
ENV NODE_ENV=production HOME=/tmp
ENTRYPOINT ["node", "/opt/llmfleet/operator.mjs"]
