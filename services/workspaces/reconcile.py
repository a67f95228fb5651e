"""Keeping documents and the engine's instances in line: one watcher per
process follows the backend's lifecycle events (with reconnect and
backoff), and each (re)connection starts with `reconcile`, since events may
have been missed meanwhile (also across a crash or a restart)."""
from __future__ import annotations

import asyncio
import logging
import time

from services.errors import ApiError
from services.settings import Settings
from services.workspaces import messages
from services.workspaces.backend import (MACHINE_LOST, Backend, BackendError, BackendUnavailable, Instance,
                                         LifecycleEvent)
from services.workspaces.lifecycle import Lifecycle, State
from services.workspaces.provisioner import Provisioner, same_run
from services.workspaces.store import WorkspaceStore

log = logging.getLogger("apranova.workspaces")
REMOVED = "The workspace container was removed outside ApraNova."


class Reconciler:
    def __init__(self, lifecycle: Lifecycle, store: WorkspaceStore, provisioner: Provisioner, backend: Backend,
                 settings: Settings):
        self.lifecycle, self.store, self.provisioner, self.backend = lifecycle, store, provisioner, backend
        self.settings = settings
        self.connected = False  # following the engine's events now
        self.closing = False
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._watch(), name="workspace-engine-watcher")

    async def close(self) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
            self.backend.end_event_streams()
            await asyncio.wait([self.task], timeout=5)

    async def _watch(self) -> None:
        backoff = 0.5
        while not self.closing:
            try:
                if not await self.backend.available():
                    raise BackendUnavailable("no answer")
                since = time.time() - 1
                await self.reconcile()
                if self.closing:
                    return
                if not self.connected:
                    log.info("watching %s events", self.backend.title)
                self.connected, backoff = True, 0.5
                async for event in self.backend.events(since):
                    await self.on_event(event)
            except asyncio.CancelledError:
                self.connected = False
                raise
            except BackendUnavailable:
                if self.connected:
                    log.warning("lost %s's event stream; reconnecting", self.backend.title)
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("workspace watcher error")
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def on_event(self, event: LifecycleEvent) -> None:
        """Only a running workspace (or, for a removal, a stopped one) is
        changed here: during provisioning the run itself removes instances
        and watches its own; stop and delete expect the events they cause."""
        ours = lambda doc: doc.get("container_id") == event.ref  # noqa: E731
        doc = await self.store.get(event.workspace_id)
        if doc is None or not ours(doc):
            return
        if event.kind == "lost":
            await self.stopped(doc, "lost", f"The workspace's {self.backend.noun} stopped: {MACHINE_LOST}.",
                               when=ours)
        elif event.kind == "oom":
            await self.stopped(doc, "oom", f"The workspace ran out of memory (limit {self.settings.workspace_memory}) "
                               "and was stopped.", when=ours)
        elif event.kind == "died":
            await self.stopped(doc, "died", f"The workspace container stopped (exit code {event.exit_code}).",
                               when=ours)
        elif await self.stopped(doc, "died", REMOVED, unset=("container_id",), when=ours) is None:
            await self.lifecycle.change(event.workspace_id, "removed", doc["message"], unset=("container_id",),
                                        when=ours, note=messages.internal(REMOVED))

    async def stopped(self, doc: dict, reason: str, detail: str, **options) -> dict | None:
        """A running workspace stopped outside anyone's request (``died``, or
        ``oom`` which leaves it failed): the student's words and the reason,
        the engine's detail for the operator. `doc` as read (a change made
        meanwhile makes `change` read it again)."""
        action = reason if reason in ("oom", "lost") else "died"
        new = await self.lifecycle.change(doc, action, messages.stopped_unexpectedly(doc, reason),
                                          progress=None if action != "died" else 0,
                                          note=messages.failure(detail, reason=reason), **options)
        if new is not None:
            log.warning("workspace %s of user %s stopped (reference %s): %s", doc["_id"], doc["owner_id"],
                        messages.reference(doc), detail)
        return new

    async def reconcile(self) -> None:
        """Provisioning cut short is finished, running documents whose
        instance is gone become stopped, interrupted stops and deletes are
        completed, instances that no document wants are removed (storage,
        the users' files, is never removed here)."""
        by_workspace = {instance.workspace_id: instance for instance in await self.backend.list_managed()}
        busy = self.provisioner.busy
        for doc in await self.store.all():
            instance = by_workspace.pop(doc["_id"], None)
            if doc["_id"] in self.provisioner.tasks or doc["_id"] in busy:
                continue
            try:
                await self._one(doc, instance)
            except (BackendError, ApiError) as exc:
                log.warning("reconciling workspace %s: %s", doc["_id"], exc)
        for instance in by_workspace.values():
            log.info("removing orphan workspace instance %s", instance.ref)
            await self.backend.remove(instance.ref)
        await self.orphan_disks()

    async def orphan_disks(self) -> None:
        """Disk images (quota.py) of homes no workspace owns (its volume is
        gone, and its owner has no workspace, or a deleted one), each logged."""
        remove = getattr(self.backend, "remove_orphan_disks", None)
        if remove is None or not self.settings.workspace_disk_quota:
            return

        async def owners() -> set[int]:  # read after the images are listed (see docker/disk.py's remove_orphans)
            return {doc["owner_id"] for doc in await self.store.all() if doc["state"] != State.DELETED}
        try:
            for home in await remove(owners):
                log.warning("removed the disk image of %s: no workspace owns it", home)
        except BackendError as exc:
            log.warning("disk images not reconciled: %s", exc)

    async def _one(self, doc: dict, instance: Instance | None) -> None:
        running = instance is not None and instance.running
        state, change = doc["state"], self.lifecycle.change
        if state == State.PROVISIONING:
            if doc.get("worker") == self.lifecycle.worker:
                return  # launched by this process a moment ago
            # A new run number supersedes the interrupted one, should its process still be alive;
            # it keeps its port (launch finds one if it has none).
            run = doc.get("run", 0) + 1
            doc = await change(doc, "step", "Resuming after a server restart", when=same_run(doc),
                               note=messages.step("resume"),
                               fields={"worker": self.lifecycle.worker, "run": run, "reserved": run})
            if doc is not None:
                self.provisioner.launch(doc)
        elif state == State.RUNNING and not running and instance is not None and instance.detail == MACHINE_LOST:
            await self.stopped(doc, "lost", f"The workspace's {self.backend.noun} stopped: {MACHINE_LOST}.")
        elif state == State.RUNNING and not running:
            detail = "The workspace container stopped while the server was not watching." if instance else REMOVED
            await self.stopped(doc, "died", detail, unset=() if instance else ("container_id",))
        elif state == State.RUNNING and (instance.ref != doc.get("container_id") or (
                instance.endpoint is not None and doc.get("endpoint") != instance.endpoint.as_dict())):
            fields = {"container_id": instance.ref}
            if instance.endpoint is not None:
                fields["endpoint"] = instance.endpoint.as_dict()
            await change(doc, "adopt", doc["message"], fields=fields,
                         note=messages.internal("Workspace container adopted"))
        elif state in (State.STOPPED, State.FAILED) and running:
            await self.backend.stop(instance.ref)  # the document says it should not run
        elif state == State.STOPPING:
            await self.provisioner.stop_instance(doc)
            await change(doc, "stopped", "Workspace stopped", progress=0)
        elif state == State.DELETING:
            await self.provisioner.finish_delete(doc, doc.get("purge", False))
        elif state == State.DELETED and instance is not None:
            await self.backend.remove(instance.ref)
