"""One conformance suite for every workspace backend (the seam of
services/workspaces/backend.py): the same journeys, over the real app on a
real port, against the in-memory backend (tests/support/fake_backend.py: real
loopback listeners), the Docker engine (the busybox stand-in image) and a
real two-node Docker Swarm (the `swarm_cluster` fixture):

create with progress, running through the proxy, stop, start, delete; an
instance killed outside ApraNova is noticed; reconciliation after a server
restart (an instance killed meanwhile, an orphan removed)."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import httpx
import pytest

from services.db import connect
from tests.support.app import RunningServer, auth, register
from tests.support.engines import DockerEngine, Engine, FakeEngine, SwarmEngine, through_proxy
from tests.support.workspaces import CREATE, STOP, WORKSPACE, ensure_test_image, wait_for_state

# Progress every engine reports, in this order (the status socket's step names).
STEPS = ["requested", "volume", "container", "ide", "running"]


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker),
                        pytest.param("swarm", marks=[pytest.mark.docker, pytest.mark.swarm])])
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




async def test_simultaneous_creates_make_one_instance(engine: Engine):
    """Concurrency is an input: ten creates of one workspace at once, one instance."""
    server = await engine.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=90) as client:
        user = await register(client)
        answers = await asyncio.gather(*(client.post(CREATE, headers=auth(user)) for _ in range(10)))
        assert sorted(a.status_code for a in answers) == [200] * 9 + [201], [a.text for a in answers]
        running = await wait_for_state(client, auth(user), {"running", "failed"}, timeout=90)
        assert running["state"] == "running", running
        doc = await server.services.workspaces.find(user["user"]["id"])
        mine = [i for i in await server.services.workspaces.backend.list_managed() if i.workspace_id == doc["_id"]]
        assert [i.ref for i in mine] == [doc["container_id"]] and mine[0].running
