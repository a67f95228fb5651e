"""The Docker backend: one container per workspace, through the aiodocker
adapter (services/docker.py).

What lives here and nowhere else: container and volume names, labels, the
Engine-API container body, the direct mode's host ports (a published port
per workspace, taken from WORKSPACE_PORT_RANGE and recorded through the
provisioner's PortBook), the pull policy, and the readiness probe.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import AsyncIterator, Iterator

from services.docker import DockerEngine, DockerError, DockerUnavailable, container_config, is_port_taken
from services.settings import Settings
from services.workspaces.backend import (BackendError, BackendUnavailable, Endpoint, Instance, Launched,
                                         LifecycleEvent, PortBook, Progress, WorkspaceSpec)
from services.workspaces.probe import http_status
from services.workspaces.pull import PullProgress

log = logging.getLogger("apranova.workspaces")
BAD_PORT_SECONDS = 600  # a host port Docker could not bind is skipped this long
HOME = "/home/coder"


@contextlib.contextmanager
def engine_errors(refusal: str) -> Iterator[None]:
    """The adapter's errors as the backend's: `refusal` prefixes the engine's own words."""
    try:
        yield
    except DockerUnavailable as exc:
        raise BackendUnavailable(str(exc)) from None
    except DockerError as exc:
        raise BackendError(f"{refusal}: {exc.message}") from None


class DockerBackend:
    title = "Docker"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.instance = settings.instance_name
        try:
            self.engine: DockerEngine | None = DockerEngine(settings.docker_host)
        except ValueError as exc:
            log.error("DOCKER_HOST %r cannot be used (%s); workspaces are unavailable", settings.docker_host, exc)
            self.engine = None
        self._bad_ports: dict[int, float] = {}
        self._oom: set[str] = set()

    @property
    def errors(self) -> int:
        return self.engine.errors if self.engine is not None else 0

    def _engine(self) -> DockerEngine:
        if self.engine is None:
            raise BackendUnavailable("no usable DOCKER_HOST")
        return self.engine

    async def available(self) -> bool:
        return self.engine is not None and await self.engine.ping()

    # -- names ----------------------------------------------------------------------
    def ref(self, spec: WorkspaceSpec) -> str:
        return f"{self.instance}-ws-{spec.owner_id}"

    def volume_name(self, spec: WorkspaceSpec) -> str:
        return f"{self.instance}-ws-{spec.owner_id}-project"

    def labels(self, spec: WorkspaceSpec) -> dict[str, str]:
        return {"apranova.managed": "true", "apranova.instance": self.instance,
                "apranova.user_id": str(spec.owner_id), "apranova.workspace_id": spec.workspace_id}

    # -- host ports (direct mode) -------------------------------------------------------
    async def reserve(self, spec: WorkspaceSpec, ports: PortBook) -> int | None:
        return spec.port if spec.port is not None else await self._allocate(ports)

    async def _allocate(self, ports: PortBook) -> int:
        """A free port of the range, recorded through `ports` (a unique
        index makes two workspaces with one port impossible)."""
        low, high = self.settings.workspace_ports
        now = time.monotonic()
        self._bad_ports = {p: t for p, t in self._bad_ports.items() if now - t < BAD_PORT_SECONDS}
        for _ in range(50):
            used = await ports.used(low, high)
            free = [p for p in range(low, high + 1) if p not in used and p not in self._bad_ports]
            port = random.choice(free[:64]) if free else await ports.reclaim(low, high)
            if port is None:
                raise BackendError("No free workspace port is left; ask an administrator to widen "
                                   "WORKSPACE_PORT_RANGE.")
            if await ports.claim(port):
                return port
        raise BackendError("Could not reserve a workspace port; try again.")

    def endpoint(self, port: int) -> Endpoint:
        host_ip = self.settings.workspace_host_ip
        host = self.settings.workspace_ready_host or (host_ip if host_ip not in ("", "0.0.0.0", "::") else "127.0.0.1")
        return Endpoint(host, port)

    # -- storage and image ----------------------------------------------------------------
    async def ensure_storage(self, spec: WorkspaceSpec) -> None:
        with engine_errors("Docker refused to create the workspace's volume"):
            await self._engine().ensure_volume(self.volume_name(spec), self.labels(spec))

    async def remove_storage(self, spec: WorkspaceSpec) -> None:
        with engine_errors("Docker refused the operation"):
            await self._engine().remove_volume(self.volume_name(spec))

    async def prepare_image(self) -> AsyncIterator[Progress]:
        engine, image, policy = self._engine(), self.settings.workspace_image, self.settings.workspace_pull_policy
        yield Progress(0, f"Checking the image {image}")
        with engine_errors("Docker refused to create the workspace"):
            present = await engine.image_exists(image)
        if not present and policy == "never":
            raise BackendError(f"The workspace image {image} is not on the Docker host and the pull policy "
                               "is 'never'.")
        if not present or policy == "always":
            yield Progress(4, f"Pulling the image {image}")
            progress = PullProgress()
            try:
                async for message in engine.pull(image):
                    percent = progress.update(message)
                    yield Progress(4 + percent * 96 // 100, f"Pulling the image {image}: {percent}%")
            except DockerUnavailable as exc:
                raise BackendUnavailable(str(exc)) from None
            except DockerError as exc:
                if not await engine.image_exists(image):
                    raise BackendError(f"The workspace image {image} could not be pulled: {exc.message}") from None
                log.warning("pull of %s failed (%s); using the local copy", image, exc.message)
        yield Progress(100, "Image is available")

    # -- containers -------------------------------------------------------------------------
    def _config(self, spec: WorkspaceSpec, port: int) -> dict:
        s = self.settings
        return container_config(
            image=s.workspace_image, labels=self.labels(spec), env={"PASSWORD": spec.password},
            container_port=s.workspace_container_port, host_ip=s.workspace_host_ip, host_port=port,
            volume=self.volume_name(spec), cpus=s.workspace_cpus, memory=s.workspace_memory_bytes,
            pids=s.workspace_pids, network=s.workspace_network, cmd=s.workspace_argv)

    async def launch(self, spec: WorkspaceSpec, ports: PortBook) -> Launched:
        engine, name = self._engine(), self.ref(spec)
        with engine_errors("Docker refused to create the workspace"):
            await engine.remove_container(name)  # the leftover of an earlier run
            port = spec.port if spec.port is not None else await self._allocate(ports)
            for _ in range(10):
                try:
                    container_id = await engine.create_container(name, self._config(spec, port))
                except DockerError as exc:
                    if exc.status == 409:  # the name is taken: a leftover appeared; clear it and retry
                        await engine.remove_container(name)
                        continue
                    raise
                try:
                    await engine.start_container(container_id)
                    return Launched(container_id, self.endpoint(port), port)
                except DockerError as exc:
                    await engine.remove_container(container_id)
                    if not is_port_taken(exc):
                        raise
                log.info("host port %s is taken outside ApraNova; choosing another", port)
                self._bad_ports[port] = time.monotonic()
                port = await self._allocate(ports)
        raise BackendError("Could not start the workspace container; try again.")

    async def wait_ready(self, launched: Launched) -> None:
        """Ready means the IDE answers HTTP, not merely that the container started."""
        timeout = self.settings.workspace_ready_timeout
        host, port = launched.endpoint.host, launched.endpoint.port
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 1
        while True:
            if await http_status(host, port, "/") is not None:
                return
            if time.monotonic() > deadline:
                raise BackendError(f"The IDE did not answer on port {launched.port or port} within {timeout:g} s.")
            if time.monotonic() > next_check:
                next_check = time.monotonic() + 1
                with engine_errors("Docker refused to inspect the workspace"):
                    info = await self._engine().inspect_container(launched.ref)
                if info is None or not info["State"].get("Running"):
                    code = info["State"].get("ExitCode") if info else None
                    raise BackendError(f"The workspace container exited while starting (exit code {code}).")
            await asyncio.sleep(0.2)

    async def stop(self, ref: str) -> None:
        with engine_errors("Docker refused the operation"):
            await self._engine().stop_container(ref)

    async def remove(self, ref: str) -> None:
        with engine_errors("Docker refused the operation"):
            await self._engine().remove_container(ref)

    def _instance(self, container: dict, running: bool) -> Instance:
        labels = container.get("Config", {}).get("Labels") or container.get("Labels") or {}
        ports = [p.get("PublicPort") for p in container.get("Ports") or () if p.get("PublicPort")]
        bindings = (container.get("HostConfig", {}).get("PortBindings") or {}).values()
        ports += [int(b["HostPort"]) for binding in bindings for b in binding or () if b.get("HostPort")]
        return Instance(labels.get("apranova.workspace_id", ""), container["Id"], running,
                        self.endpoint(ports[0]) if ports else None)

    async def inspect(self, ref: str) -> Instance | None:
        with engine_errors("Docker refused to inspect the workspace"):
            info = await self._engine().inspect_container(ref)
        return None if info is None else self._instance(info, bool(info["State"].get("Running")))

    async def list_managed(self) -> list[Instance]:
        with engine_errors("Docker refused to list the workspaces"):
            found = await self._engine().list_containers({"apranova.instance": self.instance,
                                                          "apranova.managed": "true"})
        return [self._instance(c, c.get("State") == "running") for c in found]

    async def events(self, since: float | None = None) -> AsyncIterator[LifecycleEvent]:
        labels = {"apranova.instance": self.instance}
        try:
            async for event in self._engine().events(labels, since=int(since) if since else None):
                for found in self._lifecycle_events(event):
                    yield found
        except DockerUnavailable as exc:
            raise BackendUnavailable(str(exc)) from None

    def _lifecycle_events(self, event: dict) -> Iterator[LifecycleEvent]:
        """Docker's container events as the backend's: an ``oom`` is
        remembered and makes the ``die`` that follows an "oom"."""
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        ref = actor.get("ID") or event.get("id") or ""
        attributes = actor.get("Attributes") or {}
        workspace_id = attributes.get("apranova.workspace_id")
        if action == "oom":
            self._oom.add(ref)
        elif action in ("die", "destroy") and workspace_id:
            oom = ref in self._oom
            self._oom.discard(ref)
            code = str(attributes.get("exitCode") or "")
            kind = "removed" if action == "destroy" else "oom" if oom else "died"
            yield LifecycleEvent(kind, workspace_id, ref, int(code) if code.isdigit() else None)

    async def check(self) -> list[str]:
        return []

    def end_event_streams(self) -> None:
        if self.engine is not None:
            self.engine.end_event_streams()

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.close()
