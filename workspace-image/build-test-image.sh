#!/usr/bin/env bash
# Builds the tiny local image the workspace tests and benchmarks use in place
# of the real code-server image (no registry is needed): a root file system
# holding only /bin/busybox (busybox-static), whose default command serves
# HTTP on port 8080 like code-server does, with `GET /healthz` answering 200
# as code-server's does, so the readiness probe works. Everything is readable
# by the non-root user workspaces run as (1000:1000), /tmp is writable by
# anyone, and `chown` is on PATH (the server fixes a fresh home volume's
# ownership with it).
#
# The tag is the stand-in's version (2: non-root, /healthz): bump it when its
# behaviour changes, so that checkouts still building an older one on a
# shared engine do not overwrite it under the tests' feet.
#
# Idempotent and quick: when the image exists and was built from the same
# busybox binary and this same script, nothing is done.
#   usage: workspace-image/build-test-image.sh [image-name]
set -euo pipefail
IMAGE="${1:-${WORKSPACE_TEST_IMAGE:-apranova/workspace-test:2}}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
[ -x "$BUSYBOX" ] || { echo "build-test-image: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
digest="$(cat "$BUSYBOX" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
if [ "$(docker image inspect -f '{{index .Config.Labels "apranova.busybox"}}' "$IMAGE" 2>/dev/null || true)" = "$digest" ]; then
  echo "build-test-image: $IMAGE is up to date"
  exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/home/coder/project"
cp "$BUSYBOX" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
ln -s busybox "$root/bin/chown"
echo '<!doctype html><title>workspace</title><p>apranova test workspace</p>' >"$root/www/index.html"
echo ok >"$root/www/healthz"
chmod 755 "$root" "$root/bin" "$root/www" "$root/home" "$root/home/coder" "$root/home/coder/project"
chmod 644 "$root/www/index.html" "$root/www/healthz"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import \
  --change 'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]' \
  --change 'EXPOSE 8080' \
  --change 'WORKDIR /home/coder/project' \
  --change "LABEL apranova.busybox=$digest" \
  - "$IMAGE" >/dev/null
echo "build-test-image: built $IMAGE"
