"""A fresh home volume's owner (DockerBackend.ensure_storage).

A new, empty volume mounted at HOME gets, when the IDE's container is
created, a copy of what the image has at HOME, owners, modes and all (Docker's
copy-up). So on an image whose HOME is wholly the IDE user's (ours: the
offline build and the Dockerfile both chown it), the fresh home is the
user's already, and the one-shot chown container would change nothing. That
container is a create, a start, a wait and two removes on the engine: in a
class's first burst, 30 of them cost about 3 core-seconds that the IDEs'
own starts need.

Whether an image is such an image is probed once per image id and user (a
one-shot `find HOME ! -user U -o ! -group G` in the image; the answer depends
on nothing else, so it is kept for the process's life). A burst's creates
wait on the one probe. Any doubt means chown: no `find` in the image, the
probe refused, something not the user's, no HOME at all (Docker would make a
root-owned mount point), and every quota'd home (a new ext4 file system is
root's and not empty, so nothing is copied into it).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

from services.docker import DockerEngine, DockerError, DockerUnavailable
from services.workspaces.spec import HOME

log = logging.getLogger("apranova.workspaces")
_known: dict[tuple[str, str], bool] = {}  # (image id, user) -> a fresh home needs the chown
PROBE_TIMEOUT = 60.0  # seconds a probe may run
LEFTOVER_AGE = 2 * PROBE_TIMEOUT  # an older probe container is no live process's
ROLE = {"apranova.role": "home-probe"}


def chown_config(image: str, volume: str, user: str, labels: dict[str, str]) -> dict:
    """A fresh volume mounted where the image has no directory (or a
    root-owned one) comes out root-owned: chown it once, as root with only
    CAP_CHOWN (and CAP_DAC_READ_SEARCH, to walk into the user's own 0700
    directories when it runs again after an interrupted first run), no
    network, from the workspace image itself (which has chown)."""
    return {
        "Image": image, "Labels": labels, "User": "0:0", "Entrypoint": ["chown"], "Cmd": ["-R", user, HOME],
        "HostConfig": {"Mounts": [{"Type": "volume", "Source": volume, "Target": HOME,
                                   "VolumeOptions": {"Labels": labels}}], "CapDrop": ["ALL"],
                       "CapAdd": ["CHOWN", "DAC_READ_SEARCH"], "SecurityOpt": ["no-new-privileges"], "NetworkMode": "none"},
    }


def probe_config(image: str, user: str, labels: dict[str, str]) -> dict:
    """What in the image's HOME is not `user`'s (uid[:gid]), printed; read
    as root with only CAP_DAC_READ_SEARCH, no network, no volume."""
    uid, _, gid = user.partition(":")
    test = ["!", "-user", uid, *(["-o", "!", "-group", gid] if gid else [])]
    return {
        "Image": image, "Labels": labels, "User": "0:0", "Tty": True, "Entrypoint": ["find"], "Cmd": [HOME, *test],
        "HostConfig": {"CapDrop": ["ALL"], "CapAdd": ["DAC_READ_SEARCH"], "SecurityOpt": ["no-new-privileges"],
                       "NetworkMode": "none"},
    }


class HomeOwner:
    """`chown_needed`: the probe, once per image id and user."""

    def __init__(self, instance: str):
        self.instance = instance
        self.tag = uuid.uuid4().hex[:8]  # this backend's probes' names
        self._probing: dict[tuple[str, str], asyncio.Task[bool]] = {}  # this loop's probes in flight

    async def remove_leftovers(self, engine: DockerEngine, owner: dict[str, str]) -> None:
        """Probes a killed server left behind (`owner`: this deployment's
        labels): any not running, and any older than a probe
        may run. One that another process of this deployment was about to
        start (or had just seen exit) may go too: that process then chowns
        (its probe failed), which is safe."""
        for found in await engine.list_containers({**owner, **ROLE}):
            if found.get("State") != "running" or found.get("Created", 0) < time.time() - LEFTOVER_AGE:
                await engine.remove_container(found["Id"])

    async def chown_needed(self, engine: DockerEngine, image: str, user: str, owner: dict[str, str]) -> bool:
        """Whether a fresh home of `image` needs the chown to `user`;
        `owner`: the deployment's labels, which the probe carries."""
        key = (await engine.image_id(image), user)
        if key in _known:
            return _known[key]
        task = self._probing.get(key)
        if task is None:
            task = self._probing[key] = asyncio.ensure_future(self._probe(engine, key, {**owner, **ROLE}))
            task.add_done_callback(lambda _: self._probing.pop(key, None))
        return await asyncio.shield(task)  # a cancelled caller leaves the probe to the others

    async def _probe(self, engine: DockerEngine, key: tuple[str, str], labels: dict[str, str]) -> bool:
        image_id, user = key
        # A name per image and backend: two servers of one deployment probing at once must not
        # remove each other's (run_capture removes a container of its name first). What a killed
        # server left is remove_leftovers' at the next start.
        name = f"{self.instance}-home-probe-{image_id.rsplit(':', 1)[-1][:12]}-{self.tag}"
        try:
            code, output = await engine.run_capture(name, probe_config(image_id, user, labels), timeout=PROBE_TIMEOUT)
        except DockerUnavailable:
            raise  # no answer about the image: ask again next time (the chown will say what is wrong)
        except (DockerError, TimeoutError) as exc:  # no find in the image, say
            code, output = -1, str(getattr(exc, "message", exc))
        needed = code != 0 or bool(output.strip())
        _known[key] = needed
        log.info("image %s: a fresh home %s", image_id[:19], "is chowned to its user" if needed else
                 f"is {user}'s already (Docker copies the image's {HOME}); no chown container")
        return needed
