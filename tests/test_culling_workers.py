"""`python server.py --workers 2` with idle culling: both worker processes
run a culler on one database, and a workspace still gets exactly one warning
and one stop (compare-and-set, no lock). The in-memory backend stands in for
the engine (each worker has its own: stopping an instance another worker
made is a no-op there, which does not matter to what is counted here)."""
from __future__ import annotations

import asyncio
import json
import uuid

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.app import auth, port_range
from tests.support.processes import PASSWORD
from tests.support.processes import wait_for, workers_of

CULLING = {"WORKSPACE_BACKEND": "tests.support.fake_backend:FakeBackend", "WORKSPACE_EXPOSURE": "direct",
           "WORKSPACE_PORT_RANGE": port_range(28200), "WORKSPACE_IDLE_TIMEOUT": "3", "WORKSPACE_IDLE_WARNING": "2",
           "WORKSPACE_CULL_INTERVAL": "0.1"}


async def events_until_stopped(url: str, token: str) -> list[dict]:
    """Every event of the workspace from the first (?after=0), up to its stop
    and for 2 s more (both cullers keep looking meanwhile)."""
    socket = await websocket_connect(HTTPRequest(url.replace("http", "ws", 1) + "/api/users/workspace/status/?after=0",
                                                 headers={"Authorization": f"Bearer {token}"}))
    seen: list[dict] = []
    deadline = None
    loop = asyncio.get_running_loop()
    while deadline is None or loop.time() < deadline:
        try:
            raw = await asyncio.wait_for(socket.read_message(), 20 if deadline is None else deadline - loop.time())
        except asyncio.TimeoutError:
            break
        assert raw is not None, "the status socket closed"
        seen.append(json.loads(raw))
        if seen[-1].get("state") == "stopped" and deadline is None:
            deadline = loop.time() + 2
    socket.close()
    return seen


async def test_two_worker_processes_warn_once_and_stop_once(workers):
    server = workers(INSTANCE_NAME=f"cw{uuid.uuid4().hex[:8]}", **CULLING)
    assert len(workers_of(server)) == 2
    # Both reconciled their (empty) start: a later one would find the other's instance missing in its own engine.
    wait_for(lambda: server.output().count("watching Docker events") >= 2)
    body = {"name": "Ada", "email": "ada@example.com", "password1": PASSWORD, "password2": PASSWORD,
            "role": "student"}
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        tokens = (await http.post("/api/auth/registration/", json=body)).json()
        created = await http.post("/api/users/workspace/create/", headers=auth(tokens), json={"wait": True})
        assert created.json()["state"] == "running", created.text
    events = [m for m in await events_until_stopped(server.url, tokens["access"]) if m["type"] == "event"]
    assert [m.get("kind") for m in events].count("warning") == 1, [(m["state"], m["message"]) for m in events]
    assert [m["state"] for m in events if m.get("reason") == "idle"] == ["running", "stopping", "stopped"], events
    assert events[-1]["state"] == "stopped"
    assert server.stop() == 0
