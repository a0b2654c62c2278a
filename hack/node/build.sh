#!/usr/bin/env bash
# Builds the dev cluster's real node, apart from the kubelet and kube-proxy (those are in
# hack/kube's multi-call binary): containerd 2.x with its runc shim and ctr, the CNI reference
# plugins, CoreDNS, local-path-provisioner (dynamic hostPath volumes, as in kind), crictl and the
# pause program. Everything comes from the Go module proxy (each
# pinned by its own go.mod/go.sum here) or, for pause, from the kubelet module's own pause.c.
# runc itself is Debian's (`apt-get install runc`).
# Idempotent, version-keyed cache outside the repo; prints the bin directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=../kube/versions.env
source "$here/../kube/versions.env"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cache_root=${MAESTRO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/maestro}
sums=$(cat "$0" "$here"/versions.env "$here"/*/go.sum | sha256sum | cut -c1-12)
key="node-containerd-${CONTAINERD_VERSION}_cni-${CNI_PLUGINS_VERSION}_coredns-${COREDNS_VERSION}_${sums}"
bin="$cache_root/node/$key/bin"
log() { echo "[node-build] $*" >&2; }

if [[ -f "$bin/.complete" ]]; then
  echo "$bin"; exit 0
fi
command -v go >/dev/null || { log "go is not installed: install Go >= 1.26"; exit 1; }
command -v gcc >/dev/null || { log "gcc is not installed (needed for the static pause binary): apt-get install gcc libc6-dev"; exit 1; }
mkdir -p "$bin"
t0=$(date +%s)

build() {  # $1 = module dir, $2 = output name, $3 = package, $4.. = extra go build flags
  local dir=$1 out=$2 pkg=$3; shift 3
  log "building $out ($pkg)"
  if ! (cd "$here/$dir" && go build -trimpath "$@" -o "$bin/$out" "$pkg"); then
    log "could not build $out from $pkg (module $dir/go.mod): see the go output above"
    exit 1
  fi
}

ctrd=github.com/containerd/containerd/v2
cver="-s -w -X $ctrd/version.Version=$CONTAINERD_VERSION -X $ctrd/version.Revision=maestro"
for c in containerd containerd-shim-runc-v2 ctr; do
  build containerd "$c" "$ctrd/cmd/$c" -tags "no_btrfs no_zfs no_devmapper" -ldflags "$cver"
done
cni=github.com/containernetworking/plugins
mkdir -p "$bin/cni"
for p in ipam/host-local main/bridge main/loopback meta/portmap; do
  build cni "cni/${p#*/}" "$cni/plugins/$p" \
    -ldflags "-s -w -X $cni/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION"
done
build coredns coredns github.com/coredns/coredns -ldflags "-s -w"
build storage local-path-provisioner github.com/rancher/local-path-provisioner -ldflags "-s -w -X main.VERSION=$LOCAL_PATH_VERSION"
build crictl crictl sigs.k8s.io/cri-tools/cmd/crictl \
  -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"

# pause: the kubelet module's own source, static, as upstream builds it.
pause_c="$(cd "$here/../kube" && go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION/build/pause/linux/pause.c"
[[ -f "$pause_c" ]] || (cd "$here/../kube" && go mod download k8s.io/kubernetes)
log "building pause $PAUSE_VERSION from $pause_c"
gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-maestro" -o "$bin/pause" "$pause_c"
strip "$bin/pause"

"$bin/containerd" --version >&2
log "built in $(( $(date +%s) - t0 ))s into $bin"
touch "$bin/.complete"
echo "$bin"
