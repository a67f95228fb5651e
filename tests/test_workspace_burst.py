"""A class's first burst against the real Docker engine (issue 23, part 2):
many first creates at once, across two servers of one deployment; duplicate
workspace networks already on the engine (Docker lets several share a name,
and then every launch fails "network ... is ambiguous"); and a server killed
with -9 while workspaces provision."""
from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.support.app import auth, register
from tests.support.workspaces import containers_of, CREATE, create_all, docker, DOCKER_SOCKET, wait_for_state, WORKSPACE

pytestmark = pytest.mark.docker


def networks_named(name: str) -> list[str]:
    """Ids of the networks called exactly `name` (Docker's filter matches parts of names)."""
    found = docker("network", "ls", "--no-trunc", "--filter", f"name={name}", "--format", "{{.ID}} {{.Name}}")
    return [line.split()[0] for line in found.splitlines() if line.split()[1] == name]


async def make_duplicates(name: str, instance: str) -> list[str]:
    """At least two networks named `name`, made as a burst of creates does
    (the engine's duplicate check is not atomic): several creates at once
    through the Engine API, repeated until the race made a duplicate."""
    body = {"Name": name, "Driver": "bridge", "CheckDuplicate": True,
            "Labels": {"apranova.instance": instance, "apranova.role": "workspace-network"},
            "Options": {"com.docker.network.bridge.enable_icc": "false"}}
    transport = httpx.AsyncHTTPTransport(uds=DOCKER_SOCKET)
    async with httpx.AsyncClient(transport=transport, base_url="http://docker", timeout=30) as engine:
        for _ in range(20):
            await asyncio.gather(*(engine.post("/networks/create", json=body) for _ in range(8)))
            if len(found := networks_named(name)) > 1:
                return found
    raise AssertionError("the engine never made a duplicate network; this engine's check may be atomic")


async def test_twenty_first_creates_at_once_across_two_servers_all_run_on_one_network(servers):
    settings = {"workspace_wait_timeout": "120", "workspace_ready_timeout": "90"}
    first = await servers.start(**settings)
    second = await servers.start(**settings)  # the same database: one deployment
    async with httpx.AsyncClient(base_url=first.url, timeout=150) as one, \
            httpx.AsyncClient(base_url=second.url, timeout=150) as two:
        users = [await register(one) for _ in range(20)]
        answers = await asyncio.gather(create_all(one, users[::2]), create_all(two, users[1::2]))
    states = [body.get("state") for half in answers for body in half]
    assert states == ["running"] * 20, answers
    assert len(networks_named(f"{servers.instance}-workspaces")) == 1
    assert len(containers_of(servers.instance, "apranova.managed=true")) == 20


async def test_duplicate_networks_are_healed_at_start_up_and_before_a_launch(servers, caplog):
    name = f"{servers.instance}-workspaces"
    await make_duplicates(name, servers.instance)
    server = await servers.start(workspace_wait_timeout="90", workspace_ready_timeout="60")
    assert len(networks_named(name)) == 1, "start-up keeps one and removes the empty others"
    # Duplicates made after start-up (a burst of another process of this
    # deployment, before any workspace joined): the launches heal them.
    docker("network", "rm", name)
    await make_duplicates(name, servers.instance)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        users = [await register(client) for _ in range(5)]
        bodies = await create_all(client, users)
    assert [body.get("state") for body in bodies] == ["running"] * 5, bodies
    assert len(networks_named(name)) == 1
    assert caplog.text.count("duplicate workspace network") >= 2


async def test_a_refusal_by_the_engine_is_named_as_such_to_the_student(servers):
    """The engine refusing to create (here: a memory limit it rejects) is
    not 'its container did not start'; the engine's words stay for admins."""
    server = await servers.start(workspace_memory="1m")  # Docker: "Minimum memory limit allowed is 6MB"
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert body["state"] == "failed"
    assert body["message"].startswith("Your workspace could not start: Docker refused to create the workspace."), body
    assert "memory" not in body["message"].lower()
    doc = await server.services.workspaces.find(user["user"]["id"])
    event = await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": doc["seq"]})
    assert event["step"] == "container" and "Docker refused to create the workspace:" in event["detail"]


def test_kill_9_while_five_provision_then_restart_all_five_run_with_no_orphan(tmp_path, servers):
    from tests.support.processes import ServerProcess, children_using

    env = servers.process_env()
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, **env)
    try:
        server.wait_ready()
        users = asyncio.run(_register_and_create(server.url, 5))
        # Kill as soon as the engine has begun making them (some containers, not all running).
        deadline = time.monotonic() + 20
        while not containers_of(servers.instance) and time.monotonic() < deadline:
            time.sleep(0.02)
        states = asyncio.run(_states(server.url, users))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        assert "provisioning" in states, f"the kill came too late to test anything: {states}"
        deadline = time.monotonic() + 20
        while children_using(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)  # the embedded database follows its parent out
        server = ServerProcess(data_dir, **env)
        server.wait_ready()
        bodies = asyncio.run(_wait_running(server.url, users))
        assert [body["state"] for body in bodies] == ["running"] * 5, bodies
        everything = containers_of(servers.instance)  # workspaces and any one-shot setup container
        running = docker("ps", "-q", "--filter", f"label=apranova.instance={servers.instance}").split()
        assert len(everything) == 5 and sorted(everything) == sorted(running), docker("ps", "-a")
    finally:
        server.stop(signal.SIGTERM)


async def _register_and_create(url: str, count: int) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        users = [await register(client) for _ in range(count)]
        answers = await asyncio.gather(*(client.post(CREATE, headers=auth(user), json={}) for user in users))
        assert all(answer.json()["state"] == "provisioning" for answer in answers), [a.text for a in answers]
    return users


async def _states(url: str, users: list[dict]) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return [(await client.get(WORKSPACE, headers=auth(user))).json()["state"] for user in users]


async def _wait_running(url: str, users: list[dict]) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return [await wait_for_state(client, auth(user), {"running", "failed"}, timeout=90) for user in users]



# The IDE exits on its first start (code-server's own start timing out on a
# busy host), and starts the second time: the home volume remembers the try.
EXITS_ON_FIRST_START = ("/bin/busybox sh -c 'if [ -e /home/coder/.tried ]; then exec /bin/busybox httpd -f -p 8080 "
                        "-h /www; fi; /bin/busybox touch /home/coder/.tried; exit 1'")


async def test_an_ide_that_exits_while_starting_is_started_again_within_the_run(servers):
    server = await servers.start(workspace_cmd=EXITS_ON_FIRST_START)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert body["state"] == "running" and body["run"] == 1, body
    doc = await server.services.workspaces.find(user["user"]["id"])
    steps = [e.get("step") async for e in server.db.workspace_events.find({"workspace_id": doc["_id"]})]
    assert steps.count("container") == 2, steps  # two launches in one run, no failure between
    assert "failure" not in [e async for e in server.db.workspace_events.find({"workspace_id": doc["_id"],
                                                                              "kind": "failure"})]
