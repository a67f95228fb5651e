"""An in-memory workspace backend (WORKSPACE_BACKEND=tests.support.fake_backend:FakeBackend)
for fast lifecycle tests: no engine, no sleeps. It keeps the Backend
contract (services/workspaces/backend.py) and has switches a test turns:

* `gate`: an asyncio.Event launches wait for (slow workspaces);
* `fail_with`: launches raise BackendError(that message) (failing);
* `never_ready`: the IDE answers 503 to everything (never-starting; the
  provisioner waits WORKSPACE_READY_TIMEOUT for it);
* `taken`: host ports something outside holds (port-taken; a port the
  machine really holds counts too);
* `unavailable`: the engine does not answer;
* `usage`, `stats_delay`: what `stats` reports for a running instance, and
  how long it takes to (a slow engine);
* `die()`, `oom()`, `vanish()`: what an engine reports about a running
  instance (exited, OOM-killed, removed outside).

Each running instance is a real loopback listener answering HTTP (on its
published port in direct exposure, else an ephemeral one), so readiness,
which the provisioner checks, and the proxy meet a real socket.

The engine's state (instances, volumes) is per INSTANCE_NAME and outlives a
server, as a real engine's does across a restart.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import AsyncIterator

from services.workspaces.backend import (BackendError, BackendUnavailable, Endpoint, Instance, Launched,
                                         LifecycleEvent, Progress, Run, Usage)
from services.workspaces.docker.ports import HostPorts
from services.workspaces.spec import IdeSpec


@dataclass
class FakeInstance:
    name: str
    ref: str
    workspace_id: str
    port: int | None  # the published port (direct exposure)
    running: bool = True
    listener: asyncio.Server | None = None
    exit_code: int | None = None

    @property
    def endpoint(self) -> Endpoint | None:
        if self.listener is None or not self.listener.sockets:
            return None
        return Endpoint("127.0.0.1", self.listener.sockets[0].getsockname()[1])

    def halt(self, exit_code: int | None = None) -> None:
        self.running, self.exit_code = False, exit_code
        if self.listener is not None:
            self.listener.close()
            self.listener = None


@dataclass
class Engine:
    instances: dict[str, FakeInstance] = field(default_factory=dict)  # by ref
    volumes: set[str] = field(default_factory=set)
    launches: int = 0
    streams: set[asyncio.Queue] = field(default_factory=set)


ENGINES: dict[str, Engine] = {}
_ids = itertools.count(1)


def discard_all() -> None:
    """End the test's fake engines: their IDEs stop listening. A listener
    left behind would hold its port of the range into the next test (a
    one-port range there then finds no free port)."""
    for engine in ENGINES.values():
        for instance in engine.instances.values():
            instance.halt(instance.exit_code)
    ENGINES.clear()


class FakeBackend:
    title = "Docker"  # the contract's messages name Docker
    noun = "container"

    def __init__(self, settings):
        self.settings = settings
        self.engine = ENGINES.setdefault(settings.instance_name, Engine())
        self.errors = 0
        self.gate: asyncio.Event | None = None
        self.fail_with: str | None = None
        self.never_ready = False
        self.taken: set[int] = set()
        self.ports = HostPorts(*settings.workspace_ports)
        self.unavailable = False
        self.usage = Usage(12.5, 300 * 2**20, 2 * 2**30)
        self.stats_delay = 0.0

    # -- what tests look at and do ------------------------------------------------------
    def of(self, workspace_id: str) -> FakeInstance | None:
        return next((i for i in self.engine.instances.values() if i.workspace_id == workspace_id), None)

    def _report(self, workspace_id: str, kind: str, exit_code: int | None = None) -> None:
        instance = self.of(workspace_id)
        assert instance is not None, "no instance to report on"
        instance.halt(exit_code)
        if kind == "removed":
            del self.engine.instances[instance.ref]
        for queue in self.engine.streams:
            queue.put_nowait(LifecycleEvent(kind, workspace_id, instance.ref, exit_code))  # type: ignore[arg-type]

    def die(self, workspace_id: str, exit_code: int = 137) -> None:
        self._report(workspace_id, "died", exit_code)

    def oom(self, workspace_id: str) -> None:
        self._report(workspace_id, "oom", 137)

    def vanish(self, workspace_id: str) -> None:
        self._report(workspace_id, "removed")

    # -- the Backend contract ---------------------------------------------------------------
    def _check(self) -> None:
        if self.unavailable:
            self.errors += 1
            raise BackendUnavailable("the fake engine is switched off")

    async def available(self) -> bool:
        return not self.unavailable

    @property
    def exposed(self) -> bool:
        return self.settings.workspace_exposure == "direct"

    def ref(self, spec: IdeSpec) -> str:
        return spec.name

    async def reserve(self, spec: IdeSpec, run: Run) -> None:
        self._check()
        if self.exposed and spec.placement.get("port") is None:  # as the Docker backend: only direct publishes
            await self._allocate(run)

    async def _allocate(self, run: Run) -> int:
        """The Docker backend's own port book, ports held outside skipped."""
        for port in self.taken:
            self.ports.refused(port)
        return await self.ports.allocate(run)

    async def ensure_storage(self, spec: IdeSpec, run: Run) -> None:
        self._check()
        self.engine.volumes.add(spec.home_volume)

    async def remove_storage(self, spec: IdeSpec) -> None:
        self._check()
        self.engine.volumes.discard(spec.home_volume)

    async def prepare_image(self) -> AsyncIterator[Progress]:
        self._check()
        yield Progress(0, "Checking the image fake")
        yield Progress(100, "Image is available")

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The fake IDE: every request answers 200 (503 while never_ready)."""
        try:
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            status = b"503 Service Unavailable" if self.never_ready else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 8\r\nConnection: close\r\n\r\nfake ide")
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def launch(self, spec: IdeSpec, run: Run) -> Launched:
        self._check()
        await self.remove(self.ref(spec))
        if self.gate is not None:
            await self.gate.wait()
        self._check()
        if self.fail_with:
            raise BackendError(self.fail_with)
        self.engine.launches += 1
        port = spec.placement.get("port") if self.exposed else None
        while True:
            try:
                if port in self.taken:  # publishing it fails, as Docker's does
                    raise OSError("taken outside")
                listener = await asyncio.start_server(self._answer, "127.0.0.1", port or 0, start_serving=False)
                break
            except OSError:
                if port is None:
                    raise
                port = await self._allocate(run)  # choose another, as the Docker backend does
        try:
            await listener.start_serving()
        except BaseException:
            # A run cancelled here (its server stopping) would leave the port
            # bound for the rest of the test session: asyncio's start_server
            # does not close what it bound when cancelled at its last await.
            listener.close()
            raise
        instance = FakeInstance(spec.name, f"fake{next(_ids)}", spec.workspace_id, port, listener=listener)
        self.engine.instances[instance.ref] = instance
        assert instance.endpoint is not None
        return Launched(instance.ref, instance.endpoint)

    def _find(self, ref: str) -> list[FakeInstance]:
        return [i for i in self.engine.instances.values() if ref in (i.ref, i.name)]

    async def stop(self, ref: str) -> None:
        self._check()
        for instance in self._find(ref):
            instance.halt(0 if instance.running else instance.exit_code)

    async def remove(self, ref: str) -> None:
        self._check()
        for instance in self._find(ref):
            instance.halt(instance.exit_code)
            del self.engine.instances[instance.ref]

    def _instance(self, i: FakeInstance) -> Instance:
        return Instance(i.workspace_id, i.ref, i.running, i.endpoint, exit_code=None if i.running else i.exit_code)

    async def inspect(self, ref: str) -> Instance | None:
        self._check()
        return next((self._instance(i) for i in self._find(ref)), None)

    async def list_managed(self) -> list[Instance]:
        self._check()
        return [self._instance(i) for i in self.engine.instances.values()]

    async def stats(self, ref: str) -> Usage | None:
        self._check()
        if self.stats_delay:
            await asyncio.sleep(self.stats_delay)
        running = any(i.running for i in self._find(ref))
        return self.usage if running else None

    async def events(self, since: float | None = None) -> AsyncIterator[LifecycleEvent]:
        self._check()
        queue: asyncio.Queue = asyncio.Queue()
        self.engine.streams.add(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self.engine.streams.discard(queue)
        raise BackendUnavailable("event stream ended")

    def end_event_streams(self) -> None:
        for queue in self.engine.streams:
            queue.put_nowait(None)

    async def check(self) -> list[str]:
        return []

    def identify(self, deployment: str, take_over: bool) -> None:
        self.deployment = deployment

    async def foreign(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        self.end_event_streams()
