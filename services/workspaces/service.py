"""The workspace facade the handlers (and the proxy) call: one workspace
per user, created, read, stopped and deleted; who may act on whose; the URL
shown to the user and the endpoint the server connects to."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import urllib.parse
import uuid
from typing import Any, AsyncIterator, Callable

from pymongo.asynchronous.database import AsyncDatabase

from services.accounts import ADMIN_ROLES
from services.errors import ApiError, Conflict, Forbidden, NotFound, ServiceUnavailable
from services.settings import Settings, backend_class, ide_password_on
from services.workspace_hosts import workspace_origin
from services.workspaces import identity, spec
from services.workspaces.backend import Backend, BackendError, BackendUnavailable, Endpoint, Usage
from services.workspaces.culler import Culler
from services.workspaces.usage import UsageSampler
from services.workspaces.events import Events
from services.workspaces.lifecycle import ATTEMPTS, SETTLED, Lifecycle, State
from services.workspaces.provisioner import Provisioner
from services.workspaces.quota import DiskWatch
from services.workspaces.reconcile import Reconciler
from services.workspaces.store import WorkspaceStore, ide_password, utcnow

log = logging.getLogger("apranova.workspaces")
USAGE_TIMEOUT = 3.0  # a first stats reading takes Docker about a second (two samples); past this, "unknown"


def load_backend(settings: Settings) -> Backend:
    """WORKSPACE_BACKEND: a name in settings.BACKENDS or a 'module:Class'
    path; the class is called with the settings."""
    return backend_class(settings.workspace_backend)(settings)


class WorkspaceUnavailable(ServiceUnavailable):
    """The contract's exact 503 when the engine cannot be reached."""

    def __init__(self) -> None:
        super().__init__("Workspace feature not available", "Docker is not accessible from the backend container.",
                         "Please contact your administrator to enable workspace provisioning.")


class WorkspaceService:
    def __init__(self, db: AsyncDatabase, settings: Settings, backend: Backend, password_key: bytes):
        self.settings, self.backend, self.password_key = settings, backend, password_key
        self.store = WorkspaceStore(db)
        self.events = Events(self.store)
        self.lifecycle = Lifecycle(self.store, self.events, uuid.uuid4().hex)
        self.provisioner = Provisioner(self.lifecycle, self.store, backend, settings, password_key)
        self.reconciler = Reconciler(self.lifecycle, self.store, self.provisioner, backend, settings)
        self.culler = Culler(self.lifecycle, self.store, settings, self.halt)
        self.activity = self.culler.activity  # the proxy notes traffic here
        self.usage_sampler = UsageSampler(backend, USAGE_TIMEOUT)
        self.disk = DiskWatch(self.lifecycle, self.store, backend, settings)  # disk quotas: quota.py
        self.culler.rounds.append(self.disk.round)

    # -- what other parts read (metrics, the status socket, the proxy) ------------------
    @property
    def engine_connected(self) -> bool:
        """Following the engine's events now."""
        return self.reconciler.connected

    @property
    def provision_seconds(self) -> Any:
        return self.provisioner.provision_seconds

    @property
    def provisioned_total(self) -> int:
        return self.provisioner.provisioned_total

    def estimate(self) -> float | None:
        """Seconds a start usually takes here (see Provisioner.estimate)."""
        return self.provisioner.estimate()

    async def count_by_state(self) -> dict[str, int]:
        return await self.store.count_by_state(s.value for s in State)

    def address(self, doc: dict) -> tuple[str | None, int | None]:
        """The URL shown to the user and its port. Network exposure: the
        workspace's own origin, served by this server's proxy (PUBLIC_URL's
        scheme and port, else http and PORT), known before provisioning
        ends. Direct: WORKSPACE_URL_TEMPLATE with the published host port."""
        settings = self.settings
        if settings.workspace_exposure == "network":
            url = workspace_origin(settings, doc["owner_id"], "http", settings.port) + "/"
            parts = urllib.parse.urlsplit(url)
            return url, parts.port or (443 if parts.scheme == "https" else 80)
        if doc.get("port") is None and "{port}" in settings.workspace_url_template:
            return None, None
        url = settings.workspace_url_template.format(port=doc.get("port") or "", host_ip=settings.workspace_host_ip,
                                                     user_id=doc["owner_id"])
        return url, doc.get("port")

    def password(self, doc: dict) -> str:
        """The IDE's password for its owner (derived, never stored); "" when
        the IDE has none (behind the proxy: WORKSPACE_IDE_PASSWORD=auto)."""
        keeps = ide_password_on(self.settings) or self.provisioner.exposed
        return ide_password(self.password_key, doc) if keeps else ""

    @staticmethod
    def endpoint(doc: dict) -> Endpoint | None:
        """Where the server connects to reach a running workspace's IDE."""
        found = doc.get("endpoint")
        return Endpoint(found["host"], found["port"]) if doc["state"] == State.RUNNING and found else None

    async def usage(self, docs: list[dict]) -> dict[str, Usage]:
        """CPU and memory now of the running workspaces among `docs`, by id
        (see usage.UsageSampler: kept readings at once, a first one within
        USAGE_TIMEOUT, else unknown: a slow engine never holds up a list)."""
        # The instance's name needs only the ids (lists read documents without the password).
        return await self.usage_sampler.of({
            doc["_id"]: self.backend.ref(spec.build(self.settings, doc, "", self.provisioner.exposed))
            for doc in docs if doc["state"] == State.RUNNING})

    def subscribe(self, workspace_id: str, after: int) -> AsyncIterator[dict]:
        """Events after `after`, then live ones (see events.Events.subscribe)."""
        return self.events.subscribe(workspace_id, after)

    # -- start and stop -------------------------------------------------------------
    def start(self) -> None:
        self.reconciler.start()
        self.culler.start()

    async def close(self) -> None:
        """Stop following and provisioning. Provisioning cut short here is
        finished by the next start's reconciliation."""
        await self.events.close()
        await self.culler.close()
        self.usage_sampler.close()
        self.disk.close()
        await self.reconciler.close()
        await self.provisioner.close()
        await self.backend.close()

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

    async def find(self, user_id: int) -> dict | None:
        """The user's workspace, or None (also when it was deleted)."""
        doc = await self.store.of_owner(user_id)
        return None if doc is None or doc["state"] == State.DELETED else doc

    async def origin_of(self, user_id: int) -> str:
        """The origin of the user's workspace (the profile's workspace_url), "" without one."""
        doc = await self.find(user_id)
        url = self.address(doc)[0] if doc is not None else None
        return url.rstrip("/") if url else ""

    async def get(self, user_id: int) -> dict:
        doc = await self.find(user_id)
        if doc is None:
            raise NotFound("No workspace exists for this user. Create one first.", error="Workspace not found")
        return doc

    @contextlib.asynccontextmanager
    async def _engine_errors(self) -> AsyncIterator[None]:
        """The engine failing in the middle of a stop or delete: the
        contract's 503 (reconciliation finishes the step when it is back),
        or 502 when it refused."""
        try:
            yield
        except BackendUnavailable:
            raise WorkspaceUnavailable() from None
        except BackendError as exc:
            # The engine's words are for the operator (server log); the caller reads what to do.
            log.warning("workspace engine refused a stop or delete: %s", exc.message)
            raise ApiError(502, f"{self.backend.title} error", "The workspace could not be changed just now. Try "
                           "again in a moment; if it keeps failing, tell your trainer.") from None

    async def _require_engine(self) -> None:
        if not await self.backend.available():
            raise WorkspaceUnavailable()

    # -- operations ---------------------------------------------------------------------
    async def create(self, user_id: int, wait: bool = False, read: dict | None = None) -> tuple[dict, bool]:
        """Create (True), or return / start again the existing one (False).
        A deleted or failed workspace is made again (True). The answer
        carries the final port: it is reserved before returning. `read`: the
        user's workspace as the caller just read it (the first try's)."""
        await self._require_engine()
        for _ in range(ATTEMPTS):
            doc = read or await self.store.of_owner(user_id)
            read = None  # a retry reads again
            if doc is None or doc["state"] == State.DELETED:
                await self.disk.admit()  # a new home: refused below the low-water mark (quota.py)
            if doc is None:
                doc, created = await self.lifecycle.begin(user_id, self.settings.workspace_image), True
            elif doc["state"] in (State.DELETED, State.FAILED, State.STOPPED):
                doc, created = await self.lifecycle.again(doc), doc["state"] != State.STOPPED
            elif doc["state"] in (State.STOPPING, State.DELETING):
                raise Conflict(f"The workspace is {doc['state']}; try again in a moment.")
            else:
                return (await self._wait(doc) if wait else await self._reserved(doc)), False
            if doc is not None:
                doc = await self.provisioner.start(doc)
                return (await self._wait(doc) if wait else doc), created
        raise Conflict("The workspace is changing; try again.")  # pragma: no cover

    async def create_counted(self, user_id: int, wait: bool, limits: Any, key: str) -> tuple[dict, bool]:
        """`create`, counted against RATE_LIMIT_WORKSPACE under `key` only
        when it creates a workspace (answered 201: none existed, or it was
        deleted or failed). Starting a stopped workspace, its own files and
        image coming back, and a repeated request on a provisioning or
        running one are not counted: idle culling makes stops common, and a
        student must not be locked out of their own IDE."""
        doc = await self.store.of_owner(user_id)
        if doc is not None and doc["state"] not in (State.DELETED, State.FAILED):
            return await self.create(user_id, wait, doc)
        decision = await limits.hit("workspace", key)
        decision.raise_if_denied("Too many workspace creations. Try again later.")
        created = False
        try:
            doc, created = await self.create(user_id, wait)
        finally:
            if not created:  # it raised, or another request created it a moment before
                await limits.refund("workspace", key, decision)
        return doc, created

    async def _wait(self, doc: dict) -> dict:
        """Wait (bounded by WORKSPACE_WAIT_TIMEOUT) until provisioning
        settles; also notices changes made by other processes."""
        deadline = time.monotonic() + self.settings.workspace_wait_timeout
        while doc["state"] not in SETTLED and (remaining := deadline - time.monotonic()) > 0:
            await self.events.wait(doc["_id"], min(1.0, remaining))
            doc = await self.store.get(doc["_id"]) or doc
        return doc

    async def _reserved(self, doc: dict) -> dict:
        """A create that finds another create of the workspace still
        reserving its port answers once that is done, so that every answer
        carries the port (bounded: the other may have died). The
        reservation logs no event: this re-reads every 0.05 s."""
        deadline = time.monotonic() + 5
        while doc["state"] == State.PROVISIONING and doc.get("reserved") != doc.get("run") and \
                time.monotonic() < deadline:
            await self.events.wait(doc["_id"], 0.05)
            doc = await self.store.get(doc["_id"]) or doc
        return doc

    async def stop(self, user_id: int, reason: str = "student") -> dict:
        await self._require_engine()
        doc = await self.get(user_id)
        if doc["state"] in (State.STOPPED, State.STOPPING, State.DELETING):
            return doc
        return await self.halt(doc, reason) or await self.get(user_id)

    async def halt(self, doc: dict | str, reason: str, messages: tuple[str, str] | None = None,
                   when: Callable[[dict], bool] | None = None) -> dict | None:
        """Stop the instance, keeping its files; ``stop_reason`` (student,
        admin, idle, lifetime) stays on the document until the next start.
        A culler's stop (`messages` given) tells its reason in both events.
        None when the workspace may not be stopped now (or `when` says no)."""
        note = {"reason": reason} if messages else None
        first, stopped = messages or ("Stopping the workspace", "Workspace stopped")
        doc = await self.lifecycle.change(doc, "stop", first, progress=0, note=note, when=when,
                                          fields={"stop_reason": reason, "stopped_at": utcnow()})
        if doc is None:
            return None
        async with self.provisioner.working_on(doc), self._engine_errors():
            await self.provisioner.stop_instance(doc)
        return await self.lifecycle.change(doc, "stopped", stopped, progress=0, note=note) or \
            await self.store.get(doc["_id"])

    async def keep_running(self, user_id: int) -> dict:
        """The student's "keep it running": counts as activity now, and its
        info event replaces a pending warning. 409 unless running."""
        doc = await self.get(user_id)
        kept = await self.lifecycle.change(doc, "keep", "Kept running", note={"kind": "info"})
        if kept is None:
            raise Conflict(f"The workspace is {doc['state']}, not running.")
        return kept

    async def delete(self, user_id: int, purge: bool = False) -> dict:
        """Remove the instance; the files too with ``purge``."""
        await self._require_engine()
        doc = await self.get(user_id)
        if doc["state"] != State.DELETING:
            doc = await self.lifecycle.change(doc, "delete", "Deleting the workspace", progress=0,
                                              fields={"purge": purge})
            if doc is None:
                raise NotFound("No workspace exists for this user.", error="Workspace not found")
        async with self.provisioner.working_on(doc), self._engine_errors():
            return await self.provisioner.finish_delete(doc, purge or doc.get("purge", False))


async def refuse_beside_others(backend: Backend, settings: Settings) -> None:
    """Raise RuntimeError (the server does not start) when another
    deployment's workspaces carry this INSTANCE_NAME: reconciling beside
    them is safe, but two deployments under one name is a mistake to say
    now. An engine that does not answer is not a reason to refuse."""
    try:
        others = await asyncio.wait_for(backend.foreign(), 5)
    except (BackendUnavailable, BackendError, TimeoutError):
        return
    if others:
        await backend.close()
        raise RuntimeError(identity.refusal(settings, sorted(others), sum(others.values())))


async def start(services: Any) -> None:
    """Container starter: an unreachable engine does not stop the server;
    the workspace endpoints answer 503 until it comes back."""
    # The IDE passwords derive from the signing key (a key of their own, not the key itself).
    key = hashlib.sha256(b"apranova workspace passwords:" + services.tokens.secret.encode()).digest()
    backend = load_backend(services.settings)
    backend.identify(await identity.deployment_id(services.db), services.settings.workspace_take_over)
    await refuse_beside_others(backend, services.settings)
    workspaces = WorkspaceService(services.db, services.settings, backend, key)
    services.workspaces = workspaces
    workspaces.start()
    services.on_close(workspaces.close)
    try:  # say at start-up what the first student would otherwise find out
        for warning in await asyncio.wait_for(workspaces.backend.check(), 3):
            log.warning("%s", warning)
    except Exception as exc:  # noqa: BLE001 - a check must never stop the server
        log.warning("workspace start-up check failed: %s", type(exc).__name__)
