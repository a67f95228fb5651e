"""The backends the conformance suite (tests/test_backend_conformance.py)
and the Swarm tests run against: servers of one INSTANCE_NAME and one
database on one backend, and what a test does to the engine behind
ApraNova's back; and a request to an IDE through the server's proxy."""
from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.app import RunningServer, app_settings, auth, serve
from tests.support.workspaces import TEST_IMAGE, WorkspaceServers, docker

OPEN = "/api/users/workspace/open/"
FAKE = "tests.support.fake_backend:FakeBackend"


class Engine:
    """Servers of one INSTANCE_NAME and one database on one backend, and
    what a test does to the engine behind ApraNova's back."""
    name = ""

    def __init__(self, mongo: Any, tmp_path: Any):
        self.mongo, self.tmp_path = mongo, tmp_path
        self.db_name = f"cf_{uuid.uuid4().hex[:10]}"
        self.running: list[RunningServer] = []

    def overrides(self) -> dict[str, Any]:
        raise NotImplementedError

    async def start(self) -> RunningServer:
        server = await serve(app_settings(self.mongo, self.tmp_path, mongodb_db=self.db_name, **self.overrides()))
        self.running.append(server)
        return server

    async def stop(self, server: RunningServer) -> None:
        self.running.remove(server)
        await server.stop()

    async def kill(self, server: RunningServer, doc: dict) -> None:
        """Kill the workspace's instance outside ApraNova (as `docker kill`)."""
        raise NotImplementedError

    async def close(self) -> None:
        for server in reversed(list(self.running)):
            await self.stop(server)


class FakeEngine(Engine):
    name = "fake"

    def overrides(self) -> dict[str, Any]:
        self.instance = getattr(self, "instance", f"cff{uuid.uuid4().hex[:8]}")
        return {"workspace_backend": FAKE, "instance_name": self.instance, "workspace_exposure": "network"}

    async def kill(self, server: RunningServer, doc: dict) -> None:
        server.services.workspaces.backend.die(doc["_id"], 137)


class DockerEngine(Engine):
    """The default (network) exposure on the shared engine, through
    workspaces_helpers' servers (this test's INSTANCE_NAME, cleaned up)."""
    name = "docker"

    def __init__(self, mongo: Any, tmp_path: Any, servers: WorkspaceServers):
        super().__init__(mongo, tmp_path)
        self.servers = servers

    async def start(self) -> RunningServer:
        server = await self.servers.start(mongodb_db=self.db_name)
        self.running.append(server)
        return server

    async def stop(self, server: RunningServer) -> None:
        self.running.remove(server)
        await self.servers.stop(server)

    async def kill(self, server: RunningServer, doc: dict) -> None:
        docker("kill", f"{self.servers.instance}-ws-{doc['owner_id']}")


class SwarmEngine(Engine):
    """WORKSPACE_BACKEND=swarm on the two-node test swarm: the stand-in
    image from its registry, the manager as DOCKER_HOST. Cleanup removes this
    test's services through the manager and its volumes on each node."""
    name = "swarm"
    images: dict[str, str] = {}  # the stand-in's registry reference, pushed once per swarm

    def __init__(self, mongo: Any, tmp_path: Any, cluster: Any):
        super().__init__(mongo, tmp_path)
        self.cluster, self.instance = cluster, f"cfs{uuid.uuid4().hex[:8]}"
        self.extra: dict[str, Any] = {}  # a test's own settings (e.g. SWARM_CONSTRAINTS)
        if cluster.registry not in self.images:
            self.images[cluster.registry] = cluster.push_image(TEST_IMAGE)

    def overrides(self) -> dict[str, Any]:
        return {"workspace_backend": "swarm", "docker_host": self.cluster.manager, "instance_name": self.instance,
                "workspace_image": self.images[self.cluster.registry], "workspace_ready_timeout": "60",
                "workspace_wait_timeout": "90", "workspace_memory": "64m", "workspace_pids": "64",
                "workspace_cpus": "0.25", "workspace_exposure": "network", **self.extra}

    def on_nodes(self, *args: str) -> list[str]:
        """`docker <args>` on every node; the outputs."""
        return [subprocess.run(["docker", "-H", node.docker_host, *args], capture_output=True, text=True,
                               timeout=60).stdout for node in self.cluster.nodes]

    async def kill(self, server: RunningServer, doc: dict) -> None:
        name = f"{self.instance}-ws-{doc['owner_id']}"
        for node, found in zip(self.cluster.nodes, self.on_nodes(
                "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}")):
            for container in found.split():
                subprocess.run(["docker", "-H", node.docker_host, "kill", container], capture_output=True,
                               timeout=60)

    async def close(self) -> None:
        await super().close()
        manager = ["docker", "-H", self.cluster.manager]
        found = subprocess.run([*manager, "service", "ls", "-q", "--filter", f"label=apranova.instance={self.instance}"],
                               capture_output=True, text=True, timeout=60).stdout.split()
        if found:
            subprocess.run([*manager, "service", "rm", *found], capture_output=True, timeout=60)
        for _ in range(50):  # the tasks' containers go, then their volumes can
            if not any(self.on_nodes("ps", "-aq", "--filter", f"label=apranova.instance={self.instance}")):
                break
            await asyncio.sleep(0.2)
        for node, volumes in zip(self.cluster.nodes, self.on_nodes("volume", "ls", "-q", "--filter",
                                                                    f"name={self.instance}-ws-")):
            if volumes.split():
                subprocess.run(["docker", "-H", node.docker_host, "volume", "rm", "-f", *volumes.split()],
                               capture_output=True, timeout=60)


async def through_proxy(server: RunningServer, client: httpx.AsyncClient, user: dict, path: str) -> httpx.Response:
    """GET `path` of the user's IDE as a browser does: a one-time ticket,
    then the workspace host's cookie, every byte through the server's proxy."""
    opened = await client.post(OPEN, headers=auth(user))
    assert opened.status_code == 200, opened.text
    parts = urlsplit(opened.json()["url"])
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as raw:
        redeemed = await raw.get(f"{parts.path}?{parts.query}", headers={"Host": parts.netloc})
        assert redeemed.status_code == 302, redeemed.text
        cookie = redeemed.headers["set-cookie"].split(";", 1)[0]
        return await raw.get(path, headers={"Host": parts.netloc, "Cookie": cookie})
