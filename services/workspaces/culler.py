"""Idle culling and maximum lifetime: running workspaces without activity
for WORKSPACE_IDLE_TIMEOUT, or running for WORKSPACE_MAX_LIFETIME, are
stopped (their files kept), after one warning WORKSPACE_IDLE_WARNING ahead.

Activity is the proxy's traffic (each proxied HTTP request, and each chunk
of a proxied WebSocket in either direction), noted in this process's memory
(`Activity.touch`: one dict write) and written as the document's
``last_activity`` once per WORKSPACE_CULL_INTERVAL at most. A (re)start and
a keep-running call count too: those lifecycle changes set it themselves
(lifecycle.ACTIVE).

The write of ``last_activity`` is a plain update that does not bump
``version``: it is bookkeeping no lifecycle rule reads, so it must not make
a concurrent compare-and-set (a provisioning step, a stop) lose and retry.

Every server process runs a culler. Each decides from the stored document
only (never its own unsent activity), so all compute the same plan, and
each warning or stop is a compare-and-set whose `when=` re-checks that plan
on the current document: one warning and one stop per workspace however
many processes look.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from pymongo.errors import PyMongoError

from services.errors import ApiError
from services.settings import Settings
from services.workspaces.lifecycle import Lifecycle, State
from services.workspaces.store import WorkspaceStore

log = logging.getLogger("apranova.workspaces")
KEPT_BY_ACTIVITY = "Kept running: there was activity in the IDE"


class Activity:
    """The latest proxied traffic per workspace, in memory (the proxy calls
    `touch` per request and per relayed chunk: a dict write, nothing more)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}  # workspace id -> time.time()

    def touch(self, workspace_id: str) -> None:
        self.seen[workspace_id] = time.time()

    def take(self) -> dict[str, float]:
        seen, self.seen = self.seen, {}
        return seen


@dataclass(frozen=True)
class Plan:
    action: str  # "warn" or "stop"
    reason: str  # "idle" or "lifetime"
    stop_at: float  # epoch seconds
    since: float  # last activity (idle) or the run's start (lifetime)


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def span(seconds: float) -> str:
    """A duration as a student reads it: "5 minutes", "2 hours", "30 seconds"."""
    seconds = max(0, round(seconds))
    if seconds >= 5400:
        count, unit = round(seconds / 3600), "hour"
    elif seconds >= 90:
        count, unit = round(seconds / 60), "minute"
    else:
        count, unit = seconds, "second"
    return f"{count} {unit}{'' if count == 1 else 's'}"


def idle_warned(doc: dict) -> bool:
    """The workspace's latest event is an idle warning (the next event
    replaces the note, so a warning answered or superseded is not)."""
    note = doc.get("note") or {}
    return note.get("kind") == "warning" and note.get("reason") == "idle"


def warning_lead(settings: Settings, limit: float) -> float:
    """How long before a stop the student is warned: WORKSPACE_IDLE_WARNING
    when it is shorter than the limit, else half the limit, so that an
    operator who shortens the timeout alone gets a warning halfway rather
    than a refusal to start (or a warning at once)."""
    warning = settings.workspace_idle_warning
    return warning if warning < limit else limit / 2


def plan(doc: dict, settings: Settings, now: float) -> Plan | None:
    """What is due for a running workspace now, from its document alone."""
    if doc.get("state") != State.RUNNING:
        return None
    deadlines = []
    if settings.workspace_idle_timeout:
        last = epoch(doc.get("last_activity") or doc["updated_at"])
        deadlines.append((last + settings.workspace_idle_timeout, "idle", last))
    if settings.workspace_max_lifetime:
        started = epoch(doc.get("provision_started") or doc["created_at"])
        deadlines.append((started + settings.workspace_max_lifetime, "lifetime", started))
    if not deadlines:
        return None
    stop_at, reason, since = min(deadlines)
    if now >= stop_at:
        return Plan("stop", reason, stop_at, since)
    if now >= stop_at - warning_lead(settings, stop_at - since) and doc.get("warned") != iso(stop_at):
        return Plan("warn", reason, stop_at, since)
    return None


def messages(p: Plan, settings: Settings, now: float) -> tuple[str, str]:
    """The warning (or the stop's first event) and the stopped event's text."""
    if p.reason == "idle":
        limit = span(settings.workspace_idle_timeout)
        warning = f"Stopping in {span(p.stop_at - now)}: no activity for {span(now - p.since)}"
        return (warning if p.action == "warn" else f"Stopping: no activity for {limit}",
                f"Stopped after {limit} without activity. Your files are kept.")
    limit = span(settings.workspace_max_lifetime)
    warning = f"Stopping in {span(p.stop_at - now)}: a workspace may run for {limit} at a time"
    return (warning if p.action == "warn" else f"Stopping: it has run for {limit}, the longest allowed",
            f"Stopped after running for {limit}, the longest a workspace may run. Your files are kept.")


Stopper = Callable[..., Awaitable[dict | None]]  # WorkspaceService.halt


class Culler:
    def __init__(self, lifecycle: Lifecycle, store: WorkspaceStore, settings: Settings, stop: Stopper):
        self.lifecycle, self.store, self.settings, self.stop = lifecycle, store, settings, stop
        self.activity = Activity()
        self.task: asyncio.Task | None = None
        self.closing = False
        self.rounds: list[Callable[[], Awaitable[None]]] = []  # also run each round (quota.DiskWatch.round)

    def start(self) -> None:
        self.task = asyncio.create_task(self._forever(), name="workspace-culler")

    async def close(self) -> None:
        self.closing = True  # a PyMongo query can absorb the cancellation: the loop checks this too
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task], timeout=5)
        try:
            await self.flush()  # what this process saw last is not lost with it
        except Exception as exc:  # noqa: BLE001 - the database may be gone already
            log.warning("activity not written at shutdown: %s", type(exc).__name__)

    async def _forever(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.settings.workspace_cull_interval)
            if self.closing:
                return
            try:
                await self.flush()
                await self.cull()
                for also in self.rounds:
                    await also()
            except asyncio.CancelledError:
                raise
            except PyMongoError as exc:  # the database is away (or closing): the next round tries again
                if not self.closing:
                    log.warning("workspace culler: the database did not answer (%s)", type(exc).__name__)
            except Exception:  # noqa: BLE001 - the culler must survive anything
                log.exception("workspace culler error")

    async def flush(self) -> None:
        """Write the activity seen since the last flush; a workspace whose
        last event was an idle warning logs that it is kept running."""
        for workspace_id, seen in self.activity.take().items():
            before = await self.store.note_activity(workspace_id, iso(seen))
            if before is not None and idle_warned(before):
                await self.lifecycle.change(before["_id"], "keep", KEPT_BY_ACTIVITY, note={"kind": "info"},
                                            when=idle_warned)

    async def cull(self) -> None:
        if not (self.settings.workspace_idle_timeout or self.settings.workspace_max_lifetime):
            return
        for doc in await self.store.running():
            now = time.time()
            due = plan(doc, self.settings, now)
            if due is None:
                continue
            try:
                await self.act(doc, due, now)
            except ApiError as exc:  # the engine is away: the stop is finished by reconciliation
                log.warning("culling workspace %s: %s", doc["_id"], exc.message)

    async def act(self, doc: dict, due: Plan, now: float) -> None:
        """Warn or stop, only if the current document still calls for it
        (by id: re-read now, as an activity write changes no version)."""
        still = lambda current: plan(current, self.settings, now) == due  # noqa: E731
        first, stopped = messages(due, self.settings, now)
        if due.action == "warn":
            note = {"kind": "warning", "reason": due.reason, "stop_at": iso(due.stop_at)}
            await self.lifecycle.change(doc["_id"], "warn", first, note=note, fields={"warned": iso(due.stop_at)},
                                        when=still)
        elif await self.stop(doc["_id"], due.reason, (first, stopped), when=still) is not None:
            log.info("workspace %s of user %s stopped: %s", doc["_id"], doc["owner_id"], due.reason)
