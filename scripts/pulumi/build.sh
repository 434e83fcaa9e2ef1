#!/usr/bin/env bash
# Builds the Pulumi CLI used by the `pulumi` node group provider's tests, from Go modules:
# github.com/pulumi/pulumi/pkg/v3 and sdk/v3 at the same version, cmd/pulumi.
# The Node.js language host is not built: inline Automation API programs are served by the
# language host inside the Node process (the CLI is run with --client), see docs/nodegroups.md.
# Dynamic providers need `pulumi-resource-pulumi-nodejs` on PATH: ours is
# scripts/pulumi/pulumi-resource-pulumi-nodejs (a shim into the installed @pulumi/pulumi).
# The binary is cached outside the repo, keyed by version, so only the first run builds.
# Prints the install root: `pulumi` is in its bin/ (the layout PulumiCommand.get({root}) expects).
set -euo pipefail

PULUMI_VERSION="${PULUMI_VERSION:-v3.258.0}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
BIN="$CACHE/bin/pulumi-$PULUMI_VERSION"
WORK="$CACHE/build/pulumi-$PULUMI_VERSION"

log() { printf '[pulumi-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$BIN/bin/pulumi" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$BIN/bin" "$WORK"
if command -v flock >/dev/null; then
  exec 9>"$CACHE/pulumi-build.lock"
  flock 9
  if [ -x "$BIN/bin/pulumi" ]; then echo "$BIN"; exit 0; fi
fi
export GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0
start=$(date +%s)

# pkg/v3's own go.mod replaces clipboard with a fork; replace directives of a dependency are
# not applied to us, so repeat it (pkg's code needs the fork's API).
cat >"$WORK/go.mod" <<MOD
module llmfleet.dev/pulumi

go 1.25.11

require (
	github.com/pulumi/pulumi/pkg/v3 $PULUMI_VERSION
	github.com/pulumi/pulumi/sdk/v3 $PULUMI_VERSION
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
MOD
cat >"$WORK/tools.go" <<'GO'
//go:build llmfleet_tools

// Package tools pins the command this module builds.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
GO
log "go mod tidy (downloads the module graph of pulumi $PULUMI_VERSION)"
(cd "$WORK" && go mod tidy)
log "building pulumi $PULUMI_VERSION (the first build takes many minutes on 2 cores)"
(cd "$WORK" && go build -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
  -o "$BIN/bin/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
mv "$BIN/bin/pulumi.tmp" "$BIN/bin/pulumi"
log "pulumi ready in $BIN ($(($(date +%s) - start))s)"
echo "$BIN"
