"""Provisioning runs and the other steps that drive the backend: each run
is a sequence of compare-and-set steps around backend calls. The backend's
progress (yielded) and failures (raised) become events and messages here.

A stop or delete does not cancel a run (a cancelled engine call may still
complete in the engine): the run notices at its next step that it was
superseded, and undoes what it made.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from typing import Any, AsyncIterator, Callable

from services.settings import Settings
from services.workspaces import messages, spec
from services.workspaces.backend import (Backend, BackendError, BackendExited, BackendRefused, BackendUnavailable,
                                         Launched)
from services.workspaces.probe import wait_ready
from services.workspaces.spec import IdeSpec
from services.workspaces.lifecycle import Lifecycle, State, Superseded
from services.workspaces.store import WorkspaceStore, ide_password

log = logging.getLogger("apranova.workspaces")
START_ATTEMPTS = 3  # launches of one run whose IDE exits while starting, before the run fails


def same_run(doc: dict) -> Callable[[dict], bool]:
    return lambda current: current.get("run") == doc.get("run")


REF = "container_id"  # the document's field for the backend's instance id (named when only Docker existed)


class RunRecord:
    """The backend.Run of one provisioning run: what a backend records and
    says is a step of that run (raises Superseded when it is not current)."""

    def __init__(self, provisioner: "Provisioner", doc: dict):
        self.provisioner, self.doc = provisioner, doc

    async def record(self, **placement: Any) -> None:
        fields: dict[str, Any] = {}
        unset: tuple[str, ...] = ()
        if "port" in placement:  # the contract's field, with its unique index
            port = placement.pop("port")
            fields, unset = ({"port": port}, ()) if port is not None else ({}, ("port",))
        if placement:
            merged = {**(self.doc.get("placement") or {}), **placement}
            fields["placement"] = {key: value for key, value in merged.items() if value is not None}
        self.doc = await self.provisioner.step(self.doc, 0, "Recorded the placement", fields=fields, unset=unset,
                                               silent=True)

    async def say(self, message: str) -> None:
        self.doc = await self.provisioner.step(self.doc, self.doc["progress"], message)

    async def held_ports(self, low: int, high: int) -> set[int]:
        return await self.provisioner.store.ports_in(low, high)

    async def reclaim_port(self, low: int, high: int) -> int | None:
        """The port of the workspace stopped (or failed) the longest; it
        gets a new one the next time it starts, as its instance is made
        afresh then."""
        p = self.provisioner
        for victim in await p.store.longest_settled([State.STOPPED, State.FAILED], low, high, self.doc["_id"]):
            if victim["_id"] in p.busy or victim["_id"] in p.tasks:
                continue
            # The student's text stays as it was: they need not know about host ports.
            note = messages.internal("Its port was given to another workspace while it was stopped; it gets a "
                                     "new one when it starts.")
            if await p.lifecycle.change(victim, "release_port", victim["message"], unset=("port",), note=note,
                                        when=lambda d, port=victim["port"]: d.get("port") == port) is not None:
                log.info("port %s reclaimed from stopped workspace %s", victim["port"], victim["_id"])
                return victim["port"]
        return None


class Provisioner:
    def __init__(self, lifecycle: Lifecycle, store: WorkspaceStore, backend: Backend, settings: Settings,
                 password_key: bytes):
        self.lifecycle, self.store, self.backend, self.settings = lifecycle, store, backend, settings
        self.password_key = password_key  # derives each IDE's password (store.ide_password)
        self.tasks: dict[str, asyncio.Task] = {}  # workspace id -> provisioning task in this process
        self.busy: set[str] = set()  # workspace ids a stop/delete in this process is working on
        self.provision_seconds: collections.deque[float] = collections.deque(maxlen=1000)
        self.provisioned_total = 0

    def spec(self, doc: dict) -> IdeSpec:
        """What the backend is told of a workspace's IDE."""
        return spec.build(self.settings, doc, ide_password(self.password_key, doc), self.exposed)

    @property
    def exposed(self) -> bool:
        """The backend's IDEs are reachable by others than this server (see spec.build)."""
        return bool(getattr(self.backend, "exposed", False))

    @contextlib.asynccontextmanager
    async def working_on(self, doc: dict) -> AsyncIterator[None]:
        """Mark a stop or delete in progress, so reconciliation leaves it alone."""
        self.busy.add(doc["_id"])
        try:
            yield
        finally:
            self.busy.discard(doc["_id"])

    async def step(self, doc: dict, progress: int, message: str, name: str | None = None, **changes: Any) -> dict:
        """One step of `doc`'s run (`name`: its short id for clients);
        raises Superseded when that run is no longer the current one."""
        if name is not None:
            changes.setdefault("note", messages.step(name))
        new = await self.lifecycle.change(doc, "step", message, progress=progress, monotonic=True,
                                          when=same_run(doc), **changes)
        if new is None:
            raise Superseded()
        return new

    async def start(self, doc: dict) -> dict:
        """Reserve what the answer must carry (Docker direct mode: the public
        port; ``reserved`` then names the run), then run the rest in the
        background. Returns the document to answer with. The reservation logs
        no event: the answer stays the run's first event, which clients list
        from."""
        try:
            run = RunRecord(self, doc)
            await self.backend.reserve(self.spec(doc), run)
            doc = await self.step(run.doc, 0, "Reserved", fields={"reserved": doc["run"]}, silent=True)
        except Superseded:
            return await self.store.get(doc["_id"]) or doc
        except BackendError as exc:
            return await self.fail(doc, "port", exc.message) or doc
        except BackendUnavailable:
            pass  # the run reports it
        self.launch(doc)
        return doc

    def launch(self, doc: dict) -> None:
        task = asyncio.create_task(self._run(doc), name=f"workspace-provision-{doc['_id']}")
        self.tasks[doc["_id"]] = task
        task.add_done_callback(lambda t, key=doc["_id"]: self.tasks.pop(key, None) if self.tasks.get(key) is t
                               else None)

    async def _run(self, doc: dict) -> None:
        started = time.monotonic()
        launched: Launched | None = None
        phase = "image"  # what a failure's student message names
        try:
            doc = await self._prepare_image(doc)  # first: making the storage may need the image
            phase = "volume"
            doc = await self.step(doc, 72, "Preparing the storage for your files", "volume")
            run = RunRecord(self, doc)
            await self.backend.ensure_storage(self.spec(doc), run)
            doc = run.doc
            for attempt in range(1, START_ATTEMPTS + 1):
                phase = "container"  # the student's step name (an API value), whatever the engine's noun
                doc = await self.step(doc, 74, f"Creating the {self.backend.noun}", "container", fields={REF: None})
                run = RunRecord(self, doc)
                try:
                    launched = await self.backend.launch(self.spec(doc), run)
                    phase = "ide"
                    doc = await self.step(run.doc, 90, f"Waiting for the IDE to answer (up to {self._limit()})", "ide",
                                          fields={REF: launched.ref, "endpoint": launched.endpoint.as_dict()})
                    await wait_ready(self.backend, launched, self.settings)
                    break
                except BackendExited as exc:  # transient on a busy host: start it once more
                    if attempt == START_ATTEMPTS:
                        raise
                    log.info("workspace %s: %s Starting it again (attempt %d of %d).", doc["_id"], exc.message,
                             attempt + 1, START_ATTEMPTS)
                    # Spread out: the starts of one burst failed together and would again.
                    await asyncio.sleep(random.uniform(0, 5 * attempt))
            await self.lifecycle.change(doc, "ready", "Workspace is running", progress=100, when=same_run(doc),
                                        note=messages.step("running")) or self._superseded()
            self.provision_seconds.append(time.monotonic() - started)
            self.provisioned_total += 1
        except Superseded:
            await self._abandon(doc["_id"], launched)
        except asyncio.CancelledError:
            raise  # shutdown: the next start's reconciliation finishes the run
        except BackendError as exc:  # the engine refusing to create is not a container that did not start
            refused = phase == "container" and isinstance(exc, BackendRefused)
            await self.fail(doc, phase, exc.message, cause="refused" if refused else None)
        except BackendUnavailable:
            await self.fail(doc, "engine", f"{self.backend.title} stopped answering while the workspace was being "
                                           f"prepared ({phase}).")
        except Exception:  # noqa: BLE001 - a run must end in a state, never hang in provisioning
            log.exception("provisioning workspace %s failed", doc["_id"])
            await self.fail(doc, "internal", f"Provisioning failed because of an internal error ({phase}).")

    def _limit(self) -> str:
        """WORKSPACE_READY_TIMEOUT in words ("2 min", "45 s")."""
        seconds = round(self.settings.workspace_ready_timeout)
        return f"{seconds // 60} min" if seconds >= 120 and seconds % 60 == 0 else f"{seconds} s"

    def estimate(self) -> float | None:
        """The median of this process's last 20 successful provisioning
        runs, in seconds (None before the first): what "usually ready in
        about N s" is based on."""
        recent = sorted(list(self.provision_seconds)[-20:])
        if not recent:
            return None
        middle = len(recent) // 2
        median = recent[middle] if len(recent) % 2 else (recent[middle - 1] + recent[middle]) / 2
        return round(median, 1)

    @staticmethod
    def _superseded() -> None:
        raise Superseded()

    async def _prepare_image(self, doc: dict) -> dict:
        """The backend's image progress as steps 8-70: every new kind of
        message (the text before a ':'), and at most one progress figure per
        0.25 s."""
        last_kind, last_at = "", 0.0
        async for progress in self.backend.prepare_image():
            overall = 8 + progress.percent * 62 // 100
            kind = progress.message.split(":")[0]
            if kind != last_kind or (overall > doc["progress"] and time.monotonic() - last_at > 0.25):
                text, note = messages.image_step(progress.message)
                doc = await self.step(doc, overall, text, note=note)
                last_kind, last_at = kind, time.monotonic()
        return doc

    async def _abandon(self, workspace_id: str, launched: Launched | None) -> None:
        """A superseded run removes (deleted) or stops (stopped) the
        instance it made, in case that landed after the stop or delete."""
        current = await self.store.get(workspace_id)
        state = current["state"] if current else State.DELETED
        if launched is None or state == State.PROVISIONING:
            return
        try:
            if state in (State.DELETING, State.DELETED):
                await self.backend.remove(launched.ref)
            elif state in (State.STOPPING, State.STOPPED, State.FAILED):
                await self.backend.stop(launched.ref)
        except (BackendUnavailable, BackendError) as exc:
            log.warning("could not undo an abandoned run of %s: %s", workspace_id, exc)

    async def fail(self, doc: dict, phase: str, detail: str, cause: str | None = None) -> dict | None:
        """The run failed in `phase`: the student reads what to do (with a
        reference), the operator's `detail` goes to the note and the log."""
        log.warning("workspace %s of user %s failed (reference %s): %s", doc["_id"], doc["owner_id"],
                    messages.reference(doc), detail)
        return await self.lifecycle.change(doc, "fail", messages.start_failed(doc, cause or phase, self.backend.title),
                                           when=same_run(doc),
                                           note=messages.failure(detail, step=phase))

    async def stop_instance(self, doc: dict) -> None:
        await self.backend.stop(self.backend.ref(self.spec(doc)))

    async def finish_delete(self, doc: dict, purge: bool) -> dict:
        await self.backend.remove(self.backend.ref(self.spec(doc)))
        if purge:
            await self.backend.remove_storage(self.spec(doc))
        message = "Workspace and its files deleted" if purge else "Workspace deleted; its files are kept"
        # The placement (Swarm's node) goes with the files: kept files stay where they are.
        return await self.lifecycle.change(doc, "deleted", message, progress=0,
                                           unset=("port", REF, "purge", "endpoint") + (("placement",) if purge else ())
                                           ) or doc

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a step that absorbs the cancellation must not hang shutdown
            await asyncio.wait(tasks, timeout=5)
