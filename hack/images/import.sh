#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Loads images from Maestro's docker into a containerd's k8s.io namespace (the one the kubelet's CRI
# reads), skipping each image whose docker image id is the one imported last time: the id is kept on
# the containerd image as the label maestro.dev/docker-image-id, so the state lives (and dies) with
# that containerd. The images to load go through one `docker save` stream, so layers they share
# (torch, in the worker and vllm-cpu images) are sent once. Imported images are pinned
# (io.cri-containerd.pinned=pinned): the kubelet's image GC never deletes what cannot be pulled back.
# Usage: hack/images/import.sh --address <containerd socket> --ctr <ctr binary> [ref ...]
#        (default refs: the four images of build.sh)
# stdout, one line per ref: <ref> <image id> imported|unchanged
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

usage="usage: $0 --address <containerd socket> --ctr <ctr binary> [ref ...]"
address='' ctr_bin='' refs=()
while (($#)); do
  case $1 in
    --address) address=${2:?$usage}; shift 2 ;;
    --address=*) address=${1#*=}; shift ;;
    --ctr) ctr_bin=${2:?$usage}; shift 2 ;;
    --ctr=*) ctr_bin=${1#*=}; shift ;;
    -h | --help) echo "$usage" >&2; exit 0 ;;
    -*) die "unknown option $1; $usage" ;;
    *) refs+=("$1"); shift ;;
  esac
done
[[ -n $address && -n $ctr_bin ]] || die "$usage"
[[ -x $ctr_bin ]] || die "no ctr binary at $ctr_bin"
[[ -S ${address#unix://} ]] || die "no containerd socket at $address: start the node's containerd first"
((${#refs[@]})) || refs=(ghcr.io/maestro-llmops/maestro-operator:0.1.0 ghcr.io/maestro-llmops/maestro-sidecar:0.1.0
  ghcr.io/maestro-llmops/maestro-worker:0.1.0 localhost/maestro/vllm-cpu:0.32.0)
label=maestro.dev/docker-image-id

ctr() { "$ctr_bin" --address "${address#unix://}" --namespace k8s.io "$@"; }
"$repo_root/hack/images/engine.sh" >/dev/null
exec 9>"${TMPDIR:-/tmp}/maestro-images-import.$(echo "$address" | sha256sum | cut -c1-12).lock"
flock 9

# ref -> the docker image id recorded on containerd's image (LABELS is the last column of `images ls`)
declare -A have=()
while read -r name _ _ _ _ _ labels; do
  [[ $labels == *"$label="* ]] || continue
  v=${labels#*"$label="}
  have[$name]=${v%%,*}
done < <(ctr images ls 2>/dev/null | tail -n +2 | awk '{print $1, $2, $3, $4, $5, $6, $NF}')

declare -A id=()
todo=()
for ref in "${refs[@]}"; do
  id[$ref]=$(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null) \
    || die "no image $ref in docker ($DOCKER_HOST): build it first (hack/images/build.sh)"
  [[ ${have[$ref]:-} == "${id[$ref]}" ]] || todo+=("$ref")
done

if ((${#todo[@]})); then
  start=$SECONDS
  log "importing ${todo[*]} into $address (k8s.io)"
  opts=()
  # containerd 2.x: drop the layer tarballs once unpacked (a running container needs only the snapshots),
  # which halves the disk an imported image takes; ctr 2.3 allows that only on the client-side (--local)
  # import path, not through the transfer service
  "$ctr_bin" images import --help 2>&1 | grep -q -- --discard-unpacked-layers \
    && opts+=(--local --discard-unpacked-layers)
  # pipefail: a failed save fails the import too
  docker save "${todo[@]}" | ctr images import "${opts[@]}" - >&2 \
    || die "importing into $address failed: is it a containerd that $ctr_bin can talk to (version 1.6+)?"
  for ref in "${todo[@]}"; do
    # the CRI plugin updates a new image's labels right after the import and may overwrite ours: retry
    for ((try = 0; ; try++)); do
      ctr images label "$ref" "$label=${id[$ref]}" io.cri-containerd.pinned=pinned >/dev/null
      sleep 1
      ctr images ls "name==$ref" 2>/dev/null | grep -q -- "$label=${id[$ref]}" && break
      ((try < 10)) || die "could not label $ref in $address"
    done
  done
  log "imported ${#todo[@]} image(s) in $((SECONDS - start)) s"
fi
for ref in "${refs[@]}"; do
  if [[ " ${todo[*]} " == *" $ref "* ]]; then state=imported; else state=unchanged; fi
  echo "$ref ${id[$ref]} $state"
done
