#!/usr/bin/env bash
# Builds Prometheus (server + promtool) for the tests that scrape a running deployment the way the
# chart configures it: Kubernetes service discovery. Debian's `prometheus` package leaves that
# discovery out, so the server comes from the Go module proxy, pinned by go.mod/go.sum here, with
# only the Kubernetes, file and HTTP discovery plugins (Prometheus' own remove_all_sd build tags).
# Idempotent, version-keyed cache outside the repo; prints the bin directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
version=$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3}' "$here/go.mod")
cache_root=${MAESTRO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/maestro}
tags="remove_all_sd enable_kubernetes_sd"
# the key: what goes into the binaries (pinned modules, build tags), not this script's comments
sums=$( (echo "$tags"; cat "$here/go.sum") | sha256sum | cut -c1-12)
bin="$cache_root/prometheus/prometheus-${version}_${sums}/bin"
log() { echo "[prometheus-build] $*" >&2; }

if [[ -f "$bin/.complete" ]]; then
  echo "$bin"; exit 0
fi
# tests ask where a cached build is without starting a 10-minute build from inside a test
[[ -n ${MAESTRO_PROMETHEUS_NO_BUILD:-} ]] && { log "not built yet: run make prometheus-build"; exit 3; }
command -v go >/dev/null || { log "go is not installed: install Go >= 1.26"; exit 1; }
mkdir -p "$bin"
t0=$(date +%s)
pkg=github.com/prometheus/prometheus
ldflags="-s -w -X github.com/prometheus/common/version.Version=${version#v} -X github.com/prometheus/common/version.Revision=maestro"
for cmd in prometheus promtool; do
  log "building $cmd $version"
  if ! (cd "$here" && go build -trimpath -tags "$tags" -ldflags "$ldflags" \
    -o "$bin/$cmd" "$pkg/cmd/$cmd"); then
    log "could not build $cmd from $pkg (module hack/prometheus/go.mod): see the go output above"
    exit 1
  fi
done
touch "$bin/.complete"
log "built in $(($(date +%s) - t0)) s into $bin"
echo "$bin"
