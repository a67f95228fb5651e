"""One conformance suite for every workspace backend (the seam of
services/workspaces/backend.py): the same journeys, over the real app on a
real port, against the in-memory backend (tests/fake_backend.py: real
loopback listeners), the Docker engine (the busybox stand-in image) and a
real two-node Docker Swarm (the `swarm_cluster` fixture):

create with progress, running through the proxy, stop, start, delete; an
instance killed outside ApraNova is noticed; reconciliation after a server
restart (an instance killed meanwhile, an orphan removed)."""
from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from services.db import connect

from tests.conftest import RunningServer, auth, register, serve, test_settings
from tests.workspaces_helpers import (CREATE, STOP, TEST_IMAGE, WORKSPACE, WorkspaceServers, docker, ensure_test_image,
                                      wait_for_state)

OPEN = "/api/users/workspace/open/"
FAKE = "tests.fake_backend:FakeBackend"
# Progress every engine reports, in this order (the status socket's step names).
STEPS = ["requested", "volume", "container", "ide", "running"]


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
        server = await serve(test_settings(self.mongo, self.tmp_path, mongodb_db=self.db_name, **self.overrides()))
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
        if cluster.registry not in self.images:
            self.images[cluster.registry] = cluster.push_image(TEST_IMAGE)

    def overrides(self) -> dict[str, Any]:
        return {"workspace_backend": "swarm", "docker_host": self.cluster.manager, "instance_name": self.instance,
                "workspace_image": self.images[self.cluster.registry], "workspace_ready_timeout": "60",
                "workspace_wait_timeout": "90", "workspace_memory": "64m", "workspace_pids": "64",
                "workspace_cpus": "0.25", "workspace_exposure": "network"}

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


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker),
                        pytest.param("swarm", marks=pytest.mark.docker)])
def backend_kind(request) -> tuple[str, Any]:
    """The backend and what it needs, got here (not in the async fixture,
    which cannot set up another async fixture): the Docker engine and the
    stand-in image, or the two-node swarm; each fails, not skips, when CI=true."""
    if request.param == "docker":
        return "docker", request.getfixturevalue("servers")
    if request.param == "swarm":
        cluster = request.getfixturevalue("swarm_cluster")
        ensure_test_image()
        return "swarm", cluster
    return "fake", None


@pytest.fixture
async def engine(backend_kind, mongo, tmp_path) -> AsyncIterator[Engine]:
    kind, resource = backend_kind
    if kind == "fake":
        made: Engine = FakeEngine(mongo, tmp_path)
    elif kind == "docker":
        made = DockerEngine(mongo, tmp_path, resource)
    else:
        made = SwarmEngine(mongo, tmp_path, resource)
    try:
        yield made
    finally:
        await made.close()


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


async def steps_of(server: RunningServer, workspace_id: str, run: int) -> list[str]:
    events = server.db.workspace_events.find({"workspace_id": workspace_id, "run": run}).sort("seq", 1)
    return [e["step"] async for e in events if e.get("kind") == "step"]


async def test_create_progress_proxy_stop_start_delete(engine: Engine):
    server = await engine.start()
    backend = server.services.workspaces.backend
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        headers = auth(user)
        created = await client.post(CREATE, headers=headers)
        assert created.status_code == 201 and created.json()["state"] == "provisioning", created.text
        running = await wait_for_state(client, headers, {"running", "failed"}, timeout=90)
        assert running["state"] == "running", running
        doc = await server.services.workspaces.find(user["user"]["id"])
        steps = await steps_of(server, doc["_id"], 1)
        assert [s for s in steps if s in STEPS] == STEPS, steps  # every engine's progress, in order
        progress = [e["progress"] async for e in server.db.workspace_events.find({"workspace_id": doc["_id"]})]
        assert progress == sorted(progress) and progress[-1] == 100
        page = await through_proxy(server, client, user, "/healthz")
        assert page.status_code == 200  # the IDE answers through the proxy, nowhere else asked

        assert (await client.post(STOP, headers=headers)).json()["state"] == "stopped"
        ref = (await server.services.workspaces.find(user["user"]["id"]))["container_id"]
        instance = await backend.inspect(ref)
        assert instance is None or not instance.running

        again = await client.post(CREATE, headers=headers, json={"wait": True})
        assert again.status_code == 200 and again.json()["state"] == "running", again.text
        assert (await through_proxy(server, client, user, "/healthz")).status_code == 200

        deleted = await client.delete(WORKSPACE + "?purge=true", headers=headers)
        assert deleted.status_code == 200, deleted.text
        assert (await client.get(WORKSPACE, headers=headers)).status_code == 404
        assert not [i for i in await backend.list_managed() if i.workspace_id == doc["_id"]]


async def test_an_instance_killed_outside_is_noticed(engine: Engine):
    server = await engine.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        running = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        assert running["state"] == "running", running
        await engine.kill(server, await server.services.workspaces.find(user["user"]["id"]))
        stopped = await wait_for_state(client, auth(user), {"stopped", "failed"}, timeout=60)
        assert stopped["state"] == "stopped" and "stopped unexpectedly" in stopped["message"], stopped
        again = await client.post(CREATE, headers=auth(user), json={"wait": True})
        assert again.json()["state"] == "running", again.text  # and it starts again


async def test_reconcile_after_a_restart(engine: Engine):
    """While no server watches, one instance is killed and another's
    document goes (an orphan): the next server's start-up sees both."""
    server = await engine.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        users = [await register(client) for _ in range(2)]
        for user in users:
            assert (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()["state"] == "running"
    killed, orphan = [await server.services.workspaces.find(u["user"]["id"]) for u in users]
    await engine.stop(server)
    await engine.kill(server, killed)
    client, db = connect(engine.mongo.uri, engine.db_name, 2000)
    await db.workspaces.delete_one({"_id": orphan["_id"]})
    await client.close()

    again = await engine.start()
    async with httpx.AsyncClient(base_url=again.url, timeout=60) as client:
        stopped = await wait_for_state(client, auth(users[0]), {"stopped", "failed"}, timeout=60)
        assert stopped["state"] == "stopped" and "stopped unexpectedly" in stopped["message"], stopped
    backend = again.services.workspaces.backend
    for _ in range(100):
        if not [i for i in await backend.list_managed() if i.workspace_id == orphan["_id"]]:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the orphan instance was not removed")


