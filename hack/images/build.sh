#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds the images from images/*/Dockerfile with BuildKit, on the local Debian base (base.sh) unless
# PYTHON_IMAGE names another, and prints one line per image on stdout:
#   <ref> <image id> <size bytes>
# Usage: hack/images/build.sh [operator|worker|sidecar|vllm-cpu ...]   (default: all four)
# Tags: the Helm chart's defaults (ghcr.io/maestro-llmops/maestro-{operator,worker,sidecar}:0.1.0) and
# localhost/maestro/vllm-cpu:0.32.0. Idempotent: unchanged sources are a cache hit and the same image id.
# Env:
#   PYTHON_IMAGE       base for every stage (default: hack/images/base.sh's localhost/maestro/base:bookworm-<key>)
#   TORCH_INDEX        extra pip index for torch (default none: PyPI's torch 2.13.0, a CUDA build that runs on CPU)
#   MAESTRO_CA_BUNDLE  CA bundle given to pip as a build secret (default /etc/ssl/certs/ca-certificates.crt,
#                      so a TLS-intercepting proxy the host trusts works in the build; never stored in an image)
#   MAESTRO_DOCKER_HOST, MAESTRO_CACHE: see lib.sh
# Build logs: $MAESTRO_CACHE/images/build-<component>.log.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

declare -A refs=(
  [operator]=ghcr.io/maestro-llmops/maestro-operator:0.1.0
  [worker]=ghcr.io/maestro-llmops/maestro-worker:0.1.0
  [sidecar]=ghcr.io/maestro-llmops/maestro-sidecar:0.1.0
  [vllm-cpu]=localhost/maestro/vllm-cpu:0.32.0
)
# worker before vllm-cpu: the second finds the shared torch stage built
order=(operator sidecar worker vllm-cpu)
components=("$@")
((${#components[@]})) || components=("${order[@]}")
for c in "${components[@]}"; do
  [[ -n ${refs[$c]:-} ]] || die "unknown image '$c': choose from ${order[*]}"
done

"$repo_root/hack/images/engine.sh" >/dev/null
base=${PYTHON_IMAGE:-$("$repo_root/hack/images/base.sh")}
mkdir -p "$cache/images"
exec 9>"$cache/images/.build.lock"
flock 9

args=(--network host --progress plain --build-arg "PYTHON_IMAGE=$base")
[[ -n ${TORCH_INDEX:-} ]] && args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
bundle=${MAESTRO_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -r $bundle ]] && args+=(--secret "id=ca-bundle,src=$bundle")

for c in "${components[@]}"; do
  ref=${refs[$c]}
  buildlog=$cache/images/build-$c.log
  start=$SECONDS
  log "building $ref (base $base; log $buildlog)"
  if ! docker build "${args[@]}" -f "$repo_root/images/$c/Dockerfile" -t "$ref" "$repo_root" >"$buildlog" 2>&1; then
    tail -n 25 "$buildlog" >&2
    die "building $ref failed (log above; full log $buildlog)"
  fi
  read -r id size < <(docker image inspect -f '{{.Id}} {{.Size}}' "$ref")
  log "$ref: $((SECONDS - start)) s, $((size / 1000000)) MB"
  echo "$ref $id $size"
done
