#!/usr/bin/env bash
# Debian packages the dev cluster's real node and the tests need, installed when missing
# (idempotent; root, no systemd needed). Image-build packages (docker.io, debootstrap) are
# hack/images' own business.
#   kubectl        the CLI the tests and `make dev` drive the cluster with
#   runc           the OCI runtime containerd's shim calls
#   iptables       kube-proxy's Service rules and the CNI bridge's masquerade
#   busybox-static the shell of the storage provisioner's helper pods (and the node tests)
#   iproute2       the node's address (`ip route get`)
#   redis-server   the shared rate-limit store the guard tests start on loopback
#   chromium       the headless browser the explain heat-map test renders and screenshots in
#   fonts-dejavu-core  the font it lays that page out with (a fresh image may have none)
#   postgresql     the review console's PostgreSQL store tests (tests/pgserver.py runs initdb + postgres)
set -euo pipefail
declare -A need=([kubectl]=kubectl [runc]=runc [iptables]=iptables [busybox]=busybox-static [ip]=iproute2 [redis-server]=redis-server [chromium]=chromium [fonts]=fonts-dejavu-core [postgres]=postgresql)
missing=()
for tool in "${!need[@]}"; do
  if [[ $tool == busybox ]]; then
    # the dynamic busybox cannot run in an image without libc: it must be the static build
    # (ldd exits 1 on a static binary: read its words, not its status, under pipefail)
    [[ -x /bin/busybox && $(ldd /bin/busybox 2>&1 || true) == *"not a dynamic"* ]] && continue
  elif [[ $tool == fonts ]]; then
    [[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] && continue
  elif [[ $tool == postgres ]]; then
    # Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null && continue
  elif command -v "$tool" >/dev/null 2>&1; then
    continue
  fi
  missing+=("${need[$tool]}")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) != 0 ]]; then
  echo "[host-deps] missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "[host-deps] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq "${missing[@]}" >&2
