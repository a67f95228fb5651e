"""Nothing but its own server touches a student's workspace (issue 23,
part 4), against the real Docker engine: `create-user` beside a running
server, and two installations (two databases) on one engine."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import httpx
import pytest

from tests.support.app import auth, register, ROOT
from tests.support.workspaces import containers_of, CREATE, docker, WORKSPACE

pytestmark = pytest.mark.docker


async def running_workspaces(url: str, count: int) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        users = [await register(client) for _ in range(count)]
        bodies = await asyncio.gather(*(client.post(CREATE, headers=auth(u), json={"wait": True}) for u in users))
        assert [b.json()["state"] for b in bodies] == ["running"] * count, [b.text for b in bodies]
    return users


async def states(url: str, users: list[dict]) -> list[tuple[str, str]]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        bodies = [(await client.get(WORKSPACE, headers=auth(user))).json() for user in users]
    return [(body["state"], body["message"]) for body in bodies]


def running_containers(instance: str) -> set[str]:
    return set(docker("ps", "-q", "--no-trunc", "--filter", f"label=apranova.instance={instance}").split())


@pytest.mark.parametrize("instance_name", ["default", "same"])
def test_create_user_beside_a_running_server_leaves_every_workspace_running(tmp_path, servers, instance_name):
    from tests.support.processes import PASSWORD, ServerProcess, server_env

    env = servers.process_env()
    server = ServerProcess(tmp_path / "data", **env)
    try:
        server.wait_ready()
        users = asyncio.run(running_workspaces(server.url, 2))
        before = running_containers(servers.instance)
        # The operator's shell does not carry the server's settings ("default"), or does ("same").
        task_env = server_env(**({"INSTANCE_NAME": servers.instance} if instance_name == "same" else {}))
        task_env["LOG_LEVEL"] = "DEBUG"
        result = subprocess.run(
            [sys.executable, "server.py", "create-user", "--email", "first-admin@example.com", "--role",
             "superadmin", "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, env=task_env, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "created user" in result.stdout
        for word in ("Docker", "watching", "reconcil", "orphan", "culler"):  # nothing of the engine ran
            assert word not in result.stderr, result.stderr
        asyncio.run(asyncio.sleep(1.5))  # a watcher of the task, had one run, would have acted by now
        assert asyncio.run(states(server.url, users)) == [("running", "Workspace is running")] * 2
        assert running_containers(servers.instance) == before and len(before) == 2
        server.stop(signal.SIGTERM)
        server = ServerProcess(tmp_path / "data", **env)  # and the server, restarted, still owns them
        server.wait_ready()
        asyncio.run(asyncio.sleep(1.5))
        assert asyncio.run(states(server.url, users)) == [("running", "Workspace is running")] * 2
    finally:
        server.stop(signal.SIGTERM)


async def test_two_installations_on_one_engine_never_touch_each_others_workspaces(servers):
    """Two databases, one
    INSTANCE_NAME, one engine, both started before either had a workspace
    (a later start refuses: see the next test). Their users' ids, hence
    their containers' and volumes' names, collide: the second may not take
    the first's container or files for its own."""
    first = await servers.start()
    second = await servers.start(mongodb_db=f"t_{servers.instance}_second")  # another installation
    assert first.services.settings.mongodb_db != second.services.settings.mongodb_db
    ours = await running_workspaces(first.url, 2)  # users 1 and 2 of the first
    containers = running_containers(servers.instance)
    async with httpx.AsyncClient(base_url=second.url, timeout=60) as client:
        theirs = [await register(client) for _ in range(3)]  # users 1, 2 and 3 of the second
        clash = (await client.post(CREATE, headers=auth(theirs[0]), json={"wait": True})).json()
        assert clash["state"] == "failed" and "Your workspace could not start" in clash["message"], clash
        own = (await client.post(CREATE, headers=auth(theirs[2]), json={"wait": True})).json()
        assert own["state"] == "running", own
        doc = await second.services.workspaces.find(theirs[0]["user"]["id"])
        event = await second.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": doc["seq"]})
        assert "belongs to another ApraNova deployment" in event["detail"]
    assert containers < running_containers(servers.instance)
    # Each reconciles (as at every (re)connection to the engine): the other's are not orphans of its own.
    await first.services.workspaces.reconciler.reconcile()
    await second.services.workspaces.reconciler.reconcile()
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:  # and a stop is only its own
        assert (await client.post("/api/users/workspace/stop/", headers=auth(theirs[2]))).json()["state"] == "stopped"
        assert (await client.delete(WORKSPACE + "?purge=true", headers=auth(theirs[0]))).status_code < 300
    await asyncio.sleep(1)
    assert running_containers(servers.instance) == containers
    assert await states(first.url, ours) == [("running", "Workspace is running")] * 2
    first_id = (await first.db.meta.find_one({"_id": "deployment"}))["id"]
    labels = docker("inspect", "--format", '{{index .Config.Labels "apranova.deployment"}}', *containers).split()
    assert labels == [first_id] * 2
    volumes = docker("volume", "ls", "-q", "--filter", f"label=apranova.deployment={first_id}").split()
    assert len(volumes) == 2, "the first's students' files are still there"


def test_a_third_installation_under_the_same_name_refuses_to_start_in_one_line(tmp_path, servers):
    from tests.support.processes import ServerProcess

    env = servers.process_env()
    first = ServerProcess(tmp_path / "one", **env)
    try:
        first.wait_ready()
        users = asyncio.run(running_workspaces(first.url, 1))
        before = running_containers(servers.instance)
        second = ServerProcess(tmp_path / "two", **env)  # its own database
        assert second.proc.wait(60) == 2
        lines = [line for line in second.output().splitlines() if "cannot start" in line]
        assert len(lines) == 1 and "INSTANCE_NAME" in lines[0] and "WORKSPACE_TAKE_OVER=true" in lines[0], \
            second.output()
        assert running_containers(servers.instance) == before
        assert asyncio.run(states(first.url, users)) == [("running", "Workspace is running")]
        # Told to, it takes them over: they are its own now (its database does not know them: orphans).
        third = ServerProcess(tmp_path / "two", WORKSPACE_TAKE_OVER="true", **env)
        third.wait_ready()
        assert "removing orphan workspace instance" in _wait_for(third, "removing orphan")
        third.stop(signal.SIGTERM)
    finally:
        first.stop(signal.SIGTERM)
    assert containers_of(servers.instance, "apranova.managed=true") == []


def _wait_for(server, text: str, timeout: float = 20) -> str:
    import time

    deadline = time.monotonic() + timeout
    while text not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    return server.output()
