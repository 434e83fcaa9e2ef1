# The llmfleet engine on NVIDIA GPUs: the CPU engine's contents plus the native addon built with
# CUDA for sm_90 (H100/H200) as machine code only (90-real, no PTX: the lent GPU's driver is CUDA
# 13.0 and newer PTX fails to load there), and the CUDA runtime and cuBLAS it links. Built by
# scripts/images/build.sh --cuda (npm run images:build:cuda), which stages in the context
# cuda/nvidia/cu13: nvcc, cudart, cuBLAS, CCCL and the headers from PyPI's nvidia-* wheels at CUDA
# 13.0 (scripts/images/pins.sh). The driver (libcuda.so.1) comes from the node, as the NVIDIA
# container toolkit mounts it; nothing here needs a GPU to build.
ARG BUILDER
ARG RUNTIME

# The toolchain alone (build.sh --cuda-toolchain builds only this stage: the wheels and nvcc, in
# seconds, without compiling kernels).
FROM ${BUILDER} AS toolchain
USER 0:0
COPY cuda/nvidia/cu13 /usr/local/cuda
# The wheels ship versioned libraries only, in the layout nvcc.profile expects under targets/, and
# no driver stub: the link-time names, a targets/ view, and a placeholder libcuda.so that the
# stub step below replaces with the driver symbols ggml-cuda really calls.
RUN cd /usr/local/cuda && ln -s lib lib64 && for l in cudart cublas cublasLt; do ln -s "lib$l.so.13" "lib/lib$l.so"; done \
 && mkdir -p targets/x86_64-linux lib/stubs && ln -s ../../include targets/x86_64-linux/include && ln -s ../../lib targets/x86_64-linux/lib \
 && echo 'void llmfleet_cuda_stub(void) {}' >/tmp/stub.c && gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o lib/stubs/libcuda.so /tmp/stub.c \
 && /usr/local/cuda/bin/nvcc --version
ENV PATH=/usr/local/cuda/bin:/usr/local/bin:/usr/bin:/bin CUDACXX=/usr/local/cuda/bin/nvcc

FROM toolchain AS addon
ARG CUDA_ARCH=90
COPY node/include/node /opt/node/include/node
COPY node-addon-api /opt/node-addon-api
COPY llama.cpp /src/llama.cpp
COPY native /src/native
# The recipe is engine/native/build-cuda-image.sh, so a GPU machine can run the same one
# (bench/gpu/http-device.sh setup-image); here it links a libcuda stub (no driver at build time).
RUN LIBCUDA_STUB=1 CUDA_ARCH="${CUDA_ARCH}" bash /src/native/build-cuda-image.sh /src/native /src/llama.cpp /opt/node/include/node /opt/node-addon-api /out

FROM ${RUNTIME}
ARG VERSION
COPY node/bin/node /usr/local/bin/node
# The CUDA libraries first: 600 MB that change only with the CUDA pins.
COPY --from=addon /out/lib /opt/llmfleet/lib
COPY --from=addon /out/llmfleet_native.node /opt/llmfleet/llmfleet_native.node
COPY --chown=65532:65532 empty /var/cache/llmfleet
COPY dist/engine.mjs dist/codec-worker.mjs /opt/llmfleet/
LABEL org.opencontainers.image.title="llmfleet engine (CUDA 13.0, sm_90)" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/llmfleet/llmfleet"
USER 65532:65532
WORKDIR /tmp
ENV LLMFLEET_NATIVE_ADDON=/opt/llmfleet/llmfleet_native.node LLMFLEET_CACHE=/var/cache/llmfleet HOME=/tmp \
    LD_LIBRARY_PATH=/opt/llmfleet/lib NODE_ENV=production \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 8000
ENTRYPOINT ["node", "/opt/llmfleet/engine.mjs"]
