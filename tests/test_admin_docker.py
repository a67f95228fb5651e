"""Admin workspace actions on the real Docker engine: start, stop, delete a
student's workspace through /api/admin/workspaces/, its event history, and a
disabled account's workspace being stopped; all audited."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.accounts import assert_envelope
from tests.support.app import auth, make_admin, register
from tests.support.workspaces import containers_of, CONTRACT_503

pytestmark = pytest.mark.docker
WORKSPACES = "/api/admin/workspaces/"


async def state_of(client: httpx.AsyncClient, admin: dict, user_id: int) -> str | None:
    listed = (await client.get(WORKSPACES, params={"page_size": 100}, headers=auth(admin))).json()
    return next((w["state"] for w in listed["results"] if w["owner"]["id"] == user_id), None)


async def until_state(client: httpx.AsyncClient, admin: dict, user_id: int, state: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while (current := await state_of(client, admin, user_id)) != state:
        assert time.monotonic() < deadline, f"workspace is {current}, not {state}"
        await asyncio.sleep(0.3)


async def test_admin_starts_stops_and_deletes_a_students_workspace(servers):
    server = await servers.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        admin = await make_admin(server, client)
        student = await register(client, name="Student With IDE")
        sid = student["user"]["id"]
        base = f"{WORKSPACES}{sid}/"

        started = await client.post(base + "start/", headers=auth(admin))
        assert started.status_code == 200, started.text
        await until_state(client, admin, sid, "running")
        assert len(containers_of(servers.instance, f"apranova.user_id={sid}")) == 1
        # The student sees the same workspace as their own.
        mine = await client.get("/api/users/workspace/", headers=auth(student))
        assert mine.json()["state"] == "running"

        stopped = await client.post(base + "stop/", headers=auth(admin))
        assert stopped.json()["state"] == "stopped"
        assert (await client.post(base + "start/", headers=auth(admin))).status_code == 200
        await until_state(client, admin, sid, "running")
        deleted = await client.delete(base, headers=auth(admin))
        assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
        assert containers_of(servers.instance, f"apranova.user_id={sid}") == []
        assert await state_of(client, admin, sid) is None  # deleted ones are listed only when asked for

        history = (await client.get(base + "events/", params={"page_size": 100}, headers=auth(admin))).json()
        states = [event["state"] for event in reversed(history["results"])]
        assert states[0] == "provisioning" and states[-1] == "deleted" and "stopped" in states
        assert [event["seq"] for event in history["results"]] == sorted(
            (event["seq"] for event in history["results"]), reverse=True)

        audit = (await client.get("/api/admin/audit/", params={"target_id": sid}, headers=auth(admin))).json()
        assert [e["action"] for e in audit["results"]] == ["workspace.delete", "workspace.start", "workspace.stop",
                                                          "workspace.start"]
        # A student cannot act on another's workspace through the admin API.
        other = await register(client)
        assert_envelope(await client.post(base + "start/", headers=auth(other)), 403)


async def test_the_workspace_list_shows_cpu_and_memory_from_the_engine(servers):
    """Docker's one-shot stats of a running busybox workspace (64m limit, see
    WorkspaceServers): a CPU figure, memory above zero and under the limit;
    nothing once it is stopped."""
    server = await servers.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        admin = await make_admin(server, client)
        student = await register(client)
        response = await client.post("/api/users/workspace/create/", json={"wait": True}, headers=auth(student))
        assert response.json()["state"] == "running", response.text
        started = time.monotonic()
        item = (await client.get(WORKSPACES, headers=auth(admin))).json()["results"][0]
        took = time.monotonic() - started
        assert item["state"] == "running" and isinstance(item["cpu_percent"], float), item
        assert 0 <= item["cpu_percent"] <= 100 * 2  # at most every core of this machine
        assert item["memory_limit"] == 64 * 2**20 and 0 < item["memory_bytes"] < item["memory_limit"], item
        assert took < 10, f"the list took {took:.1f} s"  # bounded by the 3 s stats timeout, never 30 s
        await client.post("/api/users/workspace/stop/", headers=auth(student))
        item = (await client.get(WORKSPACES, headers=auth(admin))).json()["results"][0]
        assert (item["state"], item["cpu_percent"], item["memory_bytes"]) == ("stopped", None, None)


async def test_disabling_a_user_stops_their_workspace(servers):
    server = await servers.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        admin = await make_admin(server, client)
        student = await register(client)
        sid = student["user"]["id"]
        response = await client.post("/api/users/workspace/create/", json={"wait": True}, headers=auth(student))
        assert response.json()["state"] == "running", response.text
        disabled = await client.put(f"/api/admin/users/{sid}/", json={"disabled": True}, headers=auth(admin))
        assert disabled.status_code == 200
        assert await state_of(client, admin, sid) == "stopped"
        entry = (await client.get("/api/admin/audit/", headers=auth(admin))).json()["results"][0]
        assert (entry["action"], entry["details"]) == ("user.disabled", {"workspace": "stopped"})


async def test_without_docker_actions_answer_503_and_accounts_still_change(servers, tmp_path):
    server = await servers.start(docker_host=f"unix://{tmp_path}/no-such-docker.sock")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        admin = await make_admin(server, client)
        student = await register(client)
        sid = student["user"]["id"]
        response = await client.post(f"{WORKSPACES}{sid}/start/", headers=auth(admin))
        assert response.status_code == 503 and response.json() == CONTRACT_503
        assert_envelope(await client.post(f"{WORKSPACES}12345/stop/", headers=auth(admin)), 404)
        # No workspace audit entry for an action that did not happen.
        assert (await client.get("/api/admin/audit/", headers=auth(admin))).json()["count"] == 0
