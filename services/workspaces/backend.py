"""The interface between the workspace lifecycle and a container engine.

A backend runs one isolated IDE per workspace and knows nothing about
states, documents or events: it imports nothing from the lifecycle. It
reports progress by yielding and failure by raising `BackendUnavailable`
(the engine cannot be reached) or `BackendError` (a refusal, worded for the
user); the provisioner turns both into events and messages. The shape
follows JupyterHub's Spawner (start/stop/poll) and DockerSpawner's
create/start/stop_object.

Adding an engine = one module with a class implementing `Backend`, named by
WORKSPACE_BACKEND (see `service.load_backend`). Every method may be called
from several processes at once for the same workspace: each must be
idempotent (ensure, not create; stopping or removing what is gone is fine).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Literal, Protocol, runtime_checkable


class BackendUnavailable(Exception):
    """The engine cannot be reached (socket missing, daemon down, timeout)."""


class BackendError(Exception):
    """The engine refused, or the workspace could not be made to run; the
    message is a sentence the user may read."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BackendExited(BackendError):
    """The instance started, then exited before it was ready. Often
    transient: code-server gives up ("timed out") when its own start takes
    more than 10 s, as on a host busy with a class's burst."""


class BackendRefused(BackendError):
    """The engine itself refused a request (its words in the message), as
    opposed to a workspace that was made but did not run: the student is
    told which of the two happened."""


@dataclass(frozen=True)
class Endpoint:
    """Where the server (not the browser) connects to reach a workspace's IDE."""
    host: str
    port: int

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}


@dataclass(frozen=True)
class WorkspaceSpec:
    """What a backend is told about a workspace. `port` is the public host
    port decided by `reserve` (None when the backend publishes none)."""
    workspace_id: str
    owner_id: int
    password: str
    port: int | None = None


@dataclass(frozen=True)
class Launched:
    ref: str  # the backend's id of the instance it made
    endpoint: Endpoint
    port: int | None  # the public port finally used (direct mode may have had to move it)


@dataclass(frozen=True)
class Instance:
    """An instance this deployment manages, as the engine reports it now."""
    workspace_id: str
    ref: str
    running: bool
    endpoint: Endpoint | None = None


@dataclass(frozen=True)
class Usage:
    """What an instance uses now: CPU in percent of one core (200.0 = two
    cores busy) and memory in bytes without the page cache; None where the
    engine cannot tell."""
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit: int | None = None


@dataclass(frozen=True)
class Progress:
    """One step of preparing the image: `percent` of that phase, 0-100."""
    percent: int
    message: str


@dataclass(frozen=True)
class LifecycleEvent:
    """Something happened to an instance outside a call of ours."""
    kind: Literal["died", "oom", "removed"]
    workspace_id: str
    ref: str
    exit_code: int | None = None


class PortBook(Protocol):
    """Host-port bookkeeping a backend that publishes ports is given by the
    provisioner: the record of which workspace holds which port lives with
    the workspaces (a unique index), not in the engine."""

    async def allocate(self, low: int, high: int, avoid: Iterable[int] = ()) -> int:
        """Claim a free port of [low, high] (none of `avoid`) for this
        workspace; when all are held, the port of the workspace stopped the
        longest (it gets a new one when it starts). Raises BackendError when
        none can be had."""


@runtime_checkable
class Backend(Protocol):
    title: str  # the engine's name in messages: "Docker"
    errors: int  # failures reaching the engine so far; read by /metrics

    async def available(self) -> bool:
        """True when the engine answers now."""

    async def reserve(self, spec: WorkspaceSpec, ports: PortBook) -> int | None:
        """Decide the workspace's public port before anything runs, so the
        create can answer with it: keep `spec.port` when set, else claim a
        free one through `ports`. None when the backend publishes no port.
        Raises BackendError when none is left."""

    async def ensure_storage(self, spec: WorkspaceSpec) -> None:
        """Make the workspace's persistent home exist and writable by the
        IDE's user (called after `prepare_image`)."""

    def prepare_image(self) -> AsyncIterator[Progress]:
        """Make the IDE image available (pull per policy), yielding progress
        that never goes backwards. Raises BackendError when it cannot be had."""

    async def launch(self, spec: WorkspaceSpec, ports: PortBook) -> Launched:
        """Replace any earlier instance of the workspace by a new, started
        one. May move to another port through `ports` when the engine cannot
        publish `spec.port`. Leaves nothing half-made when it raises."""

    async def wait_ready(self, launched: Launched) -> None:
        """Return once the IDE answers as a ready IDE does; raise
        BackendError when it exits or does not within the ready timeout."""

    def ref(self, spec: WorkspaceSpec) -> str:
        """The backend's name for the workspace's instance (also before it exists)."""

    async def stop(self, ref: str) -> None:
        """Stop the instance, keeping it and its storage; nothing when gone."""

    async def remove(self, ref: str) -> None:
        """Remove the instance (never its storage); nothing when gone."""

    async def remove_storage(self, spec: WorkspaceSpec) -> None:
        """Delete the workspace's files for good."""

    async def inspect(self, ref: str) -> Instance | None:
        """The instance now, or None when it does not exist."""

    async def list_managed(self) -> list[Instance]:
        """Every instance this deployment manages (INSTANCE_NAME and its
        identity, see `identify`)."""

    def identify(self, deployment: str, take_over: bool) -> None:
        """Called once before anything else: `deployment` is the id kept in
        the database (services/workspaces/identity.py). Everything made
        from now on carries it; only instances carrying it (or made before
        ids existed) are this deployment's, unless `take_over`."""

    async def foreign(self) -> dict[str, int]:
        """Instances of other deployments under this INSTANCE_NAME, counted
        by their deployment id (start-up refuses to run beside them)."""

    async def stats(self, ref: str) -> Usage | None:
        """CPU and memory of a running instance now (None: not running or
        gone). May take a second (a CPU figure needs two samples): callers
        bound it with a timeout of their own."""

    def events(self, since: float | None = None) -> AsyncIterator[LifecycleEvent]:
        """Lifecycle events of managed instances from `since` (a time.time()
        value) on; raises BackendUnavailable when the stream breaks (the
        caller reconnects and reconciles)."""

    def end_event_streams(self) -> None:
        """Make every reader of `events` return now (shutdown: a cancelled
        reader may have absorbed its cancellation)."""

    async def check(self) -> list[str]:
        """Start-up warnings for the operator (e.g. the image cannot be had)."""

    async def close(self) -> None:
        """End event streams and release connections."""
