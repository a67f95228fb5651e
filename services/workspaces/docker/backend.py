"""The Docker backend: one container per workspace, through the aiodocker
adapter (services/docker.py).

It translates the engine-neutral IdeSpec (services/workspaces/spec.py) into
a container, and owns the two exposures (WORKSPACE_EXPOSURE: `direct`
publishes a host port from WORKSPACE_PORT_RANGE, recorded in the document
through the run; `network` publishes nothing and joins a server-made
network with inter-container traffic off) and the pull policy.

The engine calls are small object hooks in DockerSpawner's style
(`get_object`, `create_object`, `stop_object`, `remove_object`,
`list_objects`, `instance_of`, `command`): the Swarm backend
(services/workspaces/swarm/) overrides those and reuses the rest: image
handling, the command, error translation.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Awaitable, Callable

from services import host_wall
from services.docker import (DockerEngine, DockerError, DockerUnavailable, container_config, is_ambiguous_network,
                             is_port_taken)
from services.settings import Settings, SettingsError, without_ide_password
from services.workspaces.backend import (BackendError, BackendExited, BackendUnavailable, Endpoint, Instance, Launched,
                                         LifecycleEvent, Progress, Run, Usage)
from services.workspaces.docker.disk import DockerDisks
from services.workspaces.docker.network import WorkspaceNetwork
from services.workspaces.docker.ports import HostPorts
from services.workspaces.docker.settings import SETTINGS
from services.workspaces.docker.home import HomeOwner, chown_config
from services.workspaces.docker.image import ensure_image, image_notes
from services.workspaces.docker.support import (ICC_OFF, engine_errors, lifecycle_events, network_ip, published_port,
                                                usage_of)
from services.workspaces.identity import Ownership
from services.workspaces.spec import IdeSpec

log = logging.getLogger("apranova.workspaces")


class DockerBackend:
    title, noun = "Docker", "container"
    SETTINGS = SETTINGS  # declared by the backend: in the settings table, --help, and parsed once
    engine_class = DockerEngine  # the adapter (Swarm's speaks services and tasks too)

    def __init__(self, settings: Settings):
        self.settings = settings
        self.instance = settings.instance_name
        try:
            self.engine: DockerEngine | None = self.engine_class(settings.docker_host)
        except ValueError as exc:
            log.error("DOCKER_HOST %r cannot be used (%s); workspaces are unavailable", settings.docker_host, exc)
            self.engine = None
        self.ports = HostPorts(*settings.workspace_ports)
        self.disks = self.disks_for(settings)  # disk quotas (docker/disk.py)
        self.owner = Ownership(self.instance)  # until identify: INSTANCE_NAME alone
        self.homes = HomeOwner(self.instance)  # whether a fresh home needs its chown (docker/home.py)
        self.workspace_network = WorkspaceNetwork(self.network, {"apranova.instance": self.instance,
                                                                 "apranova.role": "workspace-network"}, ICC_OFF)
        self._oom: set[str] = set()

    @property
    def errors(self) -> int:
        return self.engine.errors if self.engine is not None else 0

    @property
    def direct(self) -> bool:
        return self.settings.workspace_exposure == "direct"

    @property
    def exposed(self) -> bool:
        return self.direct  # a published host port: anyone who reaches it reaches the IDE's login

    def _engine(self) -> DockerEngine:
        if self.engine is None:
            raise BackendUnavailable("no usable DOCKER_HOST")
        return self.engine

    @staticmethod
    def check_settings(settings: Settings) -> None:
        """Refused at start (settings.load)."""
        if settings.workspace_disk_dir and not settings.workspace_disk_dir.startswith("/"):
            raise SettingsError("WORKSPACE_DISK_DIR must be an absolute path on the Docker host")

    def disks_for(self, settings: Settings) -> DockerDisks | None:
        """The homes' disk images on this engine's host (a hook: an engine
        whose homes live on other hosts has none)."""
        return DockerDisks(settings, self.engine) if self.engine is not None else None

    async def available(self) -> bool:
        return self.engine is not None and await self.engine.ping()

    def ref(self, spec: IdeSpec) -> str:
        return spec.name

    def labels_of(self, spec: IdeSpec) -> dict[str, str]:
        """What the spec's instance and volumes carry here: the spec's labels
        and the deployment's id (identity.py)."""
        return {**spec.labels, **self.owner.labels()}

    # -- whose: the deployment's identity (services/workspaces/identity.py) ------------------
    def identify(self, deployment: str, take_over: bool) -> None:
        self.owner = Ownership(self.instance, deployment, take_over)
        self.workspace_network.labels.update(self.owner.labels())
        if self.disks:
            self.disks.labels.update(self.owner.labels())

    async def foreign(self) -> dict[str, int]:
        with engine_errors(f"{self.title} refused to list the workspaces"):
            return self.owner.foreign(await self.list_objects())

    async def _ours(self, ref: str) -> bool:
        """Stops and removes go by name too: never another deployment's
        instance of that name (gone: nothing to do either way)."""
        found = await self.get_object(ref)
        if found is not None and not self.owner.mine(found):
            log.warning("leaving %s alone: it belongs to deployment %s", ref, self.owner.deployment_of(found))
            return False
        return found is not None

    @property
    def network(self) -> str:
        if self.direct:
            return self.settings.workspace_network
        return self.settings.workspace_network or f"{self.instance}-workspaces"

    # -- host ports (direct mode) -------------------------------------------------------
    async def reserve(self, spec: IdeSpec, run: Run) -> None:
        if self.direct and spec.placement.get("port") is None:
            await self.ports.allocate(run)

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
    async def ensure_storage(self, spec: IdeSpec, run: Run) -> None:
        """The home volume, given to the IDE's user when first made (unless
        the image's own HOME, which Docker copies into it, is the user's:
        docker/home.py). A volume whose chown failed is removed, so that the
        next run tries again; a one-shot container left over (the server
        died during it) means the chown may not have finished: it runs again."""
        engine, home, setup = self._engine(), spec.home_volume, f"{spec.name}-home-setup"
        with engine_errors("Docker refused to prepare the workspace's home volume"):
            # Disk quota (docker/disk.py): the ext4 image's device, or None for an unlimited home.
            found = await engine.inspect_volume(home)
            self.owner.refuse_foreign(found, f"The volume {home}")  # another installation's student's files
            options = await self.disks.prepare(home, spec.disk_quota, spec.name, self.labels_of(spec)) \
                if self.disks else None
            if found is not None:
                if await engine.inspect_container(setup) is None:
                    return
            else:
                # Asked before the volume exists: a server killed during the probe leaves no volume
                # that the next run would take for a chowned one.
                chown = options is not None or await self.homes.chown_needed(engine, spec.image, spec.user,
                                                                             self.owner.labels())
                await engine.ensure_volume(home, self.labels_of(spec), options)
                if not chown:
                    return  # Docker's copy of the image's HOME is the user's already
            config = chown_config(spec.image, home, spec.user, {**self.owner.labels(), "apranova.role": "home-setup"})
            try:
                code = await engine.run_once(setup, config)
            except BaseException:
                await engine.remove_volume(home)
                raise
            if code != 0:
                await engine.remove_volume(home)
                raise BackendError(f"The workspace's home could not be given to its user (chown exit code {code}).")

    async def remove_storage(self, spec: IdeSpec) -> None:
        with engine_errors("Docker refused the operation"):
            home, engine = spec.home_volume, self._engine()
            quota = ((await engine.inspect_volume(home) or {}).get("Options") or {}).get("device")
            for volume in (home, spec.legacy_volume):
                if self.owner.mine(await engine.inspect_volume(volume) or {}):  # never another deployment's
                    await engine.remove_volume(volume)
            if (quota or self.settings.workspace_disk_quota) and self.disks:  # its disk image too
                await self.disks.remove([home])

    # -- disk quotas (docker/disk.py; quota.py calls these) -------------------------------
    async def disk_usage(self, spec: IdeSpec) -> tuple[int, int] | None:
        with engine_errors("Docker refused to read the workspace's disk use"):
            return await self.disks.usage(spec.name) if self.disks else None

    async def disk_free(self) -> int | None:
        with engine_errors("Docker refused to read the host's free space"):
            return await self.disks.free() if self.disks else None

    async def remove_orphan_disks(self, owners: Callable[[], Awaitable[set[int]]]) -> list[str]:
        with engine_errors("Docker refused to list the disk images"):
            return await self.disks.remove_orphans(f"{self.instance}-ws-", owners) if self.disks else []

    async def prepare_image(self) -> AsyncIterator[Progress]:
        async for progress in ensure_image(self._engine(), self.settings, self.title):  # docker/image.py
            yield progress

    # -- object hooks (DockerSpawner's style; Swarm overrides these) --------------------------
    async def command(self, spec: IdeSpec) -> list[str] | None:
        """The IDE's argv: the spec's (else the image's own), with `--auth
        none` when code-server keeps no password of its own."""
        if spec.ide_password:
            return list(spec.command) if spec.command else None
        argv = list(spec.command) if spec.command else await self._engine().image_cmd(spec.image)
        return without_ide_password(argv) or None

    async def _body(self, spec: IdeSpec, port: int | None) -> dict:
        engine = self._engine()
        # Purged since ensure_storage: Docker would make a root-owned one.
        if not await engine.volume_exists(spec.home_volume):
            raise BackendError("The workspace's home volume was removed while it was starting; try again.")
        mounts = [(spec.home_volume, spec.home_path)]
        if await engine.volume_exists(spec.legacy_volume):
            mounts.append((spec.legacy_volume, f"{spec.home_path}/project"))
        s = self.settings
        if not self.direct:  # made once, labelled for cleanup, unique, before the first container joins
            network = await self.workspace_network.ensure(engine)
            if s.workspace_host_wall:  # fail closed: no workspace without the wall it was asked for
                try:
                    await host_wall.ensure(host_wall.bridge_of(network))
                except host_wall.WallError as exc:
                    raise BackendError(f"WORKSPACE_HOST_WALL is on, but {exc}.") from None
        return container_config(
            image=spec.image, labels=self.labels_of(spec), env=dict(spec.environment), container_port=spec.port,
            host_ip=s.workspace_host_ip, host_port=port, mounts=mounts, cpus=spec.cpus, memory=spec.memory_bytes,
            pids=spec.pids, user=spec.user, network=self.network, cmd=await self.command(spec))

    async def create_object(self, spec: IdeSpec, run: Run) -> Launched:
        """A new, started container (any earlier one removed). Direct mode
        moves to another port when Docker cannot bind the recorded one."""
        engine, name = self._engine(), spec.name
        self.owner.refuse_foreign(await engine.inspect_container(name), f"The container {name}")
        await engine.remove_container(name)  # the leftover of an earlier run
        port = spec.placement.get("port") if self.direct else None
        if self.direct and port is None:
            port = await self.ports.allocate(run)
        for _ in range(10):
            try:
                container_id = await engine.create_container(name, await self._body(spec, port))
            except DockerError as exc:
                if exc.status == 409:  # the name is taken: a leftover appeared (or is being removed)
                    await engine.remove_container(name)
                    await asyncio.sleep(0.2)  # a removal already in progress elsewhere takes a moment
                    continue
                if is_ambiguous_network(exc):
                    continue  # another process made a duplicate network a moment ago: _body heals it
                raise
            try:
                await engine.start_container(container_id)
                info = await engine.inspect_container(container_id) or {}
                endpoint = self._endpoint(info)
                if endpoint is None and not (info.get("State") or {}).get("Running"):
                    raise self._exited(info)  # gone already: a stopped container has no address on its network
                if endpoint is None:
                    raise BackendError("The workspace container has no address the server can reach.")
                return Launched(container_id, endpoint)
            except (DockerError, BackendError) as exc:
                await engine.remove_container(container_id)
                if isinstance(exc, DockerError) and is_ambiguous_network(exc):
                    continue  # as above: the next _body heals the duplicate
                if not (isinstance(exc, DockerError) and is_port_taken(exc)) or port is None:
                    raise
            log.info("host port %s is taken outside ApraNova; choosing another", port)
            self.ports.refused(port)
            port = await self.ports.allocate(run)
        raise BackendError("Could not start the workspace container; try again.")

    @staticmethod
    def _exited(info: dict) -> BackendExited:
        code = (info.get("State") or {}).get("ExitCode")
        return BackendExited(f"The workspace container exited while starting (exit code {code}).")

    async def get_object(self, ref: str) -> dict | None:
        return await self._engine().inspect_container(ref)

    async def stop_object(self, ref: str) -> None:
        await self._engine().stop_container(ref)

    async def remove_object(self, ref: str) -> None:
        await self._engine().remove_container(ref)

    async def list_objects(self) -> list[dict]:
        return await self._engine().list_containers({"apranova.instance": self.instance, "apranova.managed": "true"})

    async def instance_of(self, found: dict) -> Instance:
        """An inspect or a list answer as an Instance."""
        labels = (found.get("Config") or {}).get("Labels") or found.get("Labels") or {}
        state = found.get("State")
        running = bool(state.get("Running")) if isinstance(state, dict) else state == "running"
        code = state.get("ExitCode") if isinstance(state, dict) else None
        return Instance(labels.get("apranova.workspace_id", ""), found.get("Id") or found.get("ID", ""), running,
                        self._endpoint(found), exit_code=None if running else code)

    # -- the Backend contract, in terms of the hooks ---------------------------------------
    async def launch(self, spec: IdeSpec, run: Run) -> Launched:
        with engine_errors(f"{self.title} refused to create the workspace"):
            return await self.create_object(spec, run)

    async def stop(self, ref: str) -> None:
        with engine_errors(f"{self.title} refused the operation"):
            if await self._ours(ref):
                await self.stop_object(ref)

    async def remove(self, ref: str) -> None:
        with engine_errors(f"{self.title} refused the operation"):
            if await self._ours(ref):
                await self.remove_object(ref)

    async def inspect(self, ref: str) -> Instance | None:
        with engine_errors(f"{self.title} refused to inspect the workspace"):
            found = await self.get_object(ref)
            return None if found is None else await self.instance_of(found)

    async def list_managed(self) -> list[Instance]:
        with engine_errors(f"{self.title} refused to list the workspaces"):
            return [await self.instance_of(found) for found in await self.list_objects() if self.owner.mine(found)]

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
        if self.engine is None or not await self.engine.ping():
            return []
        with engine_errors("Docker refused to list the workspace networks and helpers"):
            if not self.direct:  # duplicates left by an earlier burst would fail every launch
                await self.workspace_network.heal(self.engine)
            if self.disks:
                await self.disks.remove_leftovers()
            await self.homes.remove_leftovers(self.engine, self.owner.labels())
        return await image_notes(self.engine, self.settings)

    def end_event_streams(self) -> None:
        if self.engine is not None:
            self.engine.end_event_streams()

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.close()



