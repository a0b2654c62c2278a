#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Makes sure a docker daemon for image builds is installed and running; prints its DOCKER_HOST.
# Installs Debian's docker.io and debootstrap when absent (needs root), then starts Maestro's own
# dockerd by hand (no systemd) on its own socket, exec-root and data-root, so it collides neither with
# a system docker nor with the node's containerd (/run/maestro/containerd). Its managed containerd
# listens under the exec-root ($docker_run_dir/exec/containerd/containerd.sock).
# dockerd runs with --iptables=false --ip-masq=false --bridge=none: the same host runs a kubelet,
# kube-proxy and a CNI bridge, and docker's FORWARD-DROP rules would cut pod traffic. Builds and
# test runs therefore use --network host.
# Idempotent. Env: MAESTRO_DOCKER_HOST (use that daemon, start nothing), MAESTRO_CACHE, MAESTRO_DOCKER_ROOT.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

install_missing() {
  local want=()
  command -v dockerd >/dev/null || want+=(docker.io)
  command -v debootstrap >/dev/null || want+=(debootstrap)
  command -v runc >/dev/null || want+=(runc)
  ((${#want[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing ${want[*]}: run 'sudo apt-get install -y ${want[*]}' (or rerun as root)"
  log "installing ${want[*]} (apt-get)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
}

alive() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_dockerd() {
  [[ $(id -u) == 0 ]] || die "dockerd is not running at $DOCKER_HOST and starting it needs root: rerun as root or set MAESTRO_DOCKER_HOST"
  mkdir -p "$docker_run_dir" "$docker_data" "$(dirname "$docker_log")"
  # a stale pidfile from a killed daemon blocks the next start
  local pidfile=$docker_run_dir/docker.pid
  if [[ -f $pidfile ]] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
  echo '{}' > "$docker_run_dir/daemon.json"
  log "starting dockerd (socket $docker_sock, data $docker_data, log $docker_log)"
  # setsid: the daemon outlives this script and the make that ran it
  setsid dockerd \
    --config-file "$docker_run_dir/daemon.json" \
    --host "unix://$docker_sock" \
    --exec-root "$docker_run_dir/exec" \
    --pidfile "$pidfile" \
    --data-root "$docker_data" \
    --iptables=false --ip-masq=false --bridge=none \
    --userland-proxy=false \
    >>"$docker_log" 2>&1 < /dev/null &
  local i
  for ((i = 0; i < 60; i++)); do
    alive && return 0
    kill -0 $! 2>/dev/null || die "dockerd exited at start: see $docker_log"
    sleep 1
  done
  die "dockerd did not answer on $docker_sock within 60 s: see $docker_log"
}

install_missing
if ! alive; then
  [[ -n ${MAESTRO_DOCKER_HOST:-} ]] && die "no docker daemon answers at MAESTRO_DOCKER_HOST=$MAESTRO_DOCKER_HOST"
  start_dockerd
fi
echo "$DOCKER_HOST"
