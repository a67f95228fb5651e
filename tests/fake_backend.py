"""An in-memory workspace backend (WORKSPACE_BACKEND=tests.fake_backend:FakeBackend)
for fast lifecycle tests: no engine, no sleeps. It keeps the Backend
contract (services/workspaces/backend.py) and has switches a test turns:

* `gate`: an asyncio.Event launches wait for (slow workspaces);
* `fail_with`: launches raise BackendError(that message) (failing);
* `never_ready`: the IDE never answers (never-starting);
* `taken`: host ports something outside holds (port-taken);
* `unavailable`: the engine does not answer;
* `usage`, `stats_delay`: what `stats` reports for a running instance, and
  how long it takes to (a slow engine);
* `die()`, `oom()`, `vanish()`: what an engine reports about a running
  instance (exited, OOM-killed, removed outside).

The engine's state (instances, volumes) is per INSTANCE_NAME and outlives a
server, as a real engine's does across a restart.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import AsyncIterator

from services.workspaces.backend import (BackendError, BackendUnavailable, Endpoint, Instance, Launched,
                                         LifecycleEvent, PortBook, Progress, Usage, WorkspaceSpec)


@dataclass
class FakeInstance:
    name: str
    ref: str
    workspace_id: str
    port: int | None
    running: bool = True


@dataclass
class Engine:
    instances: dict[str, FakeInstance] = field(default_factory=dict)  # by ref
    volumes: set[str] = field(default_factory=set)
    launches: int = 0
    streams: set[asyncio.Queue] = field(default_factory=set)


ENGINES: dict[str, Engine] = {}
_ids = itertools.count(1)


class FakeBackend:
    title = "Docker"  # the contract's messages name Docker

    def __init__(self, settings):
        self.settings = settings
        self.engine = ENGINES.setdefault(settings.instance_name, Engine())
        self.errors = 0
        self.gate: asyncio.Event | None = None
        self.fail_with: str | None = None
        self.never_ready = False
        self.taken: set[int] = set()
        self.unavailable = False
        self.usage = Usage(12.5, 300 * 2**20, 2 * 2**30)
        self.stats_delay = 0.0

    # -- what tests look at and do ------------------------------------------------------
    def of(self, workspace_id: str) -> FakeInstance | None:
        return next((i for i in self.engine.instances.values() if i.workspace_id == workspace_id), None)

    def _report(self, workspace_id: str, kind: str, exit_code: int | None = None) -> None:
        instance = self.of(workspace_id)
        assert instance is not None, "no instance to report on"
        if kind == "removed":
            del self.engine.instances[instance.ref]
        else:
            instance.running = False
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

    def ref(self, spec: WorkspaceSpec) -> str:
        return f"{self.settings.instance_name}-ws-{spec.owner_id}"

    async def reserve(self, spec: WorkspaceSpec, ports: PortBook) -> int | None:
        self._check()
        if self.settings.workspace_exposure != "direct":
            return None  # like the Docker backend: only the direct exposure publishes a port
        return spec.port if spec.port is not None else await self._allocate(ports)

    async def _allocate(self, ports: PortBook) -> int:
        return await ports.allocate(*self.settings.workspace_ports, avoid=self.taken)

    async def ensure_storage(self, spec: WorkspaceSpec) -> None:
        self._check()
        self.engine.volumes.add(self.ref(spec))

    async def remove_storage(self, spec: WorkspaceSpec) -> None:
        self._check()
        self.engine.volumes.discard(self.ref(spec))

    async def prepare_image(self) -> AsyncIterator[Progress]:
        self._check()
        yield Progress(0, "Checking the image fake")
        yield Progress(100, "Image is available")

    async def launch(self, spec: WorkspaceSpec, ports: PortBook) -> Launched:
        self._check()
        await self.remove(self.ref(spec))
        if self.gate is not None:
            await self.gate.wait()
        self._check()
        if self.fail_with:
            raise BackendError(self.fail_with)
        self.engine.launches += 1
        if self.settings.workspace_exposure != "direct":  # reached on its own address, nothing published
            instance = FakeInstance(self.ref(spec), f"fake{next(_ids)}", spec.workspace_id, None)
            self.engine.instances[instance.ref] = instance
            return Launched(instance.ref, Endpoint(f"10.99.0.{next(_ids) % 250 + 2}", 8080), None)
        port = spec.port if spec.port is not None else await self._allocate(ports)
        while port in self.taken:  # publishing it fails, as Docker's does: choose another
            port = await self._allocate(ports)
        instance = FakeInstance(self.ref(spec), f"fake{next(_ids)}", spec.workspace_id, port)
        self.engine.instances[instance.ref] = instance
        return Launched(instance.ref, Endpoint("127.0.0.1", port), port)

    async def wait_ready(self, launched: Launched) -> None:
        self._check()
        instance = self.engine.instances.get(launched.ref)
        if instance is None or not instance.running:
            raise BackendError("The workspace container exited while starting (exit code 1).")
        if self.never_ready:
            raise BackendError(f"The IDE did not answer on port {launched.port} within 0 s.")

    def _find(self, ref: str) -> list[FakeInstance]:
        return [i for i in self.engine.instances.values() if ref in (i.ref, i.name)]

    async def stop(self, ref: str) -> None:
        self._check()
        for instance in self._find(ref):
            instance.running = False

    async def remove(self, ref: str) -> None:
        self._check()
        for instance in self._find(ref):
            del self.engine.instances[instance.ref]

    def _instance(self, i: FakeInstance) -> Instance:
        return Instance(i.workspace_id, i.ref, i.running, Endpoint("127.0.0.1", i.port) if i.port else None)

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
