"""Workspaces: one code-server container per user, and its lifecycle.

The rules, each in one place:

* One document per user (unique index on ``owner_id``). Every change is a
  compare-and-set on its ``version`` (`_update`), so a double click, two
  processes or a restart mid-provision never make two containers.
* Every change appends an event ``{seq, state, progress, message, at}`` to
  ``workspace_events`` and publishes it in-process (`EventHub`); WebSockets
  replay the log after a client's last ``seq`` and then stream live.
* Provisioning runs in a background task (`_provision`), so ``create``
  answers at once even when the image must be pulled.
* One watcher per process reads Docker's event stream (`_watch`), with
  reconnect and backoff, and turns die/oom/destroy into state changes.
  Each (re)connection starts with `reconcile`, which brings documents and
  labelled containers into line (also after a crash).

States: provisioning -> running -> stopping -> stopped, failed, deleting ->
deleted. A deleted workspace keeps its document (state ``deleted``, no port)
so its event log and ``seq`` continue if it is created again.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import random
import secrets
import shlex
import time
import uuid
from typing import Any, AsyncIterator, Iterable

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.accounts import ADMIN_ROLES
from services.docker import DockerEngine, DockerError, DockerUnavailable, container_config, is_port_taken
from services.errors import ApiError, Conflict, Forbidden, NotFound, ServiceUnavailable
from services.settings import Settings, workspace_memory_bytes, workspace_port_range

log = logging.getLogger("apranova.workspaces")

PROVISIONING, RUNNING, STOPPING, STOPPED, FAILED, DELETING, DELETED = (
    "provisioning", "running", "stopping", "stopped", "failed", "deleting", "deleted")
STATES = (PROVISIONING, RUNNING, STOPPING, STOPPED, FAILED, DELETING, DELETED)
SETTLED = (RUNNING, FAILED, STOPPED, DELETED)
BAD_PORT_SECONDS = 600  # a host port Docker could not bind is skipped this long


class WorkspaceUnavailable(ServiceUnavailable):
    """The contract's exact 503 when Docker cannot be reached."""

    def __init__(self) -> None:
        super().__init__("Workspace feature not available", "Docker is not accessible from the backend container.",
                         "Please contact your administrator to enable workspace provisioning.")


class Superseded(Exception):
    """Someone else (a stop, a delete, the watcher) changed the workspace:
    the provisioning run that notices it just ends."""


class ProvisionFailed(Exception):
    """A provisioning step failed; the message is shown to the user."""


def utcnow() -> str:
    """Now as ISO-8601 Z text with milliseconds (events are often that
    close together). Stored as text because nx-27017 turns datetimes written
    by ``$set`` into naive strings (a measured gap)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def command_of(text: str) -> list[str] | None:
    """WORKSPACE_CMD as the container's argv, split as a POSIX shell splits
    words (quotes keep e.g. a `sh -c '...'` script one argument; settings
    refuse an unreadable one at start-up); None: the image's own command."""
    return shlex.split(text) or None


def event_of(doc: dict) -> dict:
    """The event a document's latest change produced."""
    return {"workspace_id": doc["_id"], "seq": doc["seq"], "state": doc["state"], "progress": doc["progress"],
            "message": doc["message"], "at": doc["updated_at"]}


class EventHub:
    """In-process publish/subscribe of workspace events, one queue per
    subscriber. ``last_seq`` remembers the newest event published per
    watched workspace, so that the poller publishes only what another
    process wrote."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[asyncio.Queue]] = collections.defaultdict(set)
        self.last_seq: dict[str, int] = {}

    def subscribe(self, workspace_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers[workspace_id].add(queue)
        return queue

    def unsubscribe(self, workspace_id: str, queue: asyncio.Queue) -> None:
        queues = self.subscribers.get(workspace_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.subscribers[workspace_id]
                self.last_seq.pop(workspace_id, None)

    def watching_from(self, workspace_id: str, seq: int) -> None:
        """A subscriber has everything up to `seq` (it read the log itself)."""
        self.last_seq[workspace_id] = min(self.last_seq.get(workspace_id, seq), seq)

    def publish(self, workspace_id: str, event: dict) -> None:
        if workspace_id in self.subscribers:
            self.last_seq[workspace_id] = max(self.last_seq.get(workspace_id, 0), event["seq"])
        for queue in self.subscribers.get(workspace_id, ()):
            queue.put_nowait(event)


class PullProgress:
    """Docker pull messages -> one percentage that never goes backwards.

    Docker first announces every layer ('Already exists', 'Pulling fs
    layer', 'Waiting'), then reports the transfers. The percentage moves only
    on transfers: computed after the first announcement, a shared base layer
    that already exists would read as 100% before anything was downloaded."""

    def __init__(self) -> None:
        self.layers: dict[str, float] = {}
        self.percent = 0

    def update(self, message: dict) -> int:
        layer, status = message.get("id"), message.get("status", "")
        if layer and (status.startswith("Pulling fs layer") or status.startswith("Waiting")):
            self.layers.setdefault(layer, 0.0)
            return self.percent
        if layer and status == "Already exists":
            self.layers[layer] = 1.0
            return self.percent
        if layer and status.startswith("Downloading"):
            detail = message.get("progressDetail") or {}
            if detail.get("total"):
                self.layers[layer] = 0.8 * min(1.0, detail.get("current", 0) / detail["total"])
        elif layer and status.startswith("Extracting"):
            detail = message.get("progressDetail") or {}
            if detail.get("total"):
                self.layers[layer] = 0.8 + 0.2 * min(1.0, detail.get("current", 0) / detail["total"])
        elif layer and status in ("Download complete", "Verifying Checksum"):
            self.layers[layer] = max(self.layers.get(layer, 0.0), 0.8)
        elif layer and status == "Pull complete":
            self.layers[layer] = 1.0
        if self.layers:
            self.percent = max(self.percent, int(100 * sum(self.layers.values()) / len(self.layers)))
        return self.percent


class WorkspaceService:
    def __init__(self, db: AsyncDatabase, settings: Settings, engine: DockerEngine | None):
        self.workspaces = db.workspaces
        self.events = db.workspace_events
        self.settings = settings
        self.engine = engine
        self.instance = settings.instance_name
        self.worker = uuid.uuid4().hex  # this process, in documents it provisions
        self.hub = EventHub()
        self.tasks: dict[str, asyncio.Task] = {}  # workspace id -> provisioning task in this process
        self.busy: set[str] = set()  # workspace ids a stop/delete in this process is working on
        self.sockets: set[Any] = set()  # open WebSockets (anything with close(code, reason))
        self.provision_seconds: collections.deque[float] = collections.deque(maxlen=1000)
        self.provisioned_total = 0
        self.docker_connected = False
        self._bad_ports: dict[int, float] = {}
        self._oom: set[str] = set()
        self._watcher: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None
        self._closing = False

    # -- what other parts read (metrics) --------------------------------------------
    @property
    def open_sockets(self) -> int:
        return len(self.sockets)

    async def count_by_state(self) -> dict[str, int]:
        counts = {state: 0 for state in STATES}
        async for doc in self.workspaces.find({}, {"state": 1}):
            counts[doc["state"]] = counts.get(doc["state"], 0) + 1
        return counts

    # -- start and stop -------------------------------------------------------------
    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch(), name="workspace-docker-watcher")
        self._poller = asyncio.create_task(self._poll_other_processes(), name="workspace-event-poller")

    async def _poll_other_processes(self, interval: float = 1.0) -> None:
        """Several server processes share one database: events another
        process logged reach this process's sockets within `interval`
        (sockets drop anything they already have, by seq)."""
        while not self._closing:
            await asyncio.sleep(interval)
            watched = list(self.hub.subscribers)
            if not watched:
                continue
            try:
                for start in range(0, len(watched), 500):
                    async for doc in self.workspaces.find({"_id": {"$in": watched[start:start + 500]}},
                                                          {"seq": 1}):
                        last = self.hub.last_seq.get(doc["_id"])
                        if last is not None and doc["seq"] > last:
                            for event in await self.events_after(doc["_id"], last, doc["seq"]):
                                self.hub.publish(doc["_id"], event)
            except Exception as exc:  # noqa: BLE001 - the database may be away for a moment
                log.warning("event poller: %s", type(exc).__name__)

    async def close(self) -> None:
        """Stop watching and provisioning. Provisioning cut short here is
        finished by the next start's reconciliation."""
        self._closing = True
        for socket in list(self.sockets):
            try:
                socket.close(1001, "Server shutting down")
            except Exception:  # noqa: BLE001 - closing must go on
                pass
        tasks = [t for t in (self._watcher, self._poller, *self.tasks.values()) if t]
        for task in tasks:
            task.cancel()
        if self.engine:
            self.engine.end_event_streams()
        if tasks:  # bounded: a provisioning step that absorbs the cancellation must not hang shutdown
            await asyncio.wait(tasks, timeout=5)
        if self.engine:
            await self.engine.close()

    # -- names ----------------------------------------------------------------------
    def container_name(self, user_id: int) -> str:
        return f"{self.instance}-ws-{user_id}"

    def volume_name(self, user_id: int) -> str:
        return f"{self.instance}-ws-{user_id}-project"

    def labels(self, doc: dict) -> dict[str, str]:
        return {"apranova.managed": "true", "apranova.instance": self.instance,
                "apranova.user_id": str(doc["owner_id"]), "apranova.workspace_id": doc["_id"]}

    def url(self, doc: dict) -> str | None:
        if doc.get("port") is None:
            return None
        return self.settings.workspace_url_template.format(port=doc["port"], host_ip=self.settings.workspace_host_ip,
                                                           user_id=doc["owner_id"])

    # -- access -----------------------------------------------------------------------
    @staticmethod
    def target_user(actor: dict, user_id: int | None) -> int:
        """Whose workspace a request acts on: the caller's own, or with
        ``?user_id=`` (admins only) someone else's."""
        if user_id is None or user_id == actor["_id"]:
            return actor["_id"]
        if actor.get("role") not in ADMIN_ROLES:
            raise Forbidden("Only administrators may act on another user's workspace.")
        return user_id

    async def _require_docker(self) -> DockerEngine:
        if self.engine is None or not await self.engine.ping():
            raise WorkspaceUnavailable()
        return self.engine

    async def find(self, user_id: int) -> dict | None:
        """The user's workspace, or None (also when it was deleted)."""
        doc = await self.workspaces.find_one({"owner_id": user_id})
        return None if doc is None or doc["state"] == DELETED else doc

    async def get(self, user_id: int) -> dict:
        doc = await self.find(user_id)
        if doc is None:
            raise NotFound("No workspace exists for this user. Create one first.", error="Workspace not found")
        return doc

    async def events_after(self, workspace_id: str, after: int, upto: int | None = None) -> list[dict]:
        query: dict[str, Any] = {"workspace_id": workspace_id, "seq": {"$gt": after}}
        if upto is not None:
            query["seq"]["$lte"] = upto
        return [event async for event in self.events.find(query, {"_id": 0}).sort("seq", 1)]

    # -- the document and its event log -------------------------------------------
    async def _update(self, doc: dict, message: str, *, state: str | None = None, progress: int | None = None,
                      fields: dict | None = None, unset: Iterable[str] = ()) -> dict | None:
        """Compare-and-set on ``version``: apply the change and log its event
        only if nobody changed the document since `doc` was read. Returns
        the new document, or None when someone else got there first."""
        now = utcnow()
        changes: dict[str, Any] = {"version": doc["version"] + 1, "seq": doc["seq"] + 1, "message": message,
                                   "updated_at": now, **(fields or {})}
        if state is not None:
            changes["state"] = state
        if progress is not None:
            changes["progress"] = progress
        update: dict[str, Any] = {"$set": changes}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        result = await self.workspaces.update_one({"_id": doc["_id"], "version": doc["version"]}, update)
        if result.modified_count != 1:
            return None
        new = {**doc, **changes}
        for name in unset:
            new.pop(name, None)
        await self._record(new)
        return new

    async def _record(self, doc: dict) -> None:
        event = event_of(doc)
        try:
            await self.events.insert_one(dict(event))
        except DuplicateKeyError:  # pragma: no cover - seq comes from a won compare-and-set
            log.warning("event %s/%d already logged", doc["_id"], doc["seq"])
        self.hub.publish(doc["_id"], event)

    async def _transition(self, workspace_id: str, message: str, *, allowed: Iterable[str], **changes: Any) -> dict | None:
        """Re-read and compare-and-set until the change applies, or the
        workspace is no longer in one of the `allowed` states (-> None)."""
        for _ in range(20):
            doc = await self.workspaces.find_one({"_id": workspace_id})
            if doc is None or doc["state"] not in allowed:
                return None
            new = await self._update(doc, message, **changes)
            if new is not None:
                return new
        raise Conflict("The workspace is changing; try again.")  # pragma: no cover

    # -- REST operations ----------------------------------------------------------------
    async def create(self, user_id: int, wait: bool = False) -> tuple[dict, bool]:
        """Create (201, True), or return / start again the existing one
        (200, False). A deleted or failed workspace is made again (True)."""
        await self._require_docker()
        for _ in range(20):
            doc = await self.workspaces.find_one({"owner_id": user_id})
            if doc is None:
                doc, created = await self._insert(user_id), True
                if doc is None:
                    continue  # a simultaneous call inserted it first
            elif doc["state"] in (DELETED, FAILED, STOPPED):
                created = doc["state"] != STOPPED
                message = "Workspace requested" if created else "Starting the workspace again"
                fields = {"run": doc.get("run", 0) + 1, "worker": self.worker, "provision_started": utcnow(),
                          "container_id": None}
                if doc["state"] == DELETED:
                    fields["password"] = secrets.token_urlsafe(18)
                    fields["created_at"] = utcnow()
                doc = await self._update(doc, message, state=PROVISIONING, progress=0, fields=fields)
                if doc is None:
                    continue
            elif doc["state"] in (STOPPING, DELETING):
                raise Conflict(f"The workspace is {doc['state']}; try again in a moment.")
            else:
                return (await self._wait(doc) if wait else doc), False
            self._launch(doc)
            return (await self._wait(doc) if wait else doc), created
        raise Conflict("The workspace is changing; try again.")  # pragma: no cover

    async def _insert(self, user_id: int) -> dict | None:
        now = utcnow()
        doc = {"_id": uuid.uuid4().hex, "owner_id": user_id, "state": PROVISIONING, "progress": 0, "version": 1,
               "seq": 1, "message": "Workspace requested", "password": secrets.token_urlsafe(18),
               "run": 1, "worker": self.worker, "provision_started": now, "container_id": None,
               "image": self.settings.workspace_image, "created_at": now, "updated_at": now}
        try:
            await self.workspaces.insert_one(doc)
        except DuplicateKeyError:
            return None
        await self._record(doc)
        return doc

    async def _wait(self, doc: dict) -> dict:
        """Wait (bounded by WORKSPACE_WAIT_TIMEOUT) until provisioning
        settles; also notices changes made by other processes."""
        queue = self.hub.subscribe(doc["_id"])
        deadline = time.monotonic() + self.settings.workspace_wait_timeout
        try:
            while doc["state"] not in SETTLED and (remaining := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(queue.get(), min(1.0, remaining))
                except asyncio.TimeoutError:
                    pass
                doc = await self.workspaces.find_one({"_id": doc["_id"]}) or doc
            return doc
        finally:
            self.hub.unsubscribe(doc["_id"], queue)

    async def stop(self, user_id: int) -> dict:
        engine = await self._require_docker()
        doc = await self.get(user_id)
        if doc["state"] in (STOPPED, STOPPING, DELETING):
            return doc
        doc = await self._transition(doc["_id"], "Stopping the workspace", state=STOPPING, progress=0,
                                     allowed=(PROVISIONING, RUNNING, FAILED))
        if doc is None:
            return await self.get(user_id)
        self.busy.add(doc["_id"])
        try:
            async with docker_errors():
                await engine.stop_container(self.container_name(user_id))
            return await self._transition(doc["_id"], "Workspace stopped", state=STOPPED, progress=0,
                                          allowed=(STOPPING,)) or await self.get(user_id)
        finally:
            self.busy.discard(doc["_id"])

    async def delete(self, user_id: int, purge: bool = False) -> dict:
        """Remove the container; the files volume too with ``purge``."""
        engine = await self._require_docker()
        doc = await self.get(user_id)
        if doc["state"] != DELETING:
            doc = await self._transition(doc["_id"], "Deleting the workspace", state=DELETING, progress=0,
                                         fields={"purge": purge}, allowed=tuple(s for s in STATES if s != DELETED))
            if doc is None:
                raise NotFound("No workspace exists for this user.", error="Workspace not found")
        self.busy.add(doc["_id"])
        try:
            async with docker_errors():
                return await self._finish_delete(engine, doc, purge or doc.get("purge", False))
        finally:
            self.busy.discard(doc["_id"])

    async def _finish_delete(self, engine: DockerEngine, doc: dict, purge: bool) -> dict:
        await engine.remove_container(self.container_name(doc["owner_id"]))
        if purge:
            await engine.remove_volume(self.volume_name(doc["owner_id"]))
        message = "Workspace and its files deleted" if purge else "Workspace deleted; its files are kept"
        return await self._transition(doc["_id"], message, state=DELETED, progress=0, allowed=(DELETING,),
                                      unset=("port", "container_id", "purge")) or doc

    # -- provisioning ---------------------------------------------------------------------
    def _launch(self, doc: dict) -> None:
        task = asyncio.create_task(self._provision(doc), name=f"provision-{doc['_id']}")
        self.tasks[doc["_id"]] = task
        task.add_done_callback(lambda _t, key=doc["_id"]: self.tasks.pop(key, None) if self.tasks.get(key) is _t
                               else None)

    async def _step(self, doc: dict, progress: int, message: str, **changes: Any) -> dict:
        """One provisioning step as a compare-and-set; raises Superseded
        when the run is no longer the current one."""
        while True:
            new = await self._update(doc, message, progress=max(progress, doc["progress"]), **changes)
            if new is not None:
                return new
            doc = await self._current_run(doc)

    async def _current_run(self, doc: dict, projection: dict | None = None) -> dict:
        """The document as stored now, if `doc`'s provisioning run is still
        the current one; else raises Superseded."""
        current = await self.workspaces.find_one({"_id": doc["_id"]}, projection)
        if current is None or current["state"] != PROVISIONING or current.get("run") != doc.get("run"):
            raise Superseded()
        return current

    async def _provision(self, doc: dict) -> None:
        """One provisioning run. A stop or delete does not cancel it (a
        cancelled Docker call may still complete in dockerd): the run notices
        at its next step that it was superseded and undoes what it made."""
        started = time.monotonic()
        engine = self.engine
        created: list[str] = []  # ids of containers this run made
        try:
            if engine is None:
                raise DockerUnavailable("no Docker engine configured")
            doc = await self._step(doc, 5, "Preparing the files volume")
            await engine.ensure_volume(self.volume_name(doc["owner_id"]), self.labels(doc))
            doc = await self._ensure_image(engine, doc)
            doc = await self._ensure_container(engine, doc, created)
            doc = await self._step(doc, 90, "Waiting for the IDE to answer")
            await self._probe(engine, doc)
            await self._step(doc, 100, "Workspace is running", state=RUNNING)
            self.provision_seconds.append(time.monotonic() - started)
            self.provisioned_total += 1
        except Superseded:
            await self._abandon(doc["_id"], created)
        except asyncio.CancelledError:
            raise  # shutdown: the next start's reconciliation finishes the run
        except ProvisionFailed as exc:
            await self._fail(doc, str(exc))
        except DockerUnavailable:
            await self._fail(doc, "Docker stopped answering while the workspace was being prepared.")
        except DockerError as exc:
            await self._fail(doc, f"Docker refused to create the workspace: {exc.message}")
        except Exception:  # noqa: BLE001 - a run must end in a state, never hang in provisioning
            log.exception("provisioning workspace %s failed", doc["_id"])
            await self._fail(doc, "Provisioning failed because of an internal error.")

    async def _abandon(self, workspace_id: str, created: list[str]) -> None:
        """A superseded run removes (deleted) or stops (stopped) the
        container it created, in case that landed after the stop or delete."""
        current = await self.workspaces.find_one({"_id": workspace_id})
        state = current["state"] if current else DELETED
        if not created or self.engine is None or state == PROVISIONING:
            return
        try:
            for container_id in created:
                if state in (DELETING, DELETED):
                    await self.engine.remove_container(container_id)
                elif state in (STOPPING, STOPPED, FAILED):
                    await self.engine.stop_container(container_id)
        except (DockerUnavailable, DockerError) as exc:
            log.warning("could not undo an abandoned run of %s: %s", workspace_id, exc)

    async def _fail(self, doc: dict, message: str) -> None:
        log.warning("workspace %s of user %s failed: %s", doc["_id"], doc["owner_id"], message)
        try:
            await self._step(doc, doc["progress"], message, state=FAILED)
        except Superseded:
            pass

    async def _ensure_image(self, engine: DockerEngine, doc: dict) -> dict:
        image, policy = self.settings.workspace_image, self.settings.workspace_pull_policy
        doc = await self._step(doc, 8, f"Checking the image {image}")
        present = await engine.image_exists(image)
        if not present and policy == "never":
            raise ProvisionFailed(f"The workspace image {image} is not on the Docker host and the pull policy "
                                  "is 'never'.")
        if present and policy != "always":
            return await self._step(doc, 70, "Image is available")
        doc = await self._step(doc, 10, f"Pulling the image {image}")
        progress, last = PullProgress(), time.monotonic()
        try:
            async for message in engine.pull(image):
                percent = progress.update(message)
                overall = 10 + percent * 60 // 100
                if overall > doc["progress"] and time.monotonic() - last > 0.25:
                    doc = await self._step(doc, overall, f"Pulling the image {image}: {percent}%")
                    last = time.monotonic()
        except DockerError as exc:
            if not await engine.image_exists(image):
                raise ProvisionFailed(f"The workspace image {image} could not be pulled: {exc.message}") from None
            log.warning("pull of %s failed (%s); using the local copy", image, exc.message)
        return await self._step(doc, 70, "Image is available")

    async def _allocate_port(self, doc: dict) -> dict:
        """Reserve a free host port in the document; the unique index on
        ``port`` makes two workspaces with one port impossible."""
        low, high = workspace_port_range(self.settings)
        now = time.monotonic()
        self._bad_ports = {p: t for p, t in self._bad_ports.items() if now - t < BAD_PORT_SECONDS}
        for _ in range(50):
            used = {d["port"] async for d in self.workspaces.find({"port": {"$gte": low, "$lte": high}}, {"port": 1})}
            free = [p for p in range(low, high + 1) if p not in used and p not in self._bad_ports]
            port = random.choice(free[:64]) if free else await self._reclaim_port(doc, low, high)
            if port is None:
                raise ProvisionFailed("No free workspace port is left; ask an administrator to widen "
                                      "WORKSPACE_PORT_RANGE.")
            try:
                return await self._step(doc, 72, f"Reserved port {port}", fields={"port": port})
            except DuplicateKeyError:
                continue  # another workspace took it a moment ago
        raise ProvisionFailed("Could not reserve a workspace port; try again.")

    async def _reclaim_port(self, doc: dict, low: int, high: int) -> int | None:
        """With every port of the range taken, take one from the workspace
        that has been stopped (or failed) the longest; it gets a new port
        the next time it starts, as its container is made afresh then.
        None when no such workspace exists."""
        query = {"state": {"$in": [STOPPED, FAILED]}, "port": {"$gte": low, "$lte": high},
                 "_id": {"$ne": doc["_id"]}}
        async for victim in self.workspaces.find(query).sort("updated_at", 1).limit(5):
            if victim["_id"] in self.busy or victim["_id"] in self.tasks:
                continue
            message = ("Its port was given to another workspace while it was stopped; "
                       "it gets a new one when it starts.")
            if await self._update(victim, message, unset=("port",)) is not None:
                log.info("port %s reclaimed from stopped workspace %s", victim["port"], victim["_id"])
                return victim["port"]
        return None

    async def _ensure_container(self, engine: DockerEngine, doc: dict, created: list[str]) -> dict:
        name = self.container_name(doc["owner_id"])
        # Forget the earlier container first, so that the watcher ignores the
        # events of its removal; then clear the leftover of an earlier run.
        doc = await self._step(doc, 74, "Creating the container", fields={"container_id": None})
        await engine.remove_container(name)
        if doc.get("port") is None:
            doc = await self._allocate_port(doc)
        settings = self.settings
        cmd, memory = command_of(settings.workspace_cmd), workspace_memory_bytes(settings)
        for _ in range(10):
            config = container_config(
                image=settings.workspace_image, labels=self.labels(doc), env={"PASSWORD": doc["password"]},
                container_port=settings.workspace_container_port, host_ip=settings.workspace_host_ip,
                host_port=doc["port"], volume=self.volume_name(doc["owner_id"]), cpus=settings.workspace_cpus,
                memory=memory, pids=settings.workspace_pids,
                network=settings.workspace_network, cmd=cmd)
            try:
                container_id = await engine.create_container(name, config)
                created.append(container_id)
            except DockerError as exc:
                if exc.status == 409:  # the name is taken: a leftover appeared; clear it and retry
                    await engine.remove_container(name)
                    continue
                raise
            doc = await self._step(doc, 80, "Starting the container", fields={"container_id": container_id})
            try:
                await engine.start_container(container_id)
                return doc
            except DockerError as exc:
                if not is_port_taken(exc):
                    await engine.remove_container(container_id)
                    raise
                log.info("host port %s is taken outside ApraNova; choosing another", doc["port"])
                self._bad_ports[doc["port"]] = time.monotonic()
                await engine.remove_container(container_id)
                doc = await self._allocate_port(doc)
        raise ProvisionFailed("Could not start the workspace container; try again.")

    async def _probe(self, engine: DockerEngine, doc: dict) -> None:
        """`running` means the IDE answers HTTP, not merely that the
        container started."""
        host_ip = self.settings.workspace_host_ip
        host = self.settings.workspace_ready_host or (host_ip if host_ip not in ("", "0.0.0.0", "::") else "127.0.0.1")
        timeout = self.settings.workspace_ready_timeout
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 1
        while True:
            if await http_answers(host, doc["port"]):
                return
            if time.monotonic() > deadline:
                raise ProvisionFailed(f"The IDE did not answer on port {doc['port']} within {timeout:g} s.")
            if time.monotonic() > next_check:
                next_check = time.monotonic() + 1
                await self._current_run(doc, {"state": 1, "run": 1})
                info = await engine.inspect_container(doc["container_id"])
                if info is None or not info["State"].get("Running"):
                    code = info["State"].get("ExitCode") if info else None
                    raise ProvisionFailed(f"The workspace container exited while starting (exit code {code}).")
            await asyncio.sleep(0.2)

    # -- watching Docker --------------------------------------------------------------------
    async def _watch(self) -> None:
        """Follow Docker's events for this instance's containers; reconnect
        with backoff, and reconcile after every (re)connection since events
        may have been missed meanwhile."""
        backoff = 0.5
        labels = {"apranova.instance": self.instance}
        while not self._closing:
            try:
                if self.engine is None or not await self.engine.ping():
                    raise DockerUnavailable("no answer")
                since = int(time.time()) - 1
                await self.reconcile()
                if self._closing:
                    return
                if not self.docker_connected:
                    log.info("watching Docker events at %s", self.engine.host)
                self.docker_connected, backoff = True, 0.5
                async for event in self.engine.events(labels, since=since):
                    await self._on_docker_event(event)
            except asyncio.CancelledError:
                raise
            except DockerUnavailable:
                if self.docker_connected:
                    log.warning("lost Docker's event stream; reconnecting")
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("workspace watcher error")
            self.docker_connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _on_docker_event(self, event: dict) -> None:
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        container_id = actor.get("ID") or event.get("id") or ""
        workspace_id = (actor.get("Attributes") or {}).get("apranova.workspace_id")
        if action == "oom":
            self._oom.add(container_id)
            return
        if action not in ("die", "destroy") or not workspace_id:
            return
        exit_code = (actor.get("Attributes") or {}).get("exitCode")
        oom = container_id in self._oom
        self._oom.discard(container_id)
        for _ in range(20):
            doc = await self.workspaces.find_one({"_id": workspace_id})
            # Only a running workspace (or, for a removal, a stopped one) is
            # changed here: during provisioning the run itself removes
            # containers and watches its own (`_probe`); stop and delete
            # expect the events they cause.
            watched = (RUNNING, STOPPED, FAILED) if action == "destroy" else (RUNNING,)
            if doc is None or doc.get("container_id") != container_id or doc["state"] not in watched:
                return
            if action == "destroy":
                state, message = (STOPPED if doc["state"] == RUNNING else doc["state"],
                                  "The workspace container was removed outside ApraNova.")
            elif oom:
                state, message = FAILED, (f"The workspace ran out of memory (limit {self.settings.workspace_memory}) "
                                          "and was stopped.")
            else:
                state, message = STOPPED, f"The workspace container stopped (exit code {exit_code})."
            unset = ("container_id",) if action == "destroy" else ()
            progress = doc["progress"] if state == FAILED else 0
            if await self._update(doc, message, state=state, progress=progress, unset=unset) is not None:
                return

    async def reconcile(self) -> None:
        """Bring documents and this instance's labelled containers into
        line: provisioning cut short is finished, running documents whose
        container is gone become stopped, interrupted stops and deletes are
        completed, containers that no document wants are removed (volumes,
        the users' files, are never removed here)."""
        engine = self.engine
        if engine is None:
            return
        containers = await engine.list_containers({"apranova.instance": self.instance, "apranova.managed": "true"})
        by_workspace: dict[str, dict] = {}
        for container in containers:
            by_workspace[(container.get("Labels") or {}).get("apranova.workspace_id", "")] = container
        async for doc in self.workspaces.find({}):
            container = by_workspace.pop(doc["_id"], None)
            if doc["_id"] in self.tasks or doc["_id"] in self.busy:
                continue
            try:
                await self._reconcile_one(engine, doc, container)
            except (DockerError, ApiError) as exc:
                log.warning("reconciling workspace %s: %s", doc["_id"], exc)
        for container in by_workspace.values():
            log.info("removing orphan workspace container %s", container["Names"])
            await engine.remove_container(container["Id"])

    async def _reconcile_one(self, engine: DockerEngine, doc: dict, container: dict | None) -> None:
        running = container is not None and container.get("State") == "running"
        state = doc["state"]
        if state == PROVISIONING:
            if doc.get("worker") == self.worker:
                return  # launched by this process a moment ago
            # A new run number supersedes the interrupted one, should its
            # process still be alive.
            doc = await self._update(doc, "Resuming provisioning after a restart",
                                     fields={"worker": self.worker, "run": doc.get("run", 0) + 1})
            if doc is not None:
                self._launch(doc)
        elif state == RUNNING and not running:
            message = ("The workspace container stopped while the server was not watching." if container
                       else "The workspace container was removed outside ApraNova.")
            await self._update(doc, message, state=STOPPED, progress=0,
                               unset=() if container else ("container_id",))
        elif state == RUNNING and container["Id"] != doc.get("container_id"):
            await self._update(doc, "Workspace container adopted", fields={"container_id": container["Id"]})
        elif state in (STOPPED, FAILED) and running:
            await engine.stop_container(container["Id"])  # the document says it should not run
        elif state == STOPPING:
            await engine.stop_container(self.container_name(doc["owner_id"]))
            await self._update(doc, "Workspace stopped", state=STOPPED, progress=0)
        elif state == DELETING:
            await self._finish_delete(engine, doc, doc.get("purge", False))
        elif state == DELETED and container is not None:
            await engine.remove_container(container["Id"])


@contextlib.asynccontextmanager
async def docker_errors() -> AsyncIterator[None]:
    """Docker failing in the middle of a stop or delete: the contract's 503
    (the interrupted step is finished by reconciliation when Docker is
    back), or 502 when the engine refused."""
    try:
        yield
    except DockerUnavailable:
        raise WorkspaceUnavailable() from None
    except DockerError as exc:
        raise ApiError(502, "Docker error", f"Docker refused the operation: {exc.message}") from None


async def http_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when something answers HTTP on host:port (any status: code-server
    answers 302 to its login page)."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(f"GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()


async def start(services: Any) -> None:
    """Container starter: Docker unreachable does not stop the server; the
    workspace endpoints answer 503 until it comes back."""
    settings = services.settings
    try:
        engine: DockerEngine | None = DockerEngine(settings.docker_host)
    except ValueError as exc:
        log.error("DOCKER_HOST %r cannot be used (%s); workspaces are unavailable", settings.docker_host, exc)
        engine = None
    workspaces = WorkspaceService(services.db, settings, engine)
    services.workspaces = workspaces
    workspaces.start()
    services.on_close(workspaces.close)
