"""Sibling workspaces walled off (issue 19, findings 7 and 8), over HTTP
against a hostile workspace (tests/proxy_hostile.py), on both lanes: what a
workspace answers cannot toss cookies to its siblings or steer a front
proxy, a junk cookie for the parent domain locks nobody out, another site's
page gets nothing but a top-level page load, tickets never reach a
workspace, and one login holds a bounded number of WebSockets. The same in
Chromium under a wildcard-style domain: tests/test_proxy_siblings_browser.py."""
from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from tornado.websocket import WebSocketClientConnection

from tests.support.app import auth, register
from tests.support.proxy_hostile import Hostile, ok
from tests.support.proxy import give_workspace, host_of, NO_DOCKER, open_url, proxy_socket, redeem, workspace_get


@pytest.fixture(params=[True, False], ids=["fast-lane", "tornado"])
async def site(request, start_server):
    """(server, api client, the workspace's host, its cookie, the hostile workspace)."""
    hostile = await Hostile().start()
    server = await start_server(proxy_fast_lane=str(request.param).lower(), **NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        uid = user["user"]["id"]
        await server.db.workspaces.insert_one({"_id": uuid.uuid4().hex, "owner_id": uid, "state": "running",
                                               "port": hostile.port, "version": 1, "seq": 1, "progress": 100,
                                               "endpoint": {"host": "127.0.0.1", "port": hostile.port}})
        _, cookie = await redeem(server, await open_url(client, user))
        yield server, client, user, host_of(server, uid), cookie, hostile
    hostile.close()


async def test_a_workspace_cannot_toss_cookies_or_steer_a_front_proxy(site):
    server, _, _, host, cookie, hostile = site
    hostile.answers["/"] = ok(b"page", "Set-Cookie: x=1; Domain=localhost; Path=/",
                              "Set-Cookie: y=2; path=/; DOMAIN=.localhost; HttpOnly",
                              "Set-Cookie: apranova_ws=forged", "Set-Cookie: __Host-apranova_ws=forged; Secure; Path=/",
                              "X-Accel-Redirect: /internal/secret", "X-Accel-Buffering: no",
                              "X-Sendfile: /etc/passwd", "X-Kept: yes")
    response = await workspace_get(server, host, "/", cookie)
    assert response.status_code == 200 and response.text == "page"
    assert response.headers.get_list("set-cookie") == ["x=1; Path=/", "y=2; path=/; HttpOnly"]
    for name in ("x-accel-redirect", "x-accel-buffering", "x-sendfile"):
        assert name not in response.headers
    assert response.headers["x-kept"] == "yes"
    assert "frame-ancestors 'self'" in response.headers.get_list("content-security-policy")


async def test_a_junk_cookie_for_the_parent_domain_locks_nobody_out(site):
    """A sibling's script can set `apranova_ws=junk; domain=<parent>`: the
    browser then sends two; any valid one is enough."""
    server, _, _, host, cookie, hostile = site
    value = cookie.split("=", 1)[1]
    for header in (f"apranova_ws=junk; {cookie}", f"{cookie}; apranova_ws=junk", f"apranova_ws=; __Host-apranova_ws={value}"):
        response = await workspace_get(server, host, "/mine", header)
        assert response.status_code == 200 and response.text == "real:/mine", header
    assert (await workspace_get(server, host, "/junk", "apranova_ws=junk; apranova_ws=x.y")).status_code == 401


@pytest.mark.parametrize(("headers", "allowed"), [
    ({"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}, True),
    ({"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, True),
    ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, True),
    ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}, False),
    ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}, False),
    ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}, False),
    ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}, False),
    ({"Origin": "http://ws-999.localhost"}, False),
    ({"Origin": "null"}, False),
    ({"Referer": "http://ws-999.localhost/page", "Accept": "image/avif,image/*"}, False),
    ({"Referer": "http://ws-999.localhost/page", "Accept": "text/html,*/*"}, True),
    ({}, True),
], ids=lambda value: ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value))
async def test_another_sites_page_gets_only_a_top_level_page_load(site, headers, allowed):
    server, _, _, host, cookie, hostile = site
    response = await workspace_get(server, host, "/target", cookie, headers=headers)
    if allowed:
        assert response.status_code == 200 and hostile.paths() == ["/target"]
    else:
        assert response.status_code == 403 and response.json()["details"] == {"reason": "origin"}
        assert hostile.seen == []


async def test_a_ticket_never_reaches_the_workspace_and_is_spent(site):
    """With a valid cookie already set, a live ticket in the query (in any
    encoding) is not forwarded, and cannot be redeemed afterwards."""
    server, client, user, host, cookie, hostile = site
    for method, query in (("GET", "%74icket"), ("GET", "tick%65t"), ("POST", "ticket"), ("DELETE", "%74icket")):
        url = await open_url(client, user)
        ticket = urlsplit(url).query.split("=", 1)[1]
        response = await workspace_get(server, host, f"/p?a=1&{query}={ticket}&b=2", cookie, method=method,
                                       headers={"Origin": f"http://{host}"})
        assert response.status_code in (200, 302), (method, query, response.status_code)
        again, _ = await redeem(server, url)
        assert again.status_code == 401, (method, query)  # spent
    assert hostile.seen and all("icket" not in seen.target and "tick" not in seen.target for seen in hostile.seen)
    assert [s.target for s in hostile.seen if s.method != "GET"] == ["/p?a=1&b=2"] * 2


async def test_https_uses_a_host_only_cookie(start_server, upstream):
    """Under https the cookie is `__Host-apranova_ws`: Secure, Path=/, no
    Domain, so no sibling host's page can set one in its place."""
    server = await start_server(trusted_proxies="127.0.0.1/32", **NO_DOCKER)
    port = upstream[0]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        await give_workspace(server, user["user"]["id"], port)
        url = (await client.post("/api/users/workspace/open/", headers={**auth(user), "X-Forwarded-Proto": "https"})
               ).json()["url"]
    parts = urlsplit(url)
    response = await workspace_get(server, parts.netloc, f"/?{parts.query}", headers={"X-Forwarded-Proto": "https"})
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith("__Host-apranova_ws=") and "secure" in set_cookie.lower()
    assert "domain" not in set_cookie.lower()
    cookie = set_cookie.split(";", 1)[0]
    page = await workspace_get(server, parts.netloc, "/x", cookie, headers={"X-Forwarded-Proto": "https"})
    assert page.status_code == 200 and page.json()["cookies"] == []  # ours never reaches the workspace


async def test_one_login_holds_at_most_the_configured_websockets(start_server, upstream):
    server = await start_server(proxy_max_sockets_per_login="3", **NO_DOCKER)
    port = upstream[0]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        uid = user["user"]["id"]
        await give_workspace(server, uid, port)
        _, cookie = await redeem(server, await open_url(client, user))
    host = host_of(server, uid)
    sockets: list[WebSocketClientConnection] = [await proxy_socket(server, host, cookie) for _ in range(3)]
    with pytest.raises(Exception) as refused:
        await proxy_socket(server, host, cookie)
    assert "429" in str(refused.value)
    sockets.pop().close()
    for _ in range(50):  # the relay notices the close
        if len(server.services.proxy.sockets) == 2:
            break
        await asyncio.sleep(0.05)
    sockets.append(await proxy_socket(server, host, cookie))
    await sockets[-1].write_message("still")
    assert await sockets[-1].read_message() == "still"
    for socket in sockets:
        socket.close()
