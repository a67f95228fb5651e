"""Proxy test helpers: a signed-in student with a workspace on a loopback
stand-in (the `upstream` fixture), tickets redeemed, workspace hosts reached
over HTTP and WebSocket."""
from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.app import auth
from tests.support.app import register
from tests.support.proxy_upstream import another_port, start_upstream

OPEN = "/api/users/workspace/open/"


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def host_of(server, user_id: int) -> str:
    return f"ws-{user_id}.localhost:{port_of(server)}"


async def open_url(client, tokens: dict, user_id: int | None = None) -> str:
    query = f"?user_id={user_id}" if user_id is not None else ""
    response = await client.post(OPEN + query, headers=auth(tokens))
    assert response.status_code == 200, response.text
    return response.json()["url"]


async def workspace_get(server, host: str, path: str = "/", cookie: str | None = None, **kwargs) -> httpx.Response:
    """A request to a workspace host: connect to 127.0.0.1, send its Host
    (the C resolver does not resolve *.localhost; browsers do)."""
    headers = {"Host": host, **kwargs.pop("headers", {})}
    if cookie:
        headers["Cookie"] = cookie
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        return await http.request(kwargs.pop("method", "GET"), path, headers=headers, **kwargs)


async def redeem(server, url: str) -> tuple[httpx.Response, str | None]:
    parts = urlsplit(url)
    response = await workspace_get(server, parts.netloc, f"{parts.path}?{parts.query}")
    cookie = response.headers.get("set-cookie")
    return response, cookie.split(";", 1)[0] if cookie else None


async def proxy_socket(server, host: str, cookie: str | None, path: str = "/ws", origin: str | None = None,
                       extra: dict | None = None, **kwargs):
    headers = {"Host": host, "Origin": origin or f"http://{host}", **(extra or {})}
    if cookie:
        headers["Cookie"] = cookie
    request = HTTPRequest(f"{server.ws_url}{path}", headers=headers, connect_timeout=10)
    return await websocket_connect(request, **kwargs)


# No Docker engine for these: its reconciliation would (rightly) stop a
# running workspace document that has no container.
NO_DOCKER = {"docker_host": "unix:///nonexistent/docker.sock"}


RECORDERS: dict = {}


@pytest.fixture
async def upstream():
    server, port, recorder = await start_upstream()
    RECORDERS[port] = recorder
    yield port, recorder
    server.stop()


async def give_workspace(server, user_id: int, port: int, state: str = "running") -> None:
    """A workspace document as provisioning leaves it, its port the stand-in's
    (`port` names the stand-in: another port of it is used when taken)."""
    recorder = RECORDERS[port]
    if await server.db.workspaces.find_one({"port": port}):
        port = another_port(recorder)
        RECORDERS[port] = recorder
    await server.db.workspaces.delete_many({"owner_id": user_id})
    await server.db.workspaces.insert_one({"_id": uuid.uuid4().hex, "owner_id": user_id, "state": state,
                                           "port": port, "endpoint": {"host": "127.0.0.1", "port": port},
                                           "seq": 1, "progress": 100, "message": state,
                                           "version": 1, "password": "pw"})


async def eventually(request, predicate, timeout: float = 5.0) -> httpx.Response:
    """The first answer matching `predicate`: a change written straight to the
    database stands for another process's, which the proxy sees within ~1 s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await request()
        if predicate(response) or asyncio.get_running_loop().time() > deadline:
            return response
        await asyncio.sleep(0.1)


async def signed_in(server, client, port: int, **register_args) -> tuple[dict, str]:
    """A student with a running workspace and its proxy cookie."""
    user = await register(client, **register_args)
    await give_workspace(server, user["user"]["id"], port)
    _, cookie = await redeem(server, await open_url(client, user))
    assert cookie
    return user, cookie


async def signed_in_at(server, client, raw_port: int) -> tuple[str, str]:
    """A new student whose running workspace is a raw loopback server on
    `raw_port` (no stand-in recorder): its host and the proxy cookie."""
    user = await register(client)
    uid = user["user"]["id"]
    await server.db.workspaces.insert_one({"_id": uuid.uuid4().hex, "owner_id": uid, "state": "running",
                                           "port": raw_port, "endpoint": {"host": "127.0.0.1", "port": raw_port},
                                           "seq": 1, "progress": 100, "message": "running", "version": 1})
    _, cookie = await redeem(server, await open_url(client, user))
    return host_of(server, uid), cookie
