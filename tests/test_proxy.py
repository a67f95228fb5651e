"""The workspace proxy against a loopback stand-in for code-server
(tests/proxy_upstream.py), through the real app on a real port and the real
nx-27017: tickets, cookies, what is stripped, revocation (HTTP and open
WebSockets), error pages, streaming and the WebSocket relay. The workspace
document points at the stand-in exactly as a running one points at its
container (the proxy connects to the document's `endpoint`)."""
from __future__ import annotations

import asyncio
import logging
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from tornado.httpclient import HTTPClientError

from tests.support.accounts import age_refresh_rotations
from tests.support.app import auth, make_admin, register
from tests.support.proxy_upstream import pattern
from tests.support.proxy import host_of, OPEN, open_url, port_of, proxy_socket, redeem, workspace_get
from tests.support.proxy import eventually, give_workspace, NO_DOCKER, signed_in, signed_in_at


# Tests of the fast lane itself; every other test runs with PROXY_FAST_LANE on and off.
FAST_LANE_ONLY = {"test_plain_reads_take_the_fast_lane_and_the_rest_goes_to_tornado_on_the_same_connection",
                  "test_the_fast_lane_logs_the_path_never_the_query",
                  "test_the_fast_lane_relays_any_framing_and_drops_hop_by_hop_headers",
                  "test_frame_boundaries_are_found_across_any_chunking", "test_a_real_workspace_container_through_the_proxy"}


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ not in FAST_LANE_ONLY:
        metafunc.parametrize("proxy_lane", [True, False], ids=["fast-lane", "tornado"], indirect=True)


@pytest.fixture(autouse=True)
def proxy_lane(request, monkeypatch):
    """Every server this test starts runs with the fast lane on or off."""
    from tests.support.app import TEST_DEFAULTS
    monkeypatch.setitem(TEST_DEFAULTS, "proxy_fast_lane", str(getattr(request, "param", True)).lower())


@pytest.fixture
async def proxied(start_server, upstream):
    """(server, api client, upstream port, recorder)."""
    server = await start_server(**NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield server, client, upstream[0], upstream[1]


async def test_a_ticket_opens_the_workspace_once_and_becomes_a_host_cookie(proxied):
    server, client, port, recorder = proxied
    user = await register(client)
    uid = user["user"]["id"]
    await give_workspace(server, uid, port)
    url = await open_url(client, user)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"http://ws-{uid}.localhost:{port_of(server)}/"
    ticket = parse_qs(parts.query)["ticket"][0]
    assert len(ticket) >= 40
    assert await server.db.workspace_tickets.find_one({"_id": ticket}) is None  # only its hash is stored

    response, cookie = await redeem(server, url + "&folder=/home/coder/project")
    assert response.status_code == 302
    assert response.headers["location"] == "/?folder=%2Fhome%2Fcoder%2Fproject"  # the ticket is gone
    attributes = response.headers["set-cookie"].lower()
    assert cookie.startswith("apranova_ws=") and "httponly" in attributes and "samesite=lax" in attributes
    assert "domain" not in attributes and "secure" not in attributes and "path=/" in attributes
    assert recorder.requests == []  # the redemption itself never reached the workspace

    again, no_cookie = await redeem(server, url)
    assert again.status_code == 401 and no_cookie is None  # used once
    back = await workspace_get(server, parts.netloc, f"/?{parts.query}", cookie)  # the Back button, cookie set
    assert back.status_code == 302 and back.headers["location"] == "/" and "set-cookie" not in back.headers
    # A path like `//evil.example/x` (raw: HTTP clients rewrite it) still redirects to this host.
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(f"GET //evil.example/x?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 f"Cookie: {cookie}\r\nConnection: close\r\n\r\n".encode())
    head = (await asyncio.wait_for(reader.read(), 10)).split(b"\r\n\r\n")[0].decode()
    writer.close()
    assert head.startswith("HTTP/1.1 302") and "\r\nLocation: /evil.example/x\r\n" in head

    page = await workspace_get(server, parts.netloc, "/some/file?x=1", cookie)
    assert page.status_code == 200 and page.json()["uri"] == "/some/file?x=1"


async def test_an_expired_or_foreign_ticket_opens_nothing(proxied):
    server, client, port, _ = proxied
    user = await register(client)
    other = await register(client)
    for someone in (user, other):
        await give_workspace(server, someone["user"]["id"], port)
    url = await open_url(client, user)
    await server.db.workspace_tickets.update_many({}, {"$set": {"expires_at": 0}})
    await server.db.workspace_tickets.update_many({}, {"$currentDate": {"expires_at": True}})
    response, cookie = await redeem(server, url)
    assert response.status_code == 401 and cookie is None

    # A valid ticket taken to another workspace's host is refused and spent.
    url = await open_url(client, user)
    moved = url.replace(f"ws-{user['user']['id']}.", f"ws-{other['user']['id']}.")
    response, cookie = await redeem(server, moved)
    assert response.status_code == 401 and cookie is None
    assert (await redeem(server, url))[0].status_code == 401


async def test_the_cookie_is_useless_on_another_host_and_for_another_user(proxied):
    server, client, port, recorder = proxied
    alice, alice_cookie = await signed_in(server, client, port)
    bob, bob_cookie = await signed_in(server, client, port)
    alice_host, bob_host = host_of(server, alice["user"]["id"]), host_of(server, bob["user"]["id"])
    assert (await workspace_get(server, alice_host, "/", alice_cookie)).status_code == 200
    assert (await workspace_get(server, bob_host, "/", alice_cookie)).status_code == 401
    assert (await workspace_get(server, alice_host, "/", bob_cookie)).status_code == 401
    # A student cannot ask for someone else's ticket.
    response = await client.post(f"{OPEN}?user_id={alice['user']['id']}", headers=auth(bob))
    assert response.status_code == 403
    before = len(recorder.requests)
    assert (await workspace_get(server, alice_host, "/")).status_code == 401
    assert (await workspace_get(server, alice_host, "/", "apranova_ws=forged.token.here")).status_code == 401
    assert len(recorder.requests) == before  # refused requests never reach the workspace


async def test_the_workspace_never_sees_our_cookies_or_authorization(proxied):
    server, client, port, recorder = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    response = await workspace_get(server, host, "/x", f"{cookie}; ide-session=keep; apranova_other=1",
                                   headers={"Authorization": f"Bearer {user['access']}",
                                            "X-Forwarded-For": "6.6.6.6", "Connection": "keep-alive, X-Drop",
                                            "X-Drop": "1"})
    seen = response.json()
    headers = {name.lower(): value for name, value in seen["headers"].items()}
    assert "authorization" not in headers and "x-drop" not in headers
    assert seen["cookies"] == ["ide-session=keep"]
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the client's own claim is not believed
    assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-host"] == host
    assert headers["host"] == host
    # The workspace's own cookies reach the browser; one named like ours does not.
    set_cookies = response.headers.get_list("set-cookie")
    assert any(c.startswith("ide-session=") for c in set_cookies)
    assert not any(c.startswith("apranova_ws=forged") for c in set_cookies)


async def test_connections_to_the_workspace_are_reused_and_stale_ones_retried(proxied):
    server, client, port, recorder = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    peers = [(await workspace_get(server, host, "/a", cookie)).json()["peer"] for _ in range(3)]
    assert len(set(peers)) == 1  # one kept-alive connection carried all three
    await recorder.server.close_all_connections()  # code-server closing idle connections
    response = await workspace_get(server, host, "/b", cookie)
    assert response.status_code == 200 and response.json()["peer"] != peers[0]


async def test_https_behind_a_trusted_proxy_gives_secure_cookies_and_urls(start_server, upstream):
    server = await start_server(trusted_proxies="127.0.0.1/32", **NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        await give_workspace(server, user["user"]["id"], upstream[0])
        response = await client.post(OPEN, headers={**auth(user), "X-Forwarded-Proto": "https"})
        url = response.json()["url"]
        assert url.startswith(f"https://ws-{user['user']['id']}.localhost:{port_of(server)}/?ticket=")
        parts = urlsplit(url)
        response = await workspace_get(server, parts.netloc, f"/?{parts.query}",
                                        headers={"X-Forwarded-Proto": "https"})
        assert response.status_code == 302 and "secure" in response.headers["set-cookie"].lower()


async def test_public_url_sets_the_workspace_origin(start_server, upstream):
    server = await start_server(public_url="https://learn.example.edu",
                                workspace_host_template="ws-{user_id}.example.edu", **NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        await give_workspace(server, user["user"]["id"], upstream[0])
        url = await open_url(client, user)
        assert url.startswith(f"https://ws-{user['user']['id']}.example.edu/?ticket=")
        page = await workspace_get(server, f"ws-{user['user']['id']}.example.edu", "/",
                                   headers={"Accept": "text/html"})
        assert page.status_code == 401 and 'href="https://learn.example.edu/"' in page.text


async def test_refusals_are_a_page_for_browsers_and_the_envelope_otherwise(proxied):
    server, client, port, recorder = proxied
    user = await register(client)
    uid = user["user"]["id"]
    host = host_of(server, uid)
    page = await workspace_get(server, host, "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script" not in page.text.lower()
    assert f'href="http://localhost:{port_of(server)}/"' in page.text and "Traceback" not in page.text
    envelope = await workspace_get(server, host, "/")
    assert envelope.status_code == 401 and envelope.json()["details"] == {"reason": "login"}
    assert set(envelope.json()) == {"error", "message", "details"}

    # No workspace at all: the open call says so.
    assert (await client.post(OPEN, headers=auth(user))).status_code == 404
    # Stopped: the page says to start it.
    await give_workspace(server, uid, port, state="stopped")
    _, cookie = await redeem(server, await open_url(client, user))
    page = await workspace_get(server, host, "/", cookie, headers={"Accept": "text/html"})
    assert page.status_code == 503 and "stopped" in page.text and "Start it from the dashboard" in page.text
    await server.db.workspaces.update_one({"owner_id": uid}, {"$set": {"state": "provisioning"}})
    response = await eventually(lambda: workspace_get(server, host, "/", cookie),
                                lambda r: r.json()["details"]["reason"] != "stopped")
    assert response.json()["details"]["reason"] == "provisioning"
    assert recorder.requests == []


async def test_logout_reuse_revocation_and_delete_end_http_access_at_once(proxied):
    server, client, port, _ = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    assert (await workspace_get(server, host, "/", cookie)).status_code == 200
    response = await client.post("/api/users/logout/", headers=auth(user), json={"refresh": user["refresh"]})
    assert response.status_code in (200, 205), response.text
    assert (await workspace_get(server, host, "/", cookie)).status_code == 401

    # A copied refresh token used twice revokes the login: the cookie dies with it.
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    response = await client.post("/api/auth/token/refresh/", json={"refresh": user["refresh"]})
    assert response.status_code == 200, response.text
    await age_refresh_rotations(server.db, user["user"]["id"])  # past JWT_REFRESH_REUSE_SECONDS
    response = await client.post("/api/auth/token/refresh/", json={"refresh": user["refresh"]})
    assert response.status_code == 401, response.text
    assert (await workspace_get(server, host, "/", cookie)).status_code == 401

    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    await server.db.workspaces.update_one({"owner_id": user["user"]["id"]}, {"$set": {"state": "deleted"}})
    response = await eventually(lambda: workspace_get(server, host, "/", cookie), lambda r: r.status_code != 200)
    assert response.status_code == 404 and response.json()["details"]["reason"] == "none"


async def test_an_admin_opens_a_students_workspace_only_through_the_logged_call(proxied):
    server, client, port, _ = proxied
    student, _ = await signed_in(server, client, port)
    sid = student["user"]["id"]
    admin = await make_admin(server, client)
    url = await open_url(client, admin, user_id=sid)
    assert urlsplit(url).netloc == host_of(server, sid)
    entry = await server.db.workspace_access_log.find_one({"owner_id": sid})
    assert entry["actor_id"] == admin["user"]["id"] and entry["action"] == "open workspace" and entry["at"]
    _, cookie = await redeem(server, url)
    assert (await workspace_get(server, host_of(server, sid), "/", cookie)).status_code == 200
    socket = await proxy_socket(server, host_of(server, sid), cookie)
    # Demoted: the same cookie stops working at once, and the open socket is closed.
    await server.db.users.update_one({"_id": admin["user"]["id"]}, {"$set": {"role": "trainer"}})
    await server.services.authstate.user_changed(admin["user"]["id"])  # as the accounts service's own writes do
    assert (await workspace_get(server, host_of(server, sid), "/", cookie)).status_code == 403
    assert await asyncio.wait_for(socket.read_message(), 10) is None and socket.close_code == 4403


async def test_cross_origin_writes_are_refused(proxied):
    server, client, port, recorder = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    evil = f"http://ws-999.localhost:{port_of(server)}"
    response = await workspace_get(server, host, "/save", cookie, method="POST", content=b"x",
                                   headers={"Origin": evil})
    assert response.status_code == 403 and recorder.requests == []
    response = await workspace_get(server, host, "/save", cookie, method="POST", content=b"x",
                                   headers={"Origin": f"http://{host}"})
    assert response.status_code == 200 and response.json()["method"] == "POST"


async def test_bodies_stream_both_ways_and_uploads_are_bounded(start_server, upstream):
    port, recorder = upstream
    server = await start_server(proxy_max_body_bytes=str(16 * 1024 * 1024), **NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    body = pattern(12 * 1024 * 1024)  # well over the API's 1 MiB body limit

    async def chunks():
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]

    for content in (body, chunks()):  # with a Content-Length, and chunked
        response = await workspace_get(server, host, "/upload", cookie, method="PUT", content=content)
        assert response.status_code == 200, response.text
        assert response.json()["size"] == len(body)
        assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()
    # Over the bound: refused on the headers, before any byte is read (a client sending
    # `Expect: 100-continue` waits for exactly this).
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(f"POST /upload HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
                 f"Content-Length: {17 << 20}\r\nExpect: 100-continue\r\n\r\n".encode())
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status.split()[1] == b"413"

    size = 48 * 1024 * 1024
    response = await workspace_get(server, host, f"/download?size={size}", cookie)
    assert response.status_code == 200 and int(response.headers["content-length"]) == size
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(pattern(size)).digest()

    # A workspace dying mid-answer: the browser sees a broken transfer, never a short "complete" body.
    with pytest.raises(httpx.RemoteProtocolError):
        await workspace_get(server, host, "/download?size=1000000&cut=1", cookie)
    assert (await workspace_get(server, host, "/after", cookie)).status_code == 200

    # Streamed, not buffered: the first bytes arrive while the workspace still holds back the rest.
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        async with http.stream("GET", "/download?size=1000000&gate=1",
                               headers={"Host": host, "Cookie": cookie}) as streamed:
            chunks = streamed.aiter_raw()
            first = await chunks.__anext__()
            assert first and not recorder.gate.is_set()
            recorder.gate.set()
            rest = b"".join([chunk async for chunk in chunks])
    assert len(first) + len(rest) == 1000000


async def test_websockets_relay_both_ways_with_close_codes(proxied):
    server, client, port, recorder = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    socket = await proxy_socket(server, host, f"{cookie}; ide-session=keep", "/ws?x=1",
                                extra={"Authorization": f"Bearer {user['access']}"}, subprotocols=["tty", "other"])
    assert socket.selected_subprotocol == "tty"
    await socket.write_message("hello")
    assert await socket.read_message() == "hello"
    blob = bytes(range(256)) * 4096  # 1 MiB binary frame
    await socket.write_message(blob, binary=True)
    assert await socket.read_message() == blob
    seen = recorder.requests[-1]
    assert seen["uri"] == "/ws?x=1" and seen["cookies"] == ["ide-session=keep"]
    assert "Authorization" not in seen["headers"] and seen["headers"]["X-Forwarded-Host"] == host
    await socket.write_message("close:4321")
    assert await socket.read_message() is None and socket.close_code == 4321

    socket = await proxy_socket(server, host, cookie)
    socket.close(4002, "bye")
    for _ in range(100):
        if (4002, "bye") in recorder.socket_closes:
            break
        await asyncio.sleep(0.05)
    assert (4002, "bye") in recorder.socket_closes

    with pytest.raises(HTTPClientError) as refused:
        await proxy_socket(server, host, None)
    assert refused.value.code == 401
    with pytest.raises(HTTPClientError) as refused:  # another workspace's page opening our terminal
        await proxy_socket(server, host, cookie, origin=f"http://ws-999.localhost:{port_of(server)}")
    assert refused.value.code == 403
    with pytest.raises(HTTPClientError) as refused:
        await proxy_socket(server, host_of(server, 999999), cookie)
    assert refused.value.code == 401


async def test_logout_closes_open_websockets(proxied):
    server, client, port, _ = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    socket = await proxy_socket(server, host, cookie)
    await socket.write_message("ping")
    assert await socket.read_message() == "ping"
    response = await client.post("/api/users/logout/", headers=auth(user), json={"refresh": user["refresh"]})
    assert response.status_code in (200, 205)
    assert await asyncio.wait_for(socket.read_message(), 10) is None
    assert socket.close_code == 4401

    user, cookie = await signed_in(server, client, port)
    socket = await proxy_socket(server, host_of(server, user["user"]["id"]), cookie)
    await server.db.workspaces.update_one({"owner_id": user["user"]["id"]}, {"$set": {"state": "stopping"}})
    assert await asyncio.wait_for(socket.read_message(), 10) is None
    assert socket.close_code == 4503
    assert json.loads(json.dumps(socket.close_reason))  # a reason is given


@pytest.mark.docker
async def test_a_real_workspace_container_through_the_proxy(ws_server, http):
    """The busybox stand-in image in a real container: opened from a ticket,
    served through the proxy, and gone for the cookie once deleted."""
    user = await register(http)
    created = await http.post("/api/users/workspace/create/", headers=auth(user), json={"wait": True})
    assert created.json()["state"] == "running", created.text
    _, cookie = await redeem(ws_server, await open_url(http, user))
    host = host_of(ws_server, user["user"]["id"])
    page = await workspace_get(ws_server, host, "/", cookie)
    assert page.status_code == 200 and "apranova test workspace" in page.text
    assert (await workspace_get(ws_server, host, "/")).status_code == 401  # no cookie, no container

    assert (await http.delete("/api/users/workspace/", headers=auth(user))).status_code == 200
    gone = await workspace_get(ws_server, host, "/", cookie, headers={"Accept": "text/html"})
    assert gone.status_code == 404 and "No workspace here" in gone.text


def test_frame_boundaries_are_found_across_any_chunking():
    """The tunnel injects a close frame only between frames: every split of a
    byte stream of frames (7-bit, 16-bit and 64-bit lengths, masked or not)
    must report a boundary exactly where a frame ends."""
    import random
    import struct
    from proxy.tunnel import FrameTracker

    def frame(size: int, masked: bool) -> bytes:
        flag = 0x80 if masked else 0
        if size < 126:
            head = bytes([0x82, size | flag])
        elif size < 65536:
            head = bytes([0x82, 126 | flag]) + struct.pack(">H", size)
        else:
            head = bytes([0x82, 127 | flag]) + struct.pack(">Q", size)
        return head + (b"MASK" if masked else b"") + b"x" * size

    rng = random.Random(7)
    for _ in range(200):
        frames = [frame(rng.choice([0, 1, 125, 126, 300, 65535, 65536]), rng.random() < 0.5)
                  for _ in range(rng.randint(1, 5))]
        data, ends, total = b"".join(frames), set(), 0
        for one in frames:
            total += len(one)
            ends.add(total)
        tracker, pos = FrameTracker(), 0
        while pos < len(data):
            chunk = data[pos:pos + rng.randint(1, 4000)]
            tracker.feed(chunk)
            pos += len(chunk)
            assert tracker.at_boundary == (pos in ends)


async def test_a_logout_in_one_process_ends_access_in_another(start_server, upstream):
    """Two server processes on one database (as behind a load balancer): a
    cookie from one works on the other, and a logout on the first ends the
    other's HTTP access within about a second (its auth-state cache hears of
    it through the change log) and its open WebSocket within a sweep."""
    port, _ = upstream
    first = await start_server(**NO_DOCKER)
    second = await start_server(**NO_DOCKER, mongodb_db=first.services.settings.mongodb_db)
    async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        user, cookie = await signed_in(first, client, port)
        other_host = host_of(second, user["user"]["id"])
        assert (await workspace_get(second, other_host, "/", cookie)).status_code == 200
        socket = await proxy_socket(second, other_host, cookie)
        await socket.write_message("hi")
        assert await socket.read_message() == "hi"
        response = await client.post("/api/users/logout/", headers=auth(user), json={"refresh": user["refresh"]})
        assert response.status_code == 200
    started = asyncio.get_running_loop().time()
    refused = await eventually(lambda: workspace_get(second, other_host, "/", cookie), lambda r: r.status_code != 200)
    assert refused.status_code == 401 and asyncio.get_running_loop().time() - started < 2.5
    assert await asyncio.wait_for(socket.read_message(), 10) is None and socket.close_code == 4401


async def read_answer(reader: asyncio.StreamReader, head_request: bool = False) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 answer from a raw connection: status, headers, body
    (Content-Length or chunked)."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    status = int(head[0].split()[1])
    if head_request or status in (204, 304):
        return status, headers, b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            body = body[:-2]
            if size == 0:  # its CRLF ended the (empty) trailer
                return status, headers, body
    return status, headers, await reader.readexactly(int(headers["content-length"]))


async def test_plain_reads_take_the_fast_lane_and_the_rest_goes_to_tornado_on_the_same_connection(proxied):
    """GET and HEAD of a workspace host are served below Tornado's HTTP layer
    (counted under the lane's metrics label); on the same kept-alive
    connection a body, a refusal after logout, and pipelined requests still
    get exactly what the Tornado path gives."""
    server, client, port, recorder = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))

    def send(method: str, path: str, extra: str = "", body: bytes = b"") -> None:
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}; ide=1\r\n"
                     f"Authorization: Bearer x\r\n{extra}{length}\r\n".encode() + body)

    # Three pipelined in one write: a JSON echo, a chunked download, a HEAD.
    send("GET", "/first")
    send("GET", "/download?size=300000&chunked=1")
    send("HEAD", "/third")
    status, headers, body = await read_answer(reader)
    seen = json.loads(body)
    assert status == 200 and seen["uri"] == "/first" and seen["cookies"] == ["ide=1"]
    assert "authorization" not in {name.lower() for name in seen["headers"]}
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1" and seen["headers"]["X-Forwarded-Host"] == host
    assert not any(c.startswith("apranova") for c in headers.get("set-cookie", "").split(","))
    status, headers, body = await read_answer(reader)
    assert status == 200 and headers["transfer-encoding"] == "chunked" and body == pattern(300000)
    status, headers, body = await read_answer(reader, head_request=True)
    assert status == 200 and body == b""
    # A body goes to Tornado's path, on this same connection, and the next plain read still works.
    send("POST", "/posted", f"Origin: http://{host}\r\n", b"hello")
    status, _, body = await read_answer(reader)
    assert status == 200 and json.loads(body)["size"] == 5
    send("GET", "/again")
    status, _, body = await read_answer(reader)
    assert status == 200 and json.loads(body)["uri"] == "/again"
    # Logged out: the next request on the kept-alive connection is refused (by Tornado's page).
    await client.post("/api/users/logout/", headers=auth(user), json={"refresh": user["refresh"]})
    send("GET", "/after-logout")
    status, _, body = await read_answer(reader)
    assert status == 401 and json.loads(body)["details"] == {"reason": "login"}
    writer.close()
    assert [r["uri"] for r in recorder.requests] == ["/first", "/third", "/posted", "/again"]
    text = (await client.get("/metrics")).text
    lane = [line for line in text.splitlines() if line.startswith("apranova_http_requests_total")
            and 'route="workspace proxy"' in line]
    # The lane served the first three; Tornado the rest (a connection it took stays with it).
    assert any('method="GET"' in line and 'status="200"' in line and line.endswith(" 2.0") for line in lane), lane
    assert any('method="HEAD"' in line for line in lane), lane


async def test_the_fast_lane_logs_the_path_never_the_query(proxied, caplog):
    server, client, port, _ = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    with caplog.at_level(logging.INFO, logger="apranova.access"):
        assert (await workspace_get(server, host, "/static/app.js?token=s3cret", cookie)).status_code == 200
    lines = [record.getMessage() for record in caplog.records if record.name == "apranova.access"]
    assert any(line.startswith("GET /static/app.js 200 ") and line.endswith("(workspace)") for line in lines), lines
    assert "s3cret" not in caplog.text


async def test_the_activity_hook_hears_every_request_and_relayed_chunk(proxied):
    """`ProxyAccess.on_activity` (a no-op unless idle culling sets it) gets the
    workspace id for each proxied request, each chunk of an answer, and each
    chunk a WebSocket relays either way: fast lane and Tornado path alike."""
    server, client, port, _ = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    workspace_id = (await server.db.workspaces.find_one({"owner_id": user["user"]["id"]}))["_id"]
    heard: list = []
    server.services.proxy.on_activity = heard.append
    assert (await workspace_get(server, host, "/lane", cookie)).status_code == 200
    assert heard and set(heard) == {workspace_id}
    count = len(heard)
    response = await workspace_get(server, host, "/tornado", cookie, method="POST", content=b"x",
                                   headers={"Origin": f"http://{host}"})
    assert response.status_code == 200 and len(heard) > count
    count = len(heard)
    socket = await proxy_socket(server, host, cookie)
    await socket.write_message("hello")
    assert await socket.read_message() == "hello"
    assert len(heard) >= count + 2 and set(heard) == {workspace_id}
    socket.close()


async def test_the_fast_lane_relays_any_framing_and_drops_hop_by_hop_headers(proxied):
    """Against a raw workspace answering with each framing: a sized body, no
    body (304), and a body ended by closing the connection, which the lane
    passes on by closing the browser's connection after it."""
    server, client, port, _ = proxied
    answers = {
        b"/sized": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n"
                   b"X-Kept: yes\r\nSet-Cookie: apranova_x=1\r\n\r\nok",
        b"/notmod": b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 99\r\n\r\n",
        b"/close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end",
    }

    async def workspace(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            path = head.split(b" ", 2)[1]
            writer.write(answers[path])
            await writer.drain()
            if path == b"/close":
                break
        writer.close()

    raw = await asyncio.start_server(workspace, "127.0.0.1", 0)
    raw_port = raw.sockets[0].getsockname()[1]
    host, cookie = await signed_in_at(server, client, raw_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    for path in ("/sized", "/notmod", "/close"):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n".encode())
    status, headers, body = await read_answer(reader)
    assert (status, body, headers["x-kept"]) == (200, b"ok", "yes")
    assert "keep-alive" not in headers and "connection" not in headers and "set-cookie" not in headers
    status, headers, body = await read_answer(reader, head_request=True)  # a 304 has no body, whatever it says
    assert status == 304 and headers["etag"] == '"v1"'
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode()
    assert head.startswith("HTTP/1.1 200") and "connection: close" in head.lower()
    assert await asyncio.wait_for(reader.read(), 30) == b"until the end"  # then the connection closed
    writer.close()
    raw.close()


async def test_a_workspace_that_never_answers_gets_one_wait_then_504(start_server):
    """Connected, then silent for PROXY_IDLE_TIMEOUT: a 504 (the page for a
    browser), after a single wait on a single connection."""
    server = await start_server(proxy_idle_timeout="1", **NO_DOCKER)
    connections = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()  # never answers; the proxy hangs up

    raw = await asyncio.start_server(silent, "127.0.0.1", 0)
    raw_port = raw.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        host, cookie = await signed_in_at(server, client, raw_port)
    page = await workspace_get(server, host, "/", cookie, headers={"Accept": "text/html"})
    assert page.status_code == 504 and "does not answer" in page.text and "Go to the dashboard" in page.text
    assert len(connections) == 1
    envelope = await workspace_get(server, host, "/", cookie)
    assert envelope.status_code == 504 and envelope.json()["details"] == {"reason": "unreachable"}
    raw.close()


async def test_the_lane_cuts_idle_connections_between_requests_never_a_slow_answer(proxied):
    """idle_connection_timeout (75 s in server.py; 1 s here) ends a kept-alive
    browser connection with nothing to do, but not one waiting for a
    workspace that takes longer than that to answer."""
    from tornado.testing import bind_unused_port

    from proxy.server import ProxyHTTPServer
    server, client, port, recorder = proxied
    user, cookie = await signed_in(server, client, port)
    host = host_of(server, user["user"]["id"])
    sock, quick_port = bind_unused_port()
    quick = ProxyHTTPServer(server.app, idle_connection_timeout=1)
    quick.add_sockets([sock])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", quick_port)
        writer.write(f"GET /download?size=300000&gate=1 HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(2)  # the workspace holds the rest back for longer than the idle timeout
        recorder.gate.set()
        assert len(await asyncio.wait_for(reader.readexactly(300000), 30)) == 300000
        # Then idle between requests: closed by the server.
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        quick.stop()
        await quick.close_all_connections()
