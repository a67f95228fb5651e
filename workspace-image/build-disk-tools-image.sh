#!/usr/bin/env bash
# Builds a tiny local image holding the tools the server's disk helper runs
# (WORKSPACE_DISK_TOOLS_IMAGE, see README "Disk quotas"): busybox for the
# shell, truncate, stat and df, plus the host's own mkfs.ext4, e2fsck, resize2fs,
# losetup and flock with the libraries they load, at the paths Debian gives
# them (the helper calls them by full path: busybox's shell would otherwise
# prefer its own, smaller applets). The tests use it with the
# busybox stand-in workspace image, which has none of e2fsprogs; the real
# workspace image (Debian) has all of them, so production needs no extra image.
#
# Idempotent and quick: when the image exists and was built from the same
# binaries and this same script, nothing is done.
#   usage: workspace-image/build-disk-tools-image.sh [image-name]
set -euo pipefail
IMAGE="${1:-${WORKSPACE_DISK_TOOLS_TEST_IMAGE:-apranova/disk-tools:1}}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
TOOLS=(/usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/resize2fs /usr/sbin/losetup /usr/bin/flock)
for tool in "$BUSYBOX" "${TOOLS[@]}"; do
  [ -x "$tool" ] || { echo "build-disk-tools-image: $tool missing (apt-get install busybox-static e2fsprogs util-linux mount)" >&2; exit 1; }
done
digest="$(cat "$BUSYBOX" "${TOOLS[@]}" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
if [ "$(docker image inspect -f '{{index .Config.Labels "apranova.disk-tools"}}' "$IMAGE" 2>/dev/null || true)" = "$digest" ]; then
  echo "build-disk-tools-image: $IMAGE is up to date"
  exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/usr/sbin" "$root/usr/bin" "$root/etc" "$root/tmp" "$root/mnt"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in sh truncate stat mount umount mkdir rm mv cat cut head df echo test ls; do
  ln -s busybox "$root/bin/$applet"
done
for tool in "${TOOLS[@]}"; do
  cp "$tool" "$root$tool"  # at the host's path: the helper names each by its full path
  # The shared libraries it loads, at the same paths (and the loader itself).
  ldd "$tool" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
ln -s mke2fs "$root/usr/sbin/mkfs.ext4"
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/sbin:/usr/bin:/bin' \
  --change "LABEL apranova.disk-tools=$digest" \
  - "$IMAGE" >/dev/null
echo "build-disk-tools-image: built $IMAGE"
