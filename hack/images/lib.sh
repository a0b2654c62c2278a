# shellcheck shell=bash disable=SC2034  # variables for the scripts that source this file
# Shared by hack/images/*.sh (sourced, not run). Paths and the docker client for Maestro's own dockerd.
# Environment:
#   MAESTRO_CACHE        cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/maestro)
#   MAESTRO_DOCKER_HOST  use this docker daemon instead of starting Maestro's own (e.g. unix:///var/run/docker.sock)
#   DOCKER               docker client binary (default: Debian's /usr/bin/docker, which drives the built-in BuildKit)

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${MAESTRO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/maestro}
docker_run_dir=/run/maestro/docker
docker_sock=$docker_run_dir/docker.sock
docker_data=${MAESTRO_DOCKER_ROOT:-$cache/docker}
docker_log=$cache/dockerd.log
export DOCKER_HOST=${MAESTRO_DOCKER_HOST:-unix://$docker_sock}
# A newer CLI elsewhere on PATH (e.g. /usr/local/bin/docker 28) needs the buildx plugin for BuildKit;
# Debian's 20.10 client talks to the daemon's built-in BuildKit directly.
export DOCKER_BUILDKIT=1

log() { echo "[images] $*" >&2; }
die() { echo "[images] error: $*" >&2; exit 1; }
# Resolved at each call: engine.sh may install docker.io after this file was sourced. `type -P` finds
# only files, never this function (a bare `docker` here would call itself until bash overflows).
docker_client() {
  if [[ -n ${DOCKER:-} ]]; then echo "$DOCKER"
  elif [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker
  else type -P docker || echo /nonexistent/docker
  fi
}
docker() { "$(docker_client)" "$@"; }
