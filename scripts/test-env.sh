#!/usr/bin/env bash
# What the tests need outside Python: a Docker engine (scripts/docker-engine.sh,
# shared with ./scripts/run) with the local workspace images (the busybox
# stand-in, the slim real code-server, and the full image ./scripts/run
# builds), Debian's Chromium, docker-registry and nginx. Installs with apt-get
# when run as root and something is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
need=()
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)  # the README's curl examples are run by a test
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)  # a local registry for the image-pull tests
# the two-node test swarm (tests/support/swarm_env.py): namespaces, veths, nsenter/unshare, the iptables check
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables-save >/dev/null 2>&1 || need+=(iptables)
{ command -v nsenter && command -v unshare; } >/dev/null 2>&1 || need+=(util-linux)
[ -x /usr/sbin/nginx ] || need+=(nginx)  # the TLS front recipe (deploy/nginx/), run by tests/test_proxy_nginx.py
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test-env: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [[ " ${need[*]} " == *" docker-registry "* ]]; then
      # Where init lets it, the package starts a registry service on :5000; the tests run their own.
      if [ -d /run/systemd/system ]; then systemctl disable --now docker-registry >/dev/null 2>&1 || true
      elif [ -x /etc/init.d/docker-registry ]; then /etc/init.d/docker-registry stop >/dev/null 2>&1 || true; fi
    fi
    if [[ " ${need[*]} " == *" nginx "* ]]; then
      # The package may start nginx on :80; the tests run their own, on loopback ports of their own.
      if [ -d /run/systemd/system ]; then systemctl disable --now nginx >/dev/null 2>&1 || true
      elif [ -x /etc/init.d/nginx ]; then /etc/init.d/nginx stop >/dev/null 2>&1 || true; fi
    fi
  else
    echo "test-env: missing ${need[*]} (install them, or run as root)" >&2
  fi
fi

# axe-core for the accessibility tests: the npm package at the version and
# sha512 pinned in tests/support/axe.py, fetched once per machine into the build cache
# (or the repository's .cache when that is not writable), never from a CDN.
python="$ROOT/.venv/bin/python"; [ -x "$python" ] || python=python3
(cd "$ROOT" && "$python" -m tests.support.axe) || echo "test-env: fetching axe-core failed; tests/browser/test_browser_axe.py will fail (CI) or skip" >&2

bash "$ROOT/scripts/docker-engine.sh" test-env || true

if docker info >/dev/null 2>&1; then
  bash "$ROOT/workspace-image/build-test-image.sh"
  # The real code-server image (slim) for tests/browser/test_code_server.py: built
  # offline once per machine (minutes cold), then reused while its content
  # hash matches (under a second). A failed build does not stop the run: the
  # test that needs the image fails in CI and skips locally.
  slim="${WORKSPACE_CODE_SERVER_IMAGE:-apranova/workspace-slim:latest}"
  echo "test-env: code-server image $slim (workspace-image/build-offline.sh --slim)"
  started=$SECONDS
  python="$ROOT/.venv/bin/python"; [ -x "$python" ] || python=python3
  if BUILD_PYTHON="$python" bash "$ROOT/workspace-image/build-offline.sh" --slim "$slim"; then
    echo "test-env: code-server image ready in $((SECONDS - started)) s"
  else
    echo "test-env: building $slim failed after $((SECONDS - started)) s; tests/browser/test_code_server.py will fail (CI) or skip" >&2
  fi
  # The full image, the default WORKSPACE_IMAGE ./scripts/run builds (the slim
  # one's cache makes it the extra packages only): tests/test_full_image.py.
  full="${WORKSPACE_FULL_IMAGE:-apranova/workspace:latest}"
  started=$SECONDS
  if BUILD_PYTHON="$python" bash "$ROOT/workspace-image/build-offline.sh" "$full"; then
    echo "test-env: full image $full ready in $((SECONDS - started)) s"
  else
    echo "test-env: building $full failed after $((SECONDS - started)) s; tests/test_full_image.py will fail (CI) or skip" >&2
  fi
else
  echo "test-env: no Docker engine answers; workspace tests will fail (CI) or skip (locally)" >&2
fi
