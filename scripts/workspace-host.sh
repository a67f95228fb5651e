#!/usr/bin/env bash
# What ./scripts/run prepares for workspaces before the server starts: a
# Docker engine (scripts/docker-engine.sh, shared with scripts/test-env.sh)
# and WORKSPACE_IMAGE, the full IDE image, built offline by
# workspace-image/build-offline.sh (cached: an up-to-date image costs under a
# second, which the script waits for). A build that is needed runs BEHIND the server, detached (setsid),
# so that the server answers at once; it says how it goes in
# $WORKSPACE_IMAGE_BUILD_DIR/status/<image>.json, which the server reads
# (services/workspaces/image_build.py): a student's Create meanwhile shows
# the build's progress and goes on when the image is there. On a machine
# without Docker, root or apt this prints one line per missing part with the
# command that fixes it, and returns 0: the server starts anyway.
#   usage: scripts/workspace-host.sh IMAGE
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="$1"
CACHE="${WORKSPACE_IMAGE_BUILD_DIR:-/var/cache/apranova-build}"
SAFE="$(echo "$IMAGE" | sed 's/[^A-Za-z0-9_.-]/_/g')"
STATUS="$CACHE/status/$SAFE.json" LOG="$CACHE/status/$SAFE.log" TOOK="$CACHE/status/$SAFE.seconds"
PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3
root=false; [ "$(id -u)" = 0 ] && root=true
say() { echo "run: $*" >&2; }

case "$IMAGE" in
  apranova/workspace:*|apranova/workspace) ;;  # ours to build; any other image is pulled (WORKSPACE_PULL_POLICY)
  *) exec bash "$ROOT/scripts/docker-engine.sh" run ;;
esac

building() {  # a build of IMAGE under way (another ./scripts/run's, or one left from an earlier run)
  local pid
  pid="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("pid", ""))' "$STATUS" 2>/dev/null)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

build_job() {  # runs detached: the engine when it had to be installed, then the image
  started=$(date +%s)
  printf '{"image": "%s", "pid": %d, "started": %d, "estimate_seconds": %d, "log": "%s"}\n' \
    "$IMAGE" "$BASHPID" "$started" "$ESTIMATE" "$LOG" >"$STATUS"
  if ! docker info >/dev/null 2>&1 && ! bash "$ROOT/scripts/docker-engine.sh" run; then
    printf '{"image": "%s", "failed": true, "log": "%s"}\n' "$IMAGE" "$LOG" >"$STATUS"
    return 1
  fi
  # Idempotent: an up-to-date image (its label holds the build's hash) is done in under a second.
  if BUILD_PYTHON="$PY" APRANOVA_BUILD_CACHE="$CACHE" bash "$ROOT/workspace-image/build-offline.sh" "$IMAGE"; then
    [ $(( $(date +%s) - started )) -gt 5 ] && echo $(( $(date +%s) - started )) >"$TOOK"
    rm -f "$STATUS"
  else
    printf '{"image": "%s", "failed": true, "log": "%s"}\n' "$IMAGE" "$LOG" >"$STATUS"
    say "building the IDE image $IMAGE failed; see $LOG; fix what it says, then ./scripts/run again"
  fi
}

start_build() {
  if building; then say "the IDE image $IMAGE is being built (log: $LOG)"; return; fi
  mkdir -p "$CACHE/status"
  # An estimate for the students' progress: the last build here, else a cold
  # build of the full image on 2 cores (the slim one's cache cuts it to minutes).
  ESTIMATE=1200
  if [ -f "$TOOK" ]; then ESTIMATE="$(cat "$TOOK")"
  elif ls "$CACHE"/code-server/*.tar.gz >/dev/null 2>&1; then ESTIMATE=420; fi
  export -f build_job say; export ROOT IMAGE CACHE STATUS LOG TOOK PY ESTIMATE
  setsid nohup bash -c build_job >"$LOG" 2>&1 </dev/null &
  local job=$!
  for _ in $(seq 1 15); do kill -0 "$job" 2>/dev/null || return 0; sleep 0.1; done  # up to date: done at once
  say "building the IDE image $IMAGE behind the server (about $((ESTIMATE / 60)) min the first time; log: $LOG)"
}

if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1 && $root && command -v apt-get >/dev/null; then
  # A cold machine: installing the engine takes longer than the server may
  # wait; it goes behind the server with the build (Create answers 503 until it answers).
  start_build
  for _ in $(seq 1 20); do docker info >/dev/null 2>&1 && break; sleep 1; done
  exit 0
fi
bash "$ROOT/scripts/docker-engine.sh" run || exit 0  # it said what is missing and how to fix it
if $root; then
  start_build
# Not root: the build script answers at once whether the image is up to date
# (and refuses to build without root).
elif ! APRANOVA_BUILD_CACHE="$CACHE" bash "$ROOT/workspace-image/build-offline.sh" "$IMAGE" >/dev/null 2>&1; then
  say "the IDE image $IMAGE is not built; fix: sudo $ROOT/workspace-image/build-offline.sh $IMAGE (or sudo ./scripts/run)"
fi
exit 0
