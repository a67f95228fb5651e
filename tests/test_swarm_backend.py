"""WORKSPACE_BACKEND=swarm on a real two-node swarm (tests/support/swarm_env.py):
a workspace is a one-replica service placed on node 2 and reached by the
server's proxy from the host; its service carries our labels, per-task
reservations and limits, no restart, init and a short grace; its home's
node is recorded and later starts are pinned there; the manager gone is the
contract's 503; a lost node fails the workspace, saying the machine went away."""
from __future__ import annotations

import json
import subprocess
import time
from typing import AsyncIterator

import httpx
import pytest

from tests.support.app import auth, register
from tests.support.engines import SwarmEngine, through_proxy
from tests.support.workspaces import CONTRACT_503, CREATE, STOP, DockerProxy, ensure_test_image, wait_for_state

pytestmark = [pytest.mark.docker, pytest.mark.swarm]


@pytest.fixture
def cluster(swarm_cluster):
    ensure_test_image()
    return swarm_cluster


@pytest.fixture
async def engine(cluster, mongo, tmp_path) -> AsyncIterator[SwarmEngine]:
    made = SwarmEngine(mongo, tmp_path, cluster)
    try:
        yield made
    finally:
        await made.close()


def service(cluster, name: str) -> dict:
    out = subprocess.run(["docker", "-H", cluster.manager, "service", "inspect", name], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


async def messages_of(server, workspace_id: str) -> list[str]:
    return [e["message"] async for e in server.db.workspace_events.find({"workspace_id": workspace_id}).sort("seq", 1)]


async def test_a_workspace_on_node2_is_a_pinned_service_reached_through_the_proxy(cluster, engine):
    node2 = cluster.node("node2")
    engine.extra = {"swarm_constraints": f"node.hostname=={node2.hostname}"}
    server = await engine.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=90) as client:
        user = await register(client)
        running = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        assert running["state"] == "running", running
        assert len(running["password"]) >= 16  # reachable on the node network: code-server keeps its password
        doc = await server.services.workspaces.find(user["user"]["id"])
        assert doc["placement"] == {"node": node2.hostname, "constraint": f"node.id=={node2.node_id}"}
        assert doc["endpoint"]["host"] == node2.address  # host mode, at the node's address
        said = await messages_of(server, doc["_id"])
        for step in ("Creating the service", "Service created", f"Placed on {node2.hostname}",
                     f"Started on {node2.hostname}", "Workspace is running"):
            assert any(m.startswith(step) for m in said), (step, said)
        assert (await through_proxy(server, client, user, "/healthz")).status_code == 200

        found = service(cluster, doc["container_id"])
        spec, task = found["Spec"], found["Spec"]["TaskTemplate"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 1 and spec["Name"] == f"{engine.instance}-ws-{doc['owner_id']}"
        assert spec["Labels"]["apranova.workspace_id"] == doc["_id"]
        assert spec["Labels"]["apranova.instance"] == engine.instance
        assert task["RestartPolicy"]["Condition"] == "none"
        container = task["ContainerSpec"]
        assert container["Init"] is True and container["StopGracePeriod"] == 2 * 10**9
        assert container["User"] == "1000:1000" and container["CapabilityDrop"] == ["ALL"]
        assert f"PASSWORD={running['password']}" in container["Env"]
        limits, reserved = task["Resources"]["Limits"], task["Resources"]["Reservations"]
        assert (limits["NanoCPUs"], limits["MemoryBytes"], limits["Pids"]) == (25 * 10**7, 64 * 2**20, 64)
        assert (reserved["NanoCPUs"], reserved["MemoryBytes"]) == (25 * 10**7, 64 * 2**20)
        assert f"node.id=={node2.node_id}" in task["Placement"]["Constraints"]
        assert [p["PublishMode"] for p in spec["EndpointSpec"]["Ports"]] == ["host"]

        started = time.monotonic()
        assert (await client.post(STOP, headers=auth(user))).json()["state"] == "stopped"
        stop_seconds = time.monotonic() - started
        assert service(cluster, doc["container_id"])["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
        assert stop_seconds < 8, stop_seconds  # init and the 2 s grace, not Docker's 10 s
    await engine.stop(server)

    # Without the operator's constraint, the recorded pin alone keeps it on the node holding its home.
    engine.extra = {}
    again = await engine.start()
    async with httpx.AsyncClient(base_url=again.url, timeout=90) as client:
        restarted = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        assert restarted["state"] == "running", restarted
        doc = await again.services.workspaces.find(user["user"]["id"])
        assert doc["endpoint"]["host"] == node2.address
        assert (await through_proxy(again, client, user, "/healthz")).status_code == 200


async def test_the_manager_unreachable_answers_the_contracts_503(cluster, engine, tmp_path):
    proxy = DockerProxy(str(tmp_path / "manager.sock"), target=cluster.manager.removeprefix("unix://"))
    await proxy.open()
    engine.extra = {"docker_host": proxy.url}
    server = await engine.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=90) as client:
            user = await register(client)
            await proxy.close()
            refused = await client.post(CREATE, headers=auth(user))
            assert refused.status_code == 503 and refused.json() == CONTRACT_503
            await proxy.open()
            back = await client.post(CREATE, headers=auth(user), json={"wait": True})
            assert back.status_code == 201 and back.json()["state"] == "running", back.text
    finally:
        await proxy.close()


async def test_an_engine_that_is_no_swarm_manager_answers_503(cluster, engine):
    engine.extra = {"docker_host": cluster.node("node2").docker_host}  # a worker: it cannot run services
    server = await engine.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        refused = await client.post(CREATE, headers=auth(user))
        assert refused.status_code == 503 and refused.json() == CONTRACT_503


async def test_a_lost_node_fails_its_workspace_saying_the_machine_went_away(cluster, engine):
    node2 = cluster.node("node2")
    engine.extra = {"swarm_constraints": f"node.hostname=={node2.hostname}"}
    server = await engine.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=90) as client:
        user = await register(client)
        assert (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()["state"] == "running"
        cluster.kill_node("node2")
        try:
            killed = time.monotonic()
            failed = await wait_for_state(client, auth(user), {"failed", "stopped"}, timeout=60)
            seconds = time.monotonic() - killed
            assert failed["state"] == "failed", failed
            assert "the machine running it went away" in failed["message"], failed
            doc = await server.services.workspaces.find(user["user"]["id"])
            event = await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": doc["seq"]})
            assert (event["kind"], event["reason"]) == ("failure", "lost")
            print(f"node loss -> failed in {seconds:.1f} s")
            # Its files are on node 2: a start while node 2 is down fails at once, saying so.
            started = time.monotonic()
            again = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
            assert again["state"] == "failed" and time.monotonic() - started < 20, again
            doc = await server.services.workspaces.find(user["user"]["id"])
            event = await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": doc["seq"]})
            assert f"({node2.hostname}) is down" in event["detail"], event
        finally:
            cluster.restart_node("node2")
