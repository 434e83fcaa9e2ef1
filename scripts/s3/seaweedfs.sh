#!/usr/bin/env bash
# Builds SeaweedFS's `weed` binary (Apache-2.0, a single-binary S3-compatible server) from the Go
# module proxy into a cache outside the repository and prints its path. Idempotent: an existing
# binary is reused. The version is pinned so benchmark numbers refer to one build.
set -euo pipefail
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
DEST="$CACHE/seaweedfs/$SEAWEEDFS_VERSION"
if [ ! -x "$DEST/weed" ]; then
  command -v go >/dev/null || { echo "seaweedfs.sh: needs a Go toolchain (go)" >&2; exit 1; }
  mkdir -p "$DEST.tmp"
  echo "seaweedfs.sh: building weed@$SEAWEEDFS_VERSION (takes minutes on a small machine)" >&2
  start=$(date +%s)
  # `go install weed@version` refuses this module: its go.mod has a replace directive (go-bip39 ->
  # cosmos/go-bip39). So fetch the same module zip from the proxy and build it as the main module,
  # which honours the replace; -mod=readonly keeps go.sum as shipped.
  MOD="github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION"
  SRC=$(go mod download -json "$MOD" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$SRC" ] || { echo "seaweedfs.sh: go mod download $MOD gave no directory" >&2; exit 1; }
  (cd "$SRC" && go build -mod=readonly -trimpath -o "$DEST.tmp/weed" ./weed) >&2
  echo "seaweedfs.sh: built in $(( $(date +%s) - start )) s" >&2
  mkdir -p "$DEST"
  mv "$DEST.tmp/weed" "$DEST/weed"
  rmdir "$DEST.tmp"
fi
echo "$DEST/weed"
