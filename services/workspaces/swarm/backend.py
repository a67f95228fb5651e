"""WORKSPACE_BACKEND=swarm: each workspace a one-replica service of a
Docker Swarm whose manager is DOCKER_HOST. A DockerBackend whose object
hooks speak services and tasks; names, labels, the spec, the command and
image handling are the Docker backend's.

Choices (the README's "Several hosts: Docker Swarm" says more):

* A stop scales the service to 0 replicas rather than removing it: the
  service keeps its spec, labels and node pin while stopped, so the
  operator's `docker service ls` shows every workspace as `docker ps -a`
  does, and reconciliation tells a stopped workspace (0 replicas) from one
  whose service went. A start makes the service afresh (as Docker makes a
  new container), so a changed image or limit applies.
* The IDE is published in host mode on its task's node and reached at that
  node's address: no ingress mesh or service VIP (both need IPVS). Anyone
  on the node network reaches that port, so code-server keeps its own
  password (`exposed`), whatever WORKSPACE_IDE_PASSWORD says.
* A local home volume lives on the node that first ran it: that node is
  recorded in the workspace (`placement.constraint`) and every later task
  is pinned there. With SWARM_VOLUME_DRIVER (shared storage) nothing is pinned.
* Swarm reports task changes by no event stream: `events` polls the tasks
  once a second. A task that ended while meant to run is `died`; one whose
  node is down is `lost` (failed: the machine running it went away).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

from services.docker import DockerError, DockerUnavailable
from services.settings import Settings, SettingsError
from services.workspaces.backend import (MACHINE_LOST, BackendError, BackendUnavailable, Instance, Launched,
                                         LifecycleEvent, Run, Usage)
from services.workspaces.docker.backend import DockerBackend
from services.workspaces.docker.support import engine_errors
from services.workspaces.spec import IdeSpec
from services.workspaces.swarm import translate
from services.workspaces.swarm.engine import SwarmEngine
from services.workspaces.swarm.settings import SETTINGS as OWN_SETTINGS

log = logging.getLogger("apranova.workspaces")
POLL_SECONDS = 1.0  # how often task changes are looked for (Swarm has no task events)


class SwarmBackend(DockerBackend):
    title, noun = "Docker Swarm", "service"
    SETTINGS = DockerBackend.SETTINGS + OWN_SETTINGS
    exposed = True  # host-mode ports on the node network: code-server keeps its password
    engine_class = SwarmEngine

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self._ending = asyncio.Event()

    @staticmethod
    def check_settings(settings: Settings) -> None:
        """Refused at start (settings.load): what cannot work on a swarm."""
        DockerBackend.check_settings(settings)
        if settings.workspace_disk_quota:
            # The quota's loop-mounted image is made by a helper on the engine's
            # own host; a swarm's homes live on the nodes (README: Disk quotas).
            raise SettingsError("WORKSPACE_DISK_QUOTA is enforced by WORKSPACE_BACKEND=docker only: on a swarm, size "
                                "the homes with a volume driver that enforces one (SWARM_VOLUME_DRIVER, "
                                "SWARM_VOLUME_OPTIONS)")
        if settings.workspace_exposure != "network":
            raise SettingsError("WORKSPACE_BACKEND=swarm reaches each IDE through the server's proxy only: "
                                "WORKSPACE_EXPOSURE must be 'network'")
        if not 0 <= settings.swarm_stop_grace <= 300:
            raise SettingsError("SWARM_STOP_GRACE must be between 0 and 300 seconds")

    def disks_for(self, settings: Settings) -> None:  # type: ignore[override]
        return None  # the homes live on the nodes, not on the manager's host (no quota images here)

    def _engine(self) -> SwarmEngine:  # type: ignore[override]
        engine = super()._engine()
        assert isinstance(engine, SwarmEngine)
        return engine

    async def available(self) -> bool:
        if self.engine is None:
            return False
        try:
            return await self._engine().swarm_active()
        except (DockerUnavailable, DockerError):
            return False

    async def reserve(self, spec: IdeSpec, run: Run) -> None:
        return None  # nothing to claim: the node chooses the task's port

    # -- storage ------------------------------------------------------------------------
    async def ensure_storage(self, spec: IdeSpec, run: Run) -> None:
        """A home made before (its node recorded, or shared storage) is
        there; else a one-shot task makes it, wherever the scheduler puts
        it, and gives it to the IDE's user; its node is then recorded and
        every later task of the workspace pinned there."""
        if spec.placement.get("constraint") or spec.placement.get("storage") == "shared":
            return
        engine, labels = self._engine(), {"apranova.instance": self.instance, "apranova.role": "home-setup"}
        body = translate.setup_body(spec, self.settings, labels)
        with engine_errors("Docker Swarm refused to prepare the workspace's home volume"):
            await engine.remove_service(body["Name"])  # a leftover: the server died during it
            service_id = await engine.create_service(body)
            try:
                task = await self._settled(service_id, 120)
            finally:
                await engine.remove_service(service_id)
            nodes = await engine.nodes()
        state, code = task["Status"]["State"], translate.exit_code(task)
        if state != "complete" or code != 0:
            why = task["Status"].get("Err") or f"chown exit code {code}"
            raise BackendError(f"The workspace's home could not be given to its user ({state}: {why}).")
        if self.settings.swarm_volume_driver:
            await run.record(storage="shared")
        else:
            node = nodes.get(task["NodeID"])
            await run.record(node=translate.node_name(node), constraint=f"node.id=={task['NodeID']}")

    async def _settled(self, service_id: str, timeout: float) -> dict:
        """The one-shot service's task once it ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = translate.latest(await self._engine().tasks([service_id]), service_id)
            if task is not None and task["Status"]["State"] in translate.TERMINAL:
                return task
            await asyncio.sleep(0.25)
        raise BackendError(f"The workspace's home was not ready within {timeout:g} s.")

    async def remove_storage(self, spec: IdeSpec) -> None:
        """Only the home's node can remove a local volume, and the manager
        cannot reach a node's volumes: the operator removes them there
        (`docker volume rm <name>-home` on the node recorded in the workspace)."""
        log.warning("the home volume %s stays on node %s: remove it there", spec.home_volume,
                    spec.placement.get("node", "?"))

    # -- object hooks ---------------------------------------------------------------------
    async def create_object(self, spec: IdeSpec, run: Run) -> Launched:
        engine = self._engine()
        await engine.remove_service(spec.name)  # the service of an earlier run (stopped at 0 replicas)
        body = translate.service_body(spec, self.settings, await self.command(spec))
        for _ in range(10):
            try:
                service_id = await engine.create_service(body)
                break
            except DockerError as exc:
                if exc.status != 409:  # 409: the old one is still being removed
                    raise
                await engine.remove_service(spec.name)
                await asyncio.sleep(0.3)
        else:
            raise BackendError("Could not create the workspace service; try again.")
        await run.say("Service created")
        try:
            return await self._placed(service_id, run, spec)
        except BaseException:
            await engine.remove_service(service_id)
            raise

    async def _placed(self, service_id: str, run: Run, spec: IdeSpec) -> Launched:
        """Follow the task until it runs, telling its phases (the node by
        name). A task pinned to a node that is down would wait for it: that
        fails at once instead."""
        deadline, told = time.monotonic() + self.settings.workspace_ready_timeout, set()
        pinned = str(spec.placement.get("constraint", "")).removeprefix("node.id==")
        while time.monotonic() < deadline:
            task = translate.latest(await self._engine().tasks([service_id]), service_id)
            state = (task or {}).get("Status", {}).get("State", "")
            nodes = await self._engine().nodes() if pinned or (task and task.get("NodeID")) else {}
            node = nodes.get((task or {}).get("NodeID"))
            if pinned and state in ("", "new", "pending", "allocated") and translate.node_down(nodes.get(pinned)):
                raise BackendError(f"The node holding the workspace's files ({spec.placement.get('node')}) is down: "
                                   f"{MACHINE_LOST}.")
            for phase in translate.PHASES:
                if phase not in told and _reached(state, phase):
                    told.add(phase)
                    await run.say(translate.PHASES[phase].format(node=translate.node_name(node)))
            if state in translate.TERMINAL:
                why = task["Status"].get("Err") or f"exit code {translate.exit_code(task)}"
                raise BackendError(f"The workspace service's task ended while starting ({state}: {why}).")
            if state == "running":
                endpoint = translate.endpoint(task, node, self.settings.workspace_container_port)
                if endpoint is None:
                    raise BackendError("The workspace task publishes no port the server can reach.")
                return Launched(service_id, endpoint)
            await asyncio.sleep(0.25)
        raise BackendError(f"The workspace service's task did not start within "
                           f"{self.settings.workspace_ready_timeout:g} s (no node could run it?).")

    async def get_object(self, ref: str) -> dict | None:
        engine = self._engine()
        service = await engine.inspect_service(ref)
        if service is None:
            return None
        return {"service": service, "tasks": await engine.tasks([service["ID"]]), "nodes": await engine.nodes()}

    async def list_objects(self) -> list[dict]:
        engine = self._engine()
        services = await engine.list_services({"apranova.instance": self.instance, "apranova.managed": "true"})
        if not services:
            return []
        tasks, nodes = await engine.tasks([s["ID"] for s in services]), await engine.nodes()
        return [{"service": s, "tasks": tasks, "nodes": nodes} for s in services]

    async def instance_of(self, found: dict) -> Instance:
        service = found["service"]
        task = translate.latest(found["tasks"], service["ID"])
        node = found["nodes"].get((task or {}).get("NodeID"))
        return translate.instance(service, task, node, self.settings.workspace_container_port)

    async def stop_object(self, ref: str) -> None:
        """Scale to 0 and wait (bounded) until the task has ended."""
        engine = self._engine()
        service = await engine.inspect_service(ref)
        if service is None:
            return
        spec = service["Spec"]
        if spec["Mode"].get("Replicated", {}).get("Replicas") != 0:
            spec["Mode"] = {"Replicated": {"Replicas": 0}}
            await engine.update_service(service, spec)
        deadline = time.monotonic() + self.settings.swarm_stop_grace + 10
        while time.monotonic() < deadline:
            tasks = await engine.tasks([service["ID"]])
            if all(t["Status"]["State"] in translate.TERMINAL for t in tasks):
                return
            await asyncio.sleep(0.25)

    async def remove_object(self, ref: str) -> None:
        await self._engine().remove_service(ref)

    async def stats(self, ref: str) -> Usage | None:
        return None  # the manager cannot read a task's container; its node can (not done yet)

    # -- task changes as lifecycle events ---------------------------------------------------
    async def events(self, since: float | None = None) -> AsyncIterator[LifecycleEvent]:
        """Polls the services' newest tasks: each task that ended while its
        service still wants it (1 replica) is told once."""
        told: set[str] = set()
        self._ending.clear()
        while not self._ending.is_set():
            try:
                found = await self.list_objects()
            except DockerUnavailable as exc:
                raise BackendUnavailable(str(exc)) from None
            except DockerError as exc:
                raise BackendUnavailable(f"the manager refused: {exc.message}") from None
            for item in found:
                event = self._event(item)
                if event is not None and event.ref + event.kind not in told:
                    told.add(event.ref + event.kind)
                    yield event
            try:
                await asyncio.wait_for(self._ending.wait(), POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
        raise BackendUnavailable("event polling ended")

    def _event(self, item: dict) -> LifecycleEvent | None:
        service = item["service"]
        wanted = service["Spec"]["Mode"].get("Replicated", {}).get("Replicas")
        task = translate.latest(item["tasks"], service["ID"])
        if wanted != 1 or task is None:
            return None
        found = translate.instance(service, task, item["nodes"].get(task.get("NodeID")),
                                   self.settings.workspace_container_port)
        if found.running or task["Status"]["State"] not in translate.TERMINAL and found.detail != MACHINE_LOST:
            return None
        kind = "lost" if found.detail == MACHINE_LOST else "oom" if "oom" in (found.detail or "").lower() else "died"
        return LifecycleEvent(kind, found.workspace_id, service["ID"], found.exit_code)  # type: ignore[arg-type]

    def end_event_streams(self) -> None:
        self._ending.set()
        super().end_event_streams()

    async def check(self) -> list[str]:
        if not await self.available():
            return ["DOCKER_HOST is not a manager of an active Docker Swarm: every workspace will fail until it is."]
        return []


def _reached(state: str, phase: str) -> bool:
    """Whether the task got to `phase` (Swarm's states go one way)."""
    order = ["new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"]
    return state in order and order.index(state) >= order.index(phase)
