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
from typing import Any, AsyncIterator, Literal, Protocol, runtime_checkable

from services.workspaces.spec import IdeSpec


MACHINE_LOST = "the machine running it went away"  # Instance.detail of an instance on a lost machine


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
class Launched:
    ref: str  # the backend's id of the instance it made
    endpoint: Endpoint  # where the server reaches its IDE (the provisioner waits there until it is ready)


@dataclass(frozen=True)
class Instance:
    """An instance this deployment manages, as the engine reports it now.
    `exit_code` and `detail` say why one that is not running stopped, when
    the engine knows (a container's exit code; Swarm: "node down")."""
    workspace_id: str
    ref: str
    running: bool
    endpoint: Endpoint | None = None
    exit_code: int | None = None
    detail: str | None = None


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
    kind: Literal["died", "oom", "removed", "lost"]  # lost: the machine running it went away
    workspace_id: str
    ref: str
    exit_code: int | None = None


class Run(Protocol):
    """One provisioning run of a workspace, as a backend sees it. A backend
    may keep facts of its own in the workspace's document (`record`: the
    Docker backend's host port in direct mode, Swarm's node), read back in
    the next run's `IdeSpec.placement`, and tell the student of a phase of
    its own (`say`: Swarm's "placed on node-2"). Each is a step of the run
    (it raises when the run was superseded)."""

    async def record(self, **placement: Any) -> None:
        """Keep `placement` in the workspace's document (None removes a key).
        `port` is the contract's port field, unique across workspaces: it
        raises pymongo's DuplicateKeyError when another workspace holds it."""

    async def say(self, message: str) -> None:
        """A progress message for the student (no secrets, no engine jargon)."""

    async def held_ports(self, low: int, high: int) -> set[int]:
        """The `port`s other workspaces hold in [low, high]."""

    async def reclaim_port(self, low: int, high: int) -> int | None:
        """Take the port of the workspace stopped (or failed) the longest in
        [low, high] (it gets a new one when it starts); None when none."""


@runtime_checkable
class Backend(Protocol):
    title: str  # the engine's name in messages: "Docker"
    noun: str  # what an instance is called in progress messages: "container", "service"
    errors: int  # failures reaching the engine so far; read by /metrics
    # Whether the IDE is reachable by others than this server (a published
    # port), so that code-server must keep its own password whatever
    # WORKSPACE_IDE_PASSWORD says.
    exposed: bool

    async def available(self) -> bool:
        """True when the engine answers now."""

    async def reserve(self, spec: IdeSpec, run: Run) -> None:
        """Claim what the create's answer must carry before anything runs
        (Docker's direct mode: the public host port, through `run.record`);
        most backends claim nothing. Raises BackendError when it cannot."""

    async def ensure_storage(self, spec: IdeSpec, run: Run) -> None:
        """Make the workspace's persistent home exist and writable by the
        IDE's user (called after `prepare_image`). An engine whose storage
        lives on one machine records which (`run.record`) so the IDE is
        placed there."""

    def prepare_image(self) -> AsyncIterator[Progress]:
        """Make the IDE image available (pull per policy), yielding progress
        that never goes backwards. Raises BackendError when it cannot be had."""

    async def launch(self, spec: IdeSpec, run: Run) -> Launched:
        """Replace any earlier instance of the workspace by a new, started
        one, and say where its IDE will answer. Readiness is not its affair:
        the provisioner waits on the endpoint (and `inspect`s the instance
        meanwhile). Leaves nothing half-made when it raises."""

    def ref(self, spec: IdeSpec) -> str:
        """The backend's name for the workspace's instance (also before it exists)."""

    async def stop(self, ref: str) -> None:
        """Stop the instance, keeping it and its storage; nothing when gone."""

    async def remove(self, ref: str) -> None:
        """Remove the instance (never its storage); nothing when gone."""

    async def remove_storage(self, spec: IdeSpec) -> None:
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
