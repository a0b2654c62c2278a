#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd, kwok) from the official Go modules into a version-keyed cache outside the repo.
# Idempotent: a complete cache entry is reused; prints the bin directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cache_root=${MAESTRO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/maestro}
key="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_$(cat "$here"/go.sum "$here"/etcd/go.sum "$here"/kwok/go.sum "$here"/cmd/kube/main.go "$here"/etcd/main.go | sha256sum | cut -c1-12)"
bin="$cache_root/kube/$key/bin"
log() { echo "[cluster-build] $*" >&2; }

if [[ -f "$bin/.complete" ]]; then
  echo "$bin"; exit 0
fi
command -v go >/dev/null || { log "go is not installed: install Go >= 1.26 (the module needs go 1.26.0)"; exit 1; }
mkdir -p "$bin"

download() {  # $1 = module dir; fail with the module that could not be fetched
  local dir=$1 out
  log "go mod download in ${dir#"$here"/}"
  if ! out=$(cd "$dir" && go mod download -x all 2>&1); then
    log "could not fetch a module for ${dir#"$here"/}:"
    echo "$out" | grep -E "^go: |reading|not found|invalid version|410|404" | tail -5 >&2
    exit 1
  fi
}
download "$here"; download "$here/etcd"; download "$here/kwok"

major=${KUBE_VERSION#v}; minor=${major#*.}; minor=${minor%%.*}; major=${major%%.*}
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
kv() { local p=$1; echo "-X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"; }
ldflags="-s -w $(kv k8s.io/component-base/version) $(kv k8s.io/client-go/pkg/version)"

t0=$(date +%s)
log "building kube (apiserver, controller-manager, scheduler, kubelet, kube-proxy) $KUBE_VERSION — cold builds take 15-30 min on 2 cores"
(cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$bin/kube" ./cmd/kube)
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do ln -sf kube "$bin/$c"; done
log "building etcd $ETCD_VERSION"
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .)
log "building kwok $KWOK_VERSION"
(cd "$here/kwok" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
"$bin/kube-apiserver" --version >&2
log "built in $(( $(date +%s) - t0 ))s into $bin"
touch "$bin/.complete"
echo "$bin"
