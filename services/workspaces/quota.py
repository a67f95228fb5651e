"""Disk quotas, the engine-neutral part: each workspace's quota, its use
as the student and the operator read it, the warning at 90% and the
message when full, and the low-water mark below which new workspaces are
refused. The engine side (an ext4 image per home on Docker) is
docker/disk.py; a backend without `disk_usage` / `disk_free` simply has
no figures, and nothing here refuses anything.

Measuring is one `df` in each running quota'd workspace per
WORKSPACE_CULL_INTERVAL (the culler's round calls `DiskWatch.round`).
Every server process runs a culler: each measures the workspaces it
started, and any whose reading is older than three rounds (its process
may be gone). The reading is kept on the document without a new version
(bookkeeping, like ``last_activity``); a level change (ok, warning, full)
is an evented "warn" change: the student's status socket shows it.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from services.errors import ApiError, Conflict, NotFound
from services.settings import Settings
from services.workspaces import spec as specs
from services.workspaces.backend import Backend, BackendError, BackendUnavailable
from services.workspaces.lifecycle import Lifecycle
from services.workspaces.spec import quota_of
from services.workspaces.store import WorkspaceStore, utcnow

log = logging.getLogger("apranova.workspaces")
WARN_AT = 0.9  # share of the quota that brings the warning
CLEAR_AT = 0.85  # below this the warning is forgotten (so a new crossing warns again)
FULL_MARGIN = 1024 ** 2  # less free than this (or 1% of the quota) is "full"
LEVELS = {"ok": 0, "warning": 1, "full": 2}
MEASURE_LANES = 4  # `df` execs under way at once: the engine does the work, a round takes a quarter of the time
LOW_SPACE = ("Not enough disk space", "The server is low on disk space, so no new workspace can be made right now. "
             "Workspaces that exist keep working. Please tell your trainer.")


def amount(used: int, size: int) -> str:
    """"1.2 of 2 GiB", in the unit of the size."""
    unit, scale = next((u, s) for u, s in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024), ("bytes", 1))
                       if size >= s or s == 1)
    show = lambda n: f"{n / scale:.1f}".removesuffix(".0")  # noqa: E731
    return f"{show(used)} of {show(size)} {unit}"


def level(used: int, size: int) -> str:
    if size - used <= max(size // 100, FULL_MARGIN):
        return "full"
    return "warning" if used >= size * WARN_AT else "ok"


def student_message(used: int, size: int, now: str) -> str:
    """What the student reads when the level becomes `now` (warning or full)."""
    figure = amount(used, size)
    if now == "full":
        return (f"Your workspace storage is full ({figure}): saving files fails until you make room. Delete files "
                "you no longer need (old downloads, build outputs, caches such as ~/.cache), or ask your trainer "
                "for more space.")
    return (f"Your workspace storage is {round(used * 100 / size)}% full ({figure}). Delete files you no longer "
            "need (old downloads, build outputs, caches such as ~/.cache) before it fills up.")


def disk_fields(doc: dict) -> dict[str, Any]:
    """The latest reading as the student's and the admin's answers carry it."""
    disk = doc.get("disk") or {}
    return {"disk_used_bytes": disk.get("used"), "disk_size_bytes": disk.get("size")}


class DiskWatch:
    def __init__(self, lifecycle: Lifecycle, store: WorkspaceStore, backend: Backend, settings: Settings):
        self.lifecycle, self.store, self.backend, self.settings = lifecycle, store, backend, settings
        self.host_free: int | None = None  # the last reading, for /metrics and the low-water mark
        self._reading: asyncio.Future | None = None  # a first reading under way (held: never collected)

    @property
    def measures(self) -> bool:
        return hasattr(self.backend, "disk_usage")

    async def admit(self) -> None:
        """Refuse a new workspace (503) while the host's free space for
        homes, as last read, is below WORKSPACE_DISK_LOW_WATER. Never waits
        for a reading (a helper container takes a second or more; a create
        answers at once): none yet starts one in the background and lets
        this one through, as does a reading that fails (logged): a broken
        gauge must not lock a class out."""
        mark = self.settings.workspace_disk_low_water
        if not mark or not hasattr(self.backend, "disk_free"):
            return
        if self.host_free is None:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(self.read_free())
            return
        if self.host_free < mark:
            log.warning("refusing a new workspace: %d bytes free for homes, below WORKSPACE_DISK_LOW_WATER (%d)",
                        self.host_free, mark)
            raise ApiError(503, *LOW_SPACE)

    async def read_free(self) -> None:
        try:
            self.host_free = await self.backend.disk_free()  # type: ignore[attr-defined]
        except (BackendError, BackendUnavailable) as exc:
            log.warning("host free space unknown (%s); not refusing new workspaces", exc)
        except Exception as exc:  # noqa: BLE001 - a gauge read in the background must never surface (shutdown)
            log.warning("host free space not read: %s", type(exc).__name__)

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()

    async def set_quota(self, owner_id: int, quota: int) -> dict:
        """An admin's larger quota for one workspace (its home grows at the
        next start); 409 when it is below the one in effect."""
        doc = await self.store.of_owner(owner_id)
        if doc is None or doc["state"] == "deleted":
            raise NotFound("This user has no workspace.", error="Workspace not found")
        current = quota_of(doc, self.settings)
        if current and quota < current:
            raise Conflict(f"A quota only grows: this workspace has {amount(current, current).split(' of ')[1]} "
                           "now (a file system is not shrunk under the student's files).")
        return await self.store.set_disk_quota(owner_id, quota) or doc

    async def round(self) -> None:
        """One measuring round (the culler calls it)."""
        if not self.measures:
            return
        stale = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=3 * self.settings.workspace_cull_interval)) \
            .isoformat(timespec="milliseconds").replace("+00:00", "Z")
        due = [doc for doc in await self.store.running() if quota_of(doc, self.settings) and (
            doc.get("worker") == self.lifecycle.worker or (doc.get("disk") or {}).get("at", "") < stale)]
        lanes = asyncio.Semaphore(MEASURE_LANES)

        async def one(doc: dict) -> None:
            async with lanes:
                await self.measure(doc)
        await asyncio.gather(*(one(doc) for doc in due))
        if hasattr(self.backend, "disk_free") and (self.settings.workspace_disk_quota or
                                                   self.settings.workspace_disk_low_water):
            await self.read_free()  # at most one helper per 30 s (docker/disk.py's FREE_FRESH_SECONDS)

    async def measure(self, doc: dict) -> None:
        spec = specs.build(self.settings, doc, "", exposed=False)  # only its names are read
        try:
            found = await self.backend.disk_usage(spec)  # type: ignore[attr-defined]
        except (BackendError, BackendUnavailable) as exc:
            log.debug("no disk reading for workspace %s: %s", doc["_id"], exc)
            return
        if found is None:
            return
        used, size = found
        await self.store.note_disk(doc["_id"], {"used": used, "size": size, "at": utcnow()})
        await self.tell(doc, used, size)

    async def tell(self, doc: dict, used: int, size: int) -> None:
        """An event when the level rises (warning, full); forget it quietly
        when use falls below CLEAR_AT."""
        now, before = level(used, size), doc.get("disk_level", "ok")
        if now != "ok" and LEVELS[now] > LEVELS.get(before, 0):
            note = {"kind": "warning", "reason": "disk" if now == "warning" else "disk_full",
                    "disk_used": used, "disk_size": size}
            if await self.lifecycle.change(doc["_id"], "warn", student_message(used, size, now), note=note,
                                           fields={"disk_level": now},
                                           when=lambda d: d.get("disk_level", "ok") == before) is not None:
                log.info("workspace %s of user %s: disk %s (%s)", doc["_id"], doc["owner_id"], now,
                         amount(used, size))
        elif before != "ok" and used < size * CLEAR_AT:
            await self.lifecycle.change(doc["_id"], "warn", doc["message"], silent=True, unset=("disk_level",),
                                        when=lambda d: d.get("disk_level") == before)
