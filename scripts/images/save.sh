#!/usr/bin/env bash
# Writes the images scripts/images/build.sh tagged as OCI archives (one per image) for
# `kind load image-archive`, `k3d image import`, `ctr images import` or `skopeo copy` to a registry:
#   dist/images/llmfleet-operator-<version>.oci.tar, llmfleet-engine-<version>.oci.tar,
#   llmfleet-engine-<version>-cuda.oci.tar (when built)
# Each archive's index names its image (org.opencontainers.image.ref.name / the full reference),
# so an import gives it exactly the reference the chart's values use.
#   scripts/images/save.sh [output folder]     (npm run images:save)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$ROOT/scripts/images/pins.sh"
OUT="${1:-$ROOT/dist/images}"
mkdir -p "$OUT"
saved=0
for image in "operator:$IMAGE_VERSION" "engine:$IMAGE_VERSION" "engine:$IMAGE_VERSION-cuda"; do
  ref="$IMAGE_REGISTRY/$image"
  if ! podman image exists "$ref"; then
    [ "$image" = "engine:$IMAGE_VERSION-cuda" ] && continue
    echo "images: $ref is not built: run npm run images:build (or images:build:cpu)" >&2
    exit 1
  fi
  file="$OUT/llmfleet-${image/:/-}.oci.tar"
  rm -f "$file"
  # oci-archive keeps the layers compressed as they will be pushed; the reference goes in the index.
  skopeo copy --quiet "containers-storage:$ref" "oci-archive:$file:$ref"
  echo "images: $file ($(du -h "$file" | cut -f1)) ← $ref" >&2
  saved=$((saved + 1))
done
echo "images: $saved archives in $OUT" >&2
