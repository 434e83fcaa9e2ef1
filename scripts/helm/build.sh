#!/usr/bin/env bash
# Builds Helm from its Go module (helm.sh/helm/v3/cmd/helm), cached by version outside the repo.
# Prints the path of the helm binary on stdout; progress goes to stderr.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
BIN="$CACHE/bin/helm-$HELM_VERSION"
if [ ! -x "$BIN/helm" ]; then
  mkdir -p "$BIN"
  echo "[helm-build $(date +%H:%M:%S)] building helm $HELM_VERSION from its Go module (about 2 minutes on 2 cores, once)" >&2
  start=$(date +%s)
  GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "[helm-build $(date +%H:%M:%S)] built helm in $(( $(date +%s) - start ))s" >&2
fi
echo "$BIN/helm"
