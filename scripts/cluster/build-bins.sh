#!/usr/bin/env bash
# Builds the real control plane used by tests and `npm run cluster:up`, from Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from k8s.io/kubernetes
# (staging modules replaced by their matching v0.x releases, the scheduler-plugins pattern),
# etcd from go.etcd.io/etcd/server/v3, kwok from sigs.k8s.io/kwok.
# Binaries are cached outside the repo, keyed by version, so only the first run builds.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
BIN="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
WORK="$CACHE/build"
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { printf '[cluster-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

all_present() {
  for b in "${K8S_BINS[@]}" etcd kwok; do [ -x "$BIN/$b" ] || return 1; done
  [ -s "$BIN/kwok-stages.yaml" ]
}

if all_present; then echo "$BIN"; exit 0; fi
mkdir -p "$BIN" "$WORK"
# One build at a time (a test run and `cluster:up` may race): the second waits, then finds
# everything built. flock is Linux-only; elsewhere we just build.
if command -v flock >/dev/null; then
  exec 9>"$CACHE/build.lock"
  flock 9
  if all_present; then echo "$BIN"; exit 0; fi
fi
export GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0
start=$(date +%s)

build_kubernetes() {
  local dir="$WORK/kubernetes-$K8S_VERSION" staging="v0.${K8S_VERSION#v1.}"
  mkdir -p "$dir"
  log "resolving k8s.io/kubernetes $K8S_VERSION (staging modules at $staging)"
  local modfile
  modfile=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module llmfleet.dev/controlplane"
    echo
    echo "go $(sed -n 's/^go //p' "$modfile")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$modfile"
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

// Package tools pins the control-plane commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$dir" && log "go mod tidy (downloads the module graph)" && go mod tidy)
  for b in "${K8S_BINS[@]}"; do
    [ -x "$BIN/$b" ] && continue
    log "building $b (the first build of each takes minutes on 2 cores)"
    (cd "$dir" && go build -tags tools -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#v1.}" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$BIN/$b.tmp" "$BIN/$b"
    log "built $b"
  done
}

build_etcd() {
  [ -x "$BIN/etcd" ] && return 0
  local dir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  log "building etcd $ETCD_VERSION"
  cat >"$dir/go.mod" <<MOD
module llmfleet.dev/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$dir" && go mod tidy && go build -tags tools -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  log "built etcd"
}

build_kwok() {
  [ -x "$BIN/kwok" ] && return 0
  log "building kwok $KWOK_VERSION"
  GOBIN="$WORK/kwok-$KWOK_VERSION" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mv "$WORK/kwok-$KWOK_VERSION/kwok" "$BIN/kwok"
  log "built kwok"
}

# kwok alone starts with no Stage objects (only kwokctl embeds defaults), so nodes would never
# become Ready nor pods Running. Ship the same defaults kwokctl uses, from kwok's own module:
# node-initialize, node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete.
build_kwok_stages() {
  [ -s "$BIN/kwok-stages.yaml" ] && return 0
  local src
  src=$(cd "$WORK" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  local stages=(node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete)
  for s in "${stages[@]}"; do
    echo "---"
    cat "$src/kustomize/stage/$s.yaml"
  done >"$BIN/kwok-stages.yaml.tmp"
  mv "$BIN/kwok-stages.yaml.tmp" "$BIN/kwok-stages.yaml"
  log "wrote kwok default stages"
}

build_etcd
build_kwok
build_kwok_stages
build_kubernetes
log "control plane ready in $BIN ($(( $(date +%s) - start ))s)"
echo "$BIN"
