"""The Docker backend: one container per workspace, through the aiodocker
adapter (services/docker.py).

What lives here and nowhere else: container, volume and network names,
labels, the container body (no capabilities, a non-root user), the two
exposures (WORKSPACE_EXPOSURE: `direct` publishes a host port from
WORKSPACE_PORT_RANGE, recorded through the provisioner's PortBook;
`network` publishes nothing and joins a server-made network with
inter-container traffic off), the pull policy and the readiness probe.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

from services.docker import (DockerEngine, DockerError, DockerUnavailable, container_config, is_ambiguous_network,
                             is_port_taken)
from services.settings import Settings, ide_password_on, without_ide_password
from services.workspaces.backend import (BackendError, BackendExited, BackendUnavailable, Endpoint, Instance,
                                         Launched, LifecycleEvent, PortBook, Progress, Usage, WorkspaceSpec)
from services.workspaces.docker_support import (HOME, ICC_OFF, chown_config, engine_errors, lifecycle_events,
                                                network_ip, published_port, usage_of)
from services.workspaces import image_build
from services.workspaces.docker_network import WorkspaceNetwork
from services.workspaces.identity import Ownership
from services.workspaces.probe import http_status
from services.workspaces.pull import PullProgress

log = logging.getLogger("apranova.workspaces")
BAD_PORT_SECONDS = 600  # a host port Docker could not bind is skipped this long


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
        self.owner = Ownership(self.instance)  # until identify: INSTANCE_NAME alone
        self.workspace_network = WorkspaceNetwork(self.network, {"apranova.instance": self.instance,
                                                                 "apranova.role": "workspace-network"}, ICC_OFF)

    @property
    def errors(self) -> int:
        return self.engine.errors if self.engine is not None else 0

    @property
    def direct(self) -> bool:
        return self.settings.workspace_exposure == "direct"

    def _engine(self) -> DockerEngine:
        if self.engine is None:
            raise BackendUnavailable("no usable DOCKER_HOST")
        return self.engine

    async def available(self) -> bool:
        return self.engine is not None and await self.engine.ping()

    # -- names ----------------------------------------------------------------------
    def ref(self, spec: WorkspaceSpec) -> str:
        return f"{self.instance}-ws-{spec.owner_id}"

    def volumes(self, spec: WorkspaceSpec) -> tuple[str, str]:
        """The home volume, and the files-only volume of earlier versions
        (still mounted at ~/project where it exists, so nobody's files vanish)."""
        return f"{self.ref(spec)}-home", f"{self.ref(spec)}-project"

    def labels(self, spec: WorkspaceSpec) -> dict[str, str]:
        return {"apranova.managed": "true", **self.owner.labels(),
                "apranova.user_id": str(spec.owner_id), "apranova.workspace_id": spec.workspace_id}

    # -- whose: the deployment's identity (services/workspaces/identity.py) --------------------
    def identify(self, deployment: str, take_over: bool) -> None:
        self.owner = Ownership(self.instance, deployment, take_over)
        self.workspace_network.labels.update(self.owner.labels())

    async def _containers(self) -> list[dict]:
        with engine_errors("Docker refused to list the workspaces"):
            return await self._engine().list_containers({"apranova.instance": self.instance,
                                                         "apranova.managed": "true"})

    async def foreign(self) -> dict[str, int]:
        return self.owner.foreign(await self._containers())

    @property
    def network(self) -> str:
        if self.direct:
            return self.settings.workspace_network
        return self.settings.workspace_network or f"{self.instance}-workspaces"

    # -- host ports (direct mode) -------------------------------------------------------
    async def reserve(self, spec: WorkspaceSpec, ports: PortBook) -> int | None:
        if not self.direct:
            return None
        return spec.port if spec.port is not None else await self._allocate(ports)

    async def _allocate(self, ports: PortBook) -> int:
        """A free port of the range, recorded through `ports` (a unique
        index makes two workspaces with one port impossible)."""
        now = time.monotonic()
        self._bad_ports = {p: t for p, t in self._bad_ports.items() if now - t < BAD_PORT_SECONDS}
        return await ports.allocate(*self.settings.workspace_ports, avoid=self._bad_ports)

    def _host_endpoint(self, port: int) -> Endpoint:
        host_ip = self.settings.workspace_host_ip
        host = self.settings.workspace_ready_host or (host_ip if host_ip not in ("", "0.0.0.0", "::") else "127.0.0.1")
        return Endpoint(host, port)

    def _endpoint(self, container: dict) -> Endpoint | None:
        """Where the server reaches a container: its published port
        (direct), or its address on the workspace network."""
        if self.direct:
            port = published_port(container)
            return self._host_endpoint(port) if port else None
        ip = network_ip(container, self.network)
        return Endpoint(ip, self.settings.workspace_container_port) if ip else None

    # -- storage and image ----------------------------------------------------------------
    async def ensure_storage(self, spec: WorkspaceSpec) -> None:
        """The home volume, given to the IDE's user when first made. A volume
        whose chown failed is removed, so that the next run tries again; a
        one-shot container left over (the server died during it) means the
        chown may not have finished: it runs again."""
        engine, (home, _), setup = self._engine(), self.volumes(spec), f"{self.ref(spec)}-home-setup"
        with engine_errors("Docker refused to prepare the workspace's home volume"):
            found = await engine.inspect_volume(home)
            self.owner.refuse_foreign(found, f"The volume {home}")  # another installation's student's files
            if found is not None:
                if await engine.inspect_container(setup) is None:
                    return
            else:
                await engine.ensure_volume(home, self.labels(spec))
            config = chown_config(self.settings.workspace_image, home, self.settings.workspace_user,
                                  {**self.owner.labels(), "apranova.role": "home-setup"})
            try:
                code = await engine.run_once(setup, config)
            except BaseException:
                await engine.remove_volume(home)
                raise
            if code != 0:
                await engine.remove_volume(home)
                raise BackendError(f"The workspace's home could not be given to its user (chown exit code {code}).")

    async def remove_storage(self, spec: WorkspaceSpec) -> None:
        with engine_errors("Docker refused the operation"):
            for volume in self.volumes(spec):
                if self.owner.mine(await self._engine().inspect_volume(volume) or {}):
                    await self._engine().remove_volume(volume)

    async def prepare_image(self) -> AsyncIterator[Progress]:
        engine, image, policy = self._engine(), self.settings.workspace_image, self.settings.workspace_pull_policy
        yield Progress(0, f"Checking the image {image}")
        with engine_errors("Docker refused to create the workspace"):
            present = await engine.image_exists(image)
        if not present:  # ./scripts/run may be building it behind the server (a first run)
            async for progress in self._wait_for_build(engine, image):
                yield progress
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

    async def _wait_for_build(self, engine: DockerEngine, image: str) -> AsyncIterator[Progress]:
        """While this server builds `image` (image_build), its progress:
        elapsed and an estimate, until the image is there."""
        directory = self.settings.workspace_image_build_dir
        while (build := image_build.current(directory, image)) is not None:
            if build.failed:
                raise BackendError(f"The build of the workspace image {image} failed; see {build.log}.")
            with engine_errors("Docker refused to create the workspace"):
                if await engine.image_exists(image):
                    return
            elapsed = time.time() - build.started
            percent = min(95, int(elapsed * 100 / max(build.estimate, 1)))
            yield Progress(percent, f"Building the image {image} on this server ({image_build.words(elapsed)} "
                                    f"so far, about {image_build.words(max(build.estimate - elapsed, 60))} left): "
                                    f"{percent}%")
            await asyncio.sleep(2)

    # -- containers -------------------------------------------------------------------------
    async def _config(self, spec: WorkspaceSpec, port: int | None) -> dict:
        s, engine = self.settings, self._engine()
        home, legacy = self.volumes(spec)
        # Purged since ensure_storage: Docker would make a root-owned one.
        if not await engine.volume_exists(home):
            raise BackendError("The workspace's home volume was removed while it was starting; try again.")
        mounts = [(home, HOME)] + ([(legacy, f"{HOME}/project")] if await engine.volume_exists(legacy) else [])
        if not self.direct:  # made once, labelled for cleanup, unique, before the first container joins
            await self.workspace_network.ensure(engine)
        cmd, env = s.workspace_argv, {"PASSWORD": spec.password}
        if not ide_password_on(s):  # only the server reaches it: the proxy is the lock (WORKSPACE_IDE_PASSWORD)
            cmd, env = without_ide_password(cmd or await engine.image_cmd(s.workspace_image)) or None, {}
        return container_config(
            image=s.workspace_image, labels=self.labels(spec), env=env,
            container_port=s.workspace_container_port, host_ip=s.workspace_host_ip, host_port=port,
            mounts=mounts, cpus=s.workspace_cpus, memory=s.workspace_memory_bytes, pids=s.workspace_pids,
            user=s.workspace_user, network=self.network, cmd=cmd)

    async def launch(self, spec: WorkspaceSpec, ports: PortBook) -> Launched:
        engine, name = self._engine(), self.ref(spec)
        with engine_errors("Docker refused to create the workspace"):
            self.owner.refuse_foreign(await engine.inspect_container(name), f"The container {name}")
            await engine.remove_container(name)  # the leftover of an earlier run
            port = await self.reserve(spec, ports)
            for _ in range(10):
                try:
                    container_id = await engine.create_container(name, await self._config(spec, port))
                except DockerError as exc:
                    if exc.status == 409:  # the name is taken: a leftover appeared (or is being removed)
                        await engine.remove_container(name)
                        await asyncio.sleep(0.2)  # a removal already in progress elsewhere takes a moment
                        continue
                    if is_ambiguous_network(exc):
                        continue  # another process made a duplicate network a moment ago: _config heals it
                    raise
                try:
                    await engine.start_container(container_id)
                    info = await engine.inspect_container(container_id) or {}
                    endpoint = self._endpoint(info)
                    if endpoint is None and not (info.get("State") or {}).get("Running"):
                        raise exited(info)  # gone already: a stopped container has no address on its network
                    if endpoint is None:
                        raise BackendError("The workspace container has no address the server can reach.")
                    return Launched(container_id, endpoint, port)
                except (DockerError, BackendError) as exc:
                    await engine.remove_container(container_id)
                    if isinstance(exc, DockerError) and is_ambiguous_network(exc):
                        continue  # as above: the next _config heals the duplicate
                    if not (isinstance(exc, DockerError) and is_port_taken(exc)) or port is None:
                        raise
                log.info("host port %s is taken outside ApraNova; choosing another", port)
                self._bad_ports[port] = time.monotonic()
                port = await self._allocate(ports)
        raise BackendError("Could not start the workspace container; try again.")

    async def wait_ready(self, launched: Launched) -> None:
        """Ready means WORKSPACE_READY_PATH answers one of
        WORKSPACE_READY_STATUSES, not merely that the container started or
        that something answers on that address."""
        s = self.settings
        host, port = launched.endpoint.host, launched.endpoint.port
        deadline, next_check, status = time.monotonic() + s.workspace_ready_timeout, time.monotonic() + 1, None
        while True:
            status = await http_status(host, port, s.workspace_ready_path)
            if status in s.workspace_ready_statuses:
                return
            if time.monotonic() > deadline:
                answer = f" (it answered {status})" if status else ""
                raise BackendError(f"The IDE did not answer on port {launched.port or port} within "
                                   f"{s.workspace_ready_timeout:g} s{answer}.")
            if time.monotonic() > next_check:
                next_check = time.monotonic() + 1
                with engine_errors("Docker refused to inspect the workspace"):
                    info = await self._engine().inspect_container(launched.ref)
                if info is None or not info["State"].get("Running"):
                    raise exited(info)
            await asyncio.sleep(0.2)

    async def stop(self, ref: str) -> None:
        with engine_errors("Docker refused the operation"):
            if await self._ours(ref):
                await self._engine().stop_container(ref)

    async def remove(self, ref: str) -> None:
        with engine_errors("Docker refused the operation"):
            if await self._ours(ref):
                await self._engine().remove_container(ref)

    async def _ours(self, ref: str) -> bool:
        """Stops and removes go by name too: never another deployment's
        container of that name (gone: nothing to do either way)."""
        found = await self._engine().inspect_container(ref)
        if found is not None and not self.owner.mine(found):
            log.warning("leaving %s alone: it belongs to deployment %s", ref, self.owner.deployment_of(found))
            return False
        return found is not None

    def _instance(self, container: dict, running: bool) -> Instance:
        labels = (container.get("Config") or {}).get("Labels") or container.get("Labels") or {}
        return Instance(labels.get("apranova.workspace_id", ""), container["Id"], running, self._endpoint(container))

    async def inspect(self, ref: str) -> Instance | None:
        with engine_errors("Docker refused to inspect the workspace"):
            info = await self._engine().inspect_container(ref)
        return None if info is None else self._instance(info, bool(info["State"].get("Running")))

    async def list_managed(self) -> list[Instance]:
        found = [c for c in await self._containers() if self.owner.mine(c)]
        return [self._instance(c, c.get("State") == "running") for c in found]

    async def stats(self, ref: str) -> Usage | None:
        with engine_errors("Docker refused to read the workspace's stats"):
            found = await self._engine().container_stats(ref)
        return None if found is None else usage_of(found)

    async def events(self, since: float | None = None) -> AsyncIterator[LifecycleEvent]:
        labels = {"apranova.instance": self.instance}
        try:
            async for event in self._engine().events(labels, since=int(since) if since else None):
                for found in lifecycle_events(event, self._oom):
                    yield found
        except DockerUnavailable as exc:
            raise BackendUnavailable(str(exc)) from None

    async def check(self) -> list[str]:
        """What an operator should know at start-up, before a student finds out."""
        image, policy = self.settings.workspace_image, self.settings.workspace_pull_policy
        if self.engine is None or not await self.engine.ping():
            return []
        if not self.direct:  # duplicates left by an earlier burst would fail every launch
            with engine_errors("Docker refused to list the workspace networks"):
                await self.workspace_network.heal(self.engine)
        if await self.engine.image_exists(image):
            return []
        build = image_build.current(self.settings.workspace_image_build_dir, image)
        if build is not None and not build.failed:
            return [f"WORKSPACE_IMAGE {image} is being built on this server (log: {build.log}); workspaces "
                    "created meanwhile wait for it."]
        if policy == "never":
            return [f"WORKSPACE_IMAGE {image} is not on the Docker host and WORKSPACE_PULL_POLICY is 'never': "
                    "every workspace will fail until the image is built or loaded there."]
        return [f"WORKSPACE_IMAGE {image} is not on the Docker host; the first workspace will pull it."]

    def end_event_streams(self) -> None:
        if self.engine is not None:
            self.engine.end_event_streams()

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.close()


def exited(info: dict | None) -> BackendExited:
    """The error of a container that stopped (or vanished) while starting."""
    code = ((info or {}).get("State") or {}).get("ExitCode")
    return BackendExited(f"The workspace container exited while starting (exit code {code}).")
