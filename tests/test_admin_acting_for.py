"""An admin acting on another user's workspace through the student endpoints'
`?user_id=` is written to the audit log (who, what, whom, when), in the same
log as the console's actions: create/start, stop, delete, and the reads that
hand out the IDE's password or a way in (GET, the status socket, open).
Nothing is written for one's own workspace or for a request that failed.
Real app over HTTP and WebSocket, in-memory backend (tests/support/fake_backend.py)."""
from __future__ import annotations

import random

import httpx
import pytest

from tests.support.accounts import assert_envelope
from tests.support.app import auth, make_admin, register
from tests.support.workspaces import Socket

FAKE = "tests.support.fake_backend:FakeBackend"
WS = "/api/users/workspace/"


@pytest.fixture
async def site(start_server):
    return await start_server(workspace_backend=FAKE, instance_name=f"act{random.randrange(16**8):08x}")


async def audit(client: httpx.AsyncClient, admin: dict, **params) -> list[dict]:
    page = (await client.get("/api/admin/audit/", params={"page_size": 100, **params}, headers=auth(admin))).json()
    return list(reversed(page["results"]))  # oldest first


async def test_admin_requests_through_user_id_are_audited(site):
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        admin = await make_admin(site, client)
        student = await register(client, name="Watched Student")
        sid, as_student = student["user"]["id"], {"user_id": student["user"]["id"]}

        # A failed request writes nothing: there is no workspace yet.
        assert_envelope(await client.get(WS, params=as_student, headers=auth(admin)), 404)
        created = await client.post(WS + "create/", params=as_student, json={"wait": True}, headers=auth(admin))
        assert created.status_code == 201, created.text
        assert (await client.get(WS, params=as_student, headers=auth(admin))).status_code == 200
        socket = await Socket.open(site, f"?user_id={sid}", token=admin["access"])
        assert (await socket.receive())["type"] == "snapshot"
        socket.close()
        assert (await client.post(WS + "open/", params=as_student, headers=auth(admin))).status_code == 200
        assert (await client.post(WS + "stop/", params=as_student, headers=auth(admin))).status_code == 200
        assert (await client.post(WS + "create/", params=as_student, headers=auth(admin))).status_code == 200
        deleted = await client.delete(WS, params={**as_student, "purge": "true"}, headers=auth(admin))
        assert deleted.status_code == 200, deleted.text

        entries = await audit(client, admin, target_id=sid)
        assert [(e["action"], e["details"]) for e in entries] == [
            ("workspace.start", {"via": "user_id", "created": True}), ("workspace.read", {"via": "user_id"}),
            ("workspace.watch", {"via": "user_id"}), ("workspace.open", {"via": "user_id"}),
            ("workspace.stop", {"via": "user_id"}), ("workspace.start", {"via": "user_id", "created": False}),
            ("workspace.delete", {"via": "user_id", "purge": True})]
        assert all((e["actor_id"], e["actor_email"], e["target_email"]) ==
                   (admin["user"]["id"], admin["user"]["email"], student["user"]["email"]) and e["at"]
                   for e in entries)


async def test_own_workspace_and_refused_requests_are_not_audited(site):
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        admin = await make_admin(site, client)
        student, other = await register(client), await register(client)
        for who in (student, admin):  # their own, with or without ?user_id= naming themselves
            params = {"user_id": who["user"]["id"]} if who is admin else {}
            assert (await client.post(WS + "create/", params=params, json={"wait": True},
                                      headers=auth(who))).status_code == 201
            assert (await client.get(WS, params=params, headers=auth(who))).status_code == 200
            assert (await client.post(WS + "stop/", params=params, headers=auth(who))).status_code == 200
        # A student naming another user is refused, and nothing is logged.
        assert_envelope(await client.post(WS + "stop/", params={"user_id": other["user"]["id"]},
                                          headers=auth(student)), 403)
        assert await audit(client, admin) == []
