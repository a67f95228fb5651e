"""Disk quotas on Docker (WORKSPACE_DISK_QUOTA): a quota'd home is an ext4
image file in WORKSPACE_DISK_DIR, attached to a loop device, and the home
volume is the local driver mounting that device (`type=ext4,
device=/dev/loopN`). The kernel enforces the size: a write past it fails
with ENOSPC inside the workspace, and nothing else on the host notices.

Why a loop device the server attaches, and not the driver's `o=loop`: the
local driver mounts with mount(2), which knows nothing of `loop` (that is
mount(8)'s doing), so Docker 20.10 answers "invalid argument". The helper
attaches the image instead, and the volume names the device.

Everything runs in a one-shot helper container (as the home's chown does),
so the server itself needs no privilege and may run in a container: root
with only CAP_SYS_ADMIN (losetup needs it), the loop devices allowed by
device-cgroup rules, the host's /dev bind-mounted (a loop device made after
the helper started must appear in it), no network. A device's number may
change (a reboot detaches every loop device); `prepare` then makes the
volume again with the new number, before any container mounts it.

Growing (a higher quota) is offline: the helper checks the file system
(`e2fsck -f`, which refuses a device in use) and resizes it at the next
start, because online growth needs CAP_SYS_RESOURCE, which the engine on
such hosts may not grant. A grow that could not run is remembered (a
`.grow` file) and retried at the next start.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Awaitable, Callable

from services.docker import DockerEngine
from services.settings import Settings
from services.workspaces.backend import BackendError
from services.workspaces.spec import HOME

log = logging.getLogger("apranova.workspaces")
FREE_FRESH_SECONDS = 30.0  # a host free-space reading is reused this long

# Each script runs under `sh -c` with the image directory at /disks; tools by
# full path (a busybox shell would otherwise run its own, smaller applets).
# The lock serialises every helper of the directory: two attaching one image
# at once would mount one file system through two devices.
LOCK = 'exec 9>/disks/.lock\n/usr/bin/flock 9\n'
ENSURE = 'set -eu\n' + LOCK + r'''img="/disks/$NAME.ext4"
if [ ! -e "$img" ]; then
  rm -f "$img.new"
  truncate -s "$SIZE" "$img.new"
  /usr/sbin/mkfs.ext4 -q -F -m 0 "$img.new"
  mv "$img.new" "$img"
fi
loop="$(/usr/sbin/losetup -j "$img" | head -n 1 | cut -d: -f1)"
[ -n "$loop" ] || loop="$(/usr/sbin/losetup -f --show "$img")"
if [ "$(stat -c %s "$img")" -lt "$SIZE" ] || [ -e "$img.grow" ]; then
  : >"$img.grow"
  if [ "$(stat -c %s "$img")" -lt "$SIZE" ]; then truncate -s "$SIZE" "$img"; fi
  /usr/sbin/losetup -c "$loop"
  rc=0
  /usr/sbin/e2fsck -f -p "$loop" >&2 || rc=$?
  if [ "$rc" -le 2 ]; then /usr/sbin/resize2fs "$loop" >&2; rm -f "$img.grow"; else echo "grow=busy"; fi
fi
echo "loop=$loop"
'''
REMOVE = 'set -eu\n' + LOCK + r'''for name in $NAMES; do
  img="/disks/$name.ext4"
  for loop in $(/usr/sbin/losetup -j "$img" | cut -d: -f1); do /usr/sbin/losetup -d "$loop"; done
  rm -f "$img" "$img.new" "$img.grow"
  echo "removed=$name"
done
'''
SURVEY = r'''set -eu
df -P -k /disks
for f in /disks/*.ext4; do [ -e "$f" ] && echo "image=${f##*/}"; done
true
'''


def df_figures(text: str) -> tuple[str, int, int] | None:
    """(file system, used bytes, size bytes) from `df -P -k` output."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[1].isdigit() and fields[2].isdigit() and fields[3].isdigit():
            return fields[0], int(fields[2]) * 1024, (int(fields[2]) + int(fields[3])) * 1024
    return None


class DockerDisks:
    """The image files of one deployment (INSTANCE_NAME), through the engine."""

    def __init__(self, settings: Settings, engine: DockerEngine):
        self.settings, self.engine = settings, engine
        self._dir = settings.workspace_disk_dir
        self._free: tuple[float, int] | None = None  # (when read, free bytes)
        # What the helpers carry (the backend adds the deployment's id): a
        # helper left by a killed server is found by them and removed.
        self.labels = {"apranova.instance": settings.instance_name, "apranova.role": "disk-helper"}

    async def remove_leftovers(self) -> None:
        """Helpers that exited and were never removed (their server was
        killed while it waited for them)."""
        for found in await self.engine.list_containers(self.labels):
            if found.get("State") == "exited":
                await self.engine.remove_container(found["Id"])

    async def directory(self) -> str:
        if not self._dir:  # beside Docker's own volumes: the file system whose free space matters
            self._dir = f"{(await self.engine.root_dir()).rstrip('/')}/apranova-disks/{self.settings.instance_name}"
        return self._dir

    async def _helper(self, name: str, script: str, env: dict[str, str], devices: bool = True) -> str:
        """Run `script` in a one-shot helper; its output, or BackendError.
        Without `devices` (a survey): no capability, no /dev, and without a
        quota the volumes' own directory, read-only (no image directory is
        made for nothing)."""
        s = self.settings
        if devices or s.workspace_disk_quota:
            binds = [f"{await self.directory()}:/disks"] + (["/dev:/dev"] if devices else [])
        else:
            binds = [f"{(await self.engine.root_dir()).rstrip('/')}/volumes:/disks:ro"]
        config: dict = {
            "Image": s.workspace_disk_tools_image or s.workspace_image, "User": "0:0", "Tty": True,
            "Labels": self.labels,
            "Entrypoint": ["/bin/sh", "-c", script], "Cmd": [], "Env": [f"{k}={v}" for k, v in env.items()],
            "HostConfig": {"Binds": binds, "NetworkMode": "none", "CapDrop": ["ALL"],
                           "SecurityOpt": ["no-new-privileges"]},
        }
        if devices:  # losetup: CAP_SYS_ADMIN, the loop devices and /dev/loop-control
            config["HostConfig"].update(CapAdd=["SYS_ADMIN"], DeviceCgroupRules=["b 7:* rwm", "c 10:237 rwm"])
        # A name of its own per call: two helpers of one home at once wait on the lock, not remove each other.
        code, output = await self.engine.run_capture(f"{s.instance_name}-disk-{name}-{uuid.uuid4().hex[:8]}", config)
        if code != 0:
            log.warning("disk helper %s failed (exit code %s): %s", name, code, output.strip()[-500:])
            raise BackendError(f"The disk helper failed (exit code {code}): {output.strip()[-200:]}")
        return output

    async def prepare(self, home: str, quota: int, container: str, labels: dict[str, str]) -> dict[str, str] | None:
        """The local driver's options of the quota'd `home` (image made,
        attached and grown to `quota` as needed), or None for an unlimited
        home (`quota` 0 and no image volume, or a volume from before quotas). A volume naming
        another device than the image's now is made again (`labels`), after
        removing the stopped `container` that refers to it; its files are
        the image's, already the user's (no chown again)."""
        volume = await self.engine.inspect_volume(home)
        if (volume is None and not quota) or (volume is not None and not (volume.get("Options") or {}).get("device")):
            return None  # an unlimited home, new or from before quotas
        # A quota'd home is checked at every start, even with the quota since turned off: after a
        # reboot its volume's device number may name another student's image.
        output = await self._helper(home, ENSURE, {"NAME": home, "SIZE": str(quota)})
        found = re.search(r"^loop=(/dev/loop\d+)\s*$", output, re.M)
        if found is None:
            raise BackendError(f"The disk helper named no loop device: {output.strip()[-200:]}")
        if "grow=busy" in output:
            log.warning("home %s is in use: its growth to %d bytes waits for the next start", home, quota)
        options = {"type": "ext4", "device": found[1], "o": "discard"}  # discard: deleted files free host space
        if volume is not None and (volume.get("Options") or {}).get("device") != found[1]:
            log.info("home %s: its image is now on %s; making the volume again", home, found[1])
            await self.engine.remove_container(container)
            await self.engine.remove_volume(home)
            await self.engine.ensure_volume(home, labels, options)
        return options

    async def remove(self, homes: list[str]) -> None:
        """Detach and delete the images of `homes` (nothing when none exist)."""
        if homes:
            await self._helper("remove", REMOVE, {"NAMES": " ".join(homes)})

    async def remove_orphans(self, prefix: str, owners: Callable[[], Awaitable[set[int]]]) -> list[str]:
        """Delete the images of homes ('<prefix><owner id>-home') whose owner
        is not among `owners()` and whose volume is gone; the homes removed.
        The owners are read after the images are listed: a workspace's
        document exists before its image, so a new one is never taken."""
        _, homes = await self.survey()
        owned, orphans = await owners(), []
        for home in homes:
            owner = home.removeprefix(prefix).removesuffix("-home")
            if not (owner.isdigit() and int(owner) in owned) and not await self.engine.volume_exists(home):
                orphans.append(home)
        await self.remove(orphans)
        return orphans

    async def survey(self) -> tuple[int | None, list[str]]:
        """The free bytes of the images' file system, and the homes that
        have an image."""
        output = await self._helper("survey", SURVEY, {}, devices=False)
        figures = df_figures(output)
        free = figures[2] - figures[1] if figures else None
        if free is not None:
            self._free = (time.monotonic(), free)
        return free, [m[1] for m in re.finditer(r"^image=(.+)\.ext4\s*$", output, re.M)]

    async def free(self) -> int | None:
        """The free bytes of the images' file system (a reading up to
        FREE_FRESH_SECONDS old)."""
        if self._free is None or time.monotonic() - self._free[0] > FREE_FRESH_SECONDS:
            await self.survey()
        return self._free[1] if self._free else None

    async def usage(self, container: str) -> tuple[int, int] | None:
        """(used, size) bytes of a running workspace's quota'd home: `df` in
        the container, as its user. None when not running or not quota'd
        (a home on the host's file system would show the host's figures)."""
        output = await self.engine.exec_output(container, ["/bin/sh", "-c", f"df -P -k {HOME}"],
                                               self.settings.workspace_user)
        figures = df_figures(output or "")
        if figures is None or not figures[0].startswith("/dev/loop"):
            return None
        return figures[1], figures[2]
