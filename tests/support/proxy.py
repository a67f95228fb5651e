from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.app import auth

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
