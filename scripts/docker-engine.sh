#!/usr/bin/env bash
# A Docker engine that answers, for ./scripts/run and scripts/test-env.sh:
# installs Debian's docker.io with apt-get when run as root and it is
# missing, starts dockerd when none answers (its pid goes to .ci/dockerd.pid
# so that .ci/run can stop what it started). Never a second dockerd on a
# socket that answers. Exit 0 when an engine answers; otherwise one line on
# stderr with the command that fixes it, and exit 1.
#   usage: scripts/docker-engine.sh [label]   (label prefixes the messages)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say="${1:-docker-engine}"
root=false; [ "$(id -u)" = 0 ] && root=true
if ! command -v dockerd >/dev/null 2>&1; then
  if $root && command -v apt-get >/dev/null; then
    echo "$say: installing docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  elif ! command -v docker >/dev/null 2>&1; then  # a remote DOCKER_HOST needs only the client, and it is missing too
    if command -v apt-get >/dev/null; then
      echo "$say: no Docker engine; fix: sudo apt-get install docker.io (or run this as root)" >&2
    else
      echo "$say: no Docker engine and no apt-get; fix: install Docker (https://docs.docker.com/engine/install/)" >&2
    fi
    exit 1
  fi
fi
if docker info >/dev/null 2>&1; then exit 0; fi
if $root && command -v dockerd >/dev/null; then
  echo "$say: starting dockerd"
  mkdir -p "$ROOT/.ci"
  nohup dockerd >"$ROOT/.ci/dockerd.log" 2>&1 &
  echo $! >"$ROOT/.ci/dockerd.pid"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done
  echo "$say: dockerd did not answer within 30 s; see $ROOT/.ci/dockerd.log" >&2
  exit 1
fi
if [ -S /var/run/docker.sock ]; then
  echo "$say: the Docker engine does not let $(id -un) in; fix: sudo usermod -aG docker $(id -un) (then log in again)" >&2
else
  echo "$say: the Docker engine is not running; fix: sudo systemctl start docker (or run this as root)" >&2
fi
exit 1
