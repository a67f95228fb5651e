"""The workspace network of WORKSPACE_EXPOSURE=network: made once, found by
name (and label), and kept unique.

Docker lets several networks share a name, and its duplicate check is not
atomic: the creates of a class's first burst (or of several processes) can
make 2-5 networks of one name, and from then on every container start that
names it fails ("network ... is ambiguous"), for every later workspace too.
So within a process one lock lets one create through, and across processes
every ensure lists the networks of that name; when there are several, every
process picks the same one to keep (the one with containers, else the
oldest, then the smallest id) and removes the empty others that carry this
instance's label. A container starts only on a name that is unique at that
moment, so at most one duplicate ever has containers, and the others can go.

One class, called by `DockerBackend` before a launch and at start-up.
"""
from __future__ import annotations

import asyncio
import logging

from services.docker import DockerEngine
from services.workspaces.backend import BackendError

log = logging.getLogger("apranova.workspaces")
ATTEMPTS = 8  # list / create / heal rounds before an ensure gives up


def created_key(network: dict) -> tuple[str, str]:
    """Sort key: creation time, then id. Docker's RFC 3339 times drop
    trailing zeros of the fraction, so they are padded before comparing."""
    stamp = str(network.get("Created") or "")
    whole, _, fraction = stamp.partition(".")
    digits = "".join(ch for ch in fraction if ch.isdigit())
    return f"{whole[:19]}.{digits.ljust(9, '0')}", str(network.get("Id") or "")


class WorkspaceNetwork:
    def __init__(self, name: str, labels: dict[str, str], options: dict[str, str]):
        self.name, self.labels, self.options = name, labels, options
        self._lock = asyncio.Lock()  # one create per process, however many launches wait

    def ours(self, network: dict) -> bool:
        """Made by this instance (the network may be an operator's WORKSPACE_NETWORK)."""
        labels = network.get("Labels") or {}
        return labels.get("apranova.instance") == self.labels.get("apranova.instance")

    async def ensure(self, engine: DockerEngine) -> dict:
        """The one network of this name (a list answer: Id, Options, ...),
        made when missing and healed when duplicated. Raises BackendError when duplicates cannot
        be removed (they have containers, or are not this instance's)."""
        async with self._lock:
            for attempt in range(ATTEMPTS):
                found = await engine.list_networks(self.name)
                if len(found) == 1:
                    return found[0]
                if not found:
                    await engine.create_network(self.name, self.labels, self.options)
                elif not await self._heal(engine, found):
                    await asyncio.sleep(0.05 * (attempt + 1))  # another process's container may be leaving
        raise BackendError(f"Several Docker networks are named {self.name} and the extra ones cannot be removed "
                           "(they have containers or are not ApraNova's); remove all but one.")

    async def heal(self, engine: DockerEngine) -> None:
        """Start-up: remove the empty duplicates left by an earlier burst."""
        async with self._lock:
            found = await engine.list_networks(self.name)
            if len(found) > 1:
                await self._heal(engine, found)

    async def _heal(self, engine: DockerEngine, found: list[dict]) -> bool:
        """Keep one of `found`, remove the other removable ones; True when
        any was removed. The list answer carries no containers: each is
        inspected."""
        details = [await engine.inspect_network(network["Id"]) or network for network in found]
        details.sort(key=lambda network: (not network.get("Containers"), created_key(network)))
        keep, removed = details[0], []
        for network in details[1:]:
            if self.ours(network) and not network.get("Containers") and await engine.remove_network(network["Id"]):
                removed.append(network["Id"][:12])
        if removed:
            log.warning("removed %d duplicate workspace network(s) named %s (%s); kept %s", len(removed), self.name,
                        ", ".join(removed), keep["Id"][:12])
        return bool(removed)
