"""The proxy against a hostile workspace (tests/proxy_hostile.py): every
message it forwards is delimited, either way, on both lanes.

One table of answer framings runs against the fast lane (PROXY_FAST_LANE on:
plain GETs served below Tornado's HTTP layer) and the Tornado path (off):
whatever the workspace writes, the browser gets one answer per request, and
an answer planted after the real one reaches nobody (issue 19, findings 1,
3 and 5). Then the request side: bodies framed for every method (2),
framing checked before the workspace sees a byte (4), the lane's protocol
edges (5), and no body read before the check (6)."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.proxy_hostile import chunked, Hostile, ok, PLANTED, read_answer
from tests.support.proxy import NO_DOCKER, port_of, signed_in_at

BAD = "bad gateway"  # the answer cannot be delimited: 502, and the connection to the workspace closed
CUT = "cut"  # broken mid-body (Tornado's chunk grammar has no trailers): the browser sees a broken transfer
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"

# name -> (what the workspace writes for GET /case, what the browser must get)
FRAMING_CASES: dict[str, tuple[bytes, object]] = {
    "sized": (ok(b"ok"), (200, b"ok")),
    "chunked": (chunked(b"ok"), (200, b"ok")),
    "chunked, then a planted answer": (chunked(b"ok") + PLANTED, (200, b"ok")),
    "chunked with trailers, then a planted answer":
        (chunked(b"ok", "Trailer: X-T", trailer="X-T: 1\r\n") + PLANTED, CUT),
    "gzip, chunked, then a planted answer": (chunked(b"ok", coding="gzip, chunked") + PLANTED, BAD),
    "sized, then a planted answer": (ok(b"ok") + PLANTED, (200, b"ok")),
    "100 Continue, then the answer": (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"ok"), (200, b"ok")),
    "103 Early Hints, then the answer":
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + ok(b"ok"), (200, b"ok")),
    "Content-Length and Transfer-Encoding":
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + PLANTED,
         BAD),
    "two Content-Lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\nok" + PLANTED, BAD),
    "a bad chunk size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n" + PLANTED, CUT),
    "101 to a plain GET": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n" + PLANTED, BAD),
}


@pytest.fixture(params=[True, False], ids=["fast-lane", "tornado"])
async def hostile_site(request, start_server):
    """(server, the workspace's host, its cookie, the hostile workspace),
    with the fast lane on or off."""
    hostile = await Hostile().start()
    server = await start_server(proxy_fast_lane=str(request.param).lower(), proxy_idle_timeout="3", **NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        host, cookie = await signed_in_at(server, client, hostile.port)
    yield server, host, cookie, hostile
    hostile.close()


async def connect(server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port_of(server))


def request(method: str, path: str, host: str, cookie: str | None, extra: str = "", body: bytes = b"") -> bytes:
    cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{cookie_line}{extra}\r\n".encode() + body


@pytest.mark.parametrize("case", FRAMING_CASES)
async def test_every_answer_is_delimited_and_a_planted_one_reaches_nobody(hostile_site, case):
    server, host, cookie, hostile = hostile_site
    answer, expected = FRAMING_CASES[case]
    hostile.answers["/case"] = answer
    reader, writer = await connect(server)
    writer.write(request("GET", "/case", host, cookie))
    got = await read_answer(reader)
    if expected is CUT:
        assert got is None, got
        return await assert_planted_nowhere(server, host, cookie, hostile)
    assert got is not None, "no answer at all"
    if expected is BAD:
        assert got[0] == 502, got
    else:
        assert (got[0], got[2]) == expected, got
    assert "x-planted" not in got[1] and b"planted" not in got[2]
    # The next request on this browser connection gets its own answer (or the
    # connection was closed): never the planted one.
    writer.write(request("GET", "/next", host, cookie))
    following = await read_answer(reader)
    assert following is None or (following[0], following[2]) == (200, b"real:/next"), following
    writer.close()
    await assert_planted_nowhere(server, host, cookie, hostile)


async def assert_planted_nowhere(server, host: str, cookie: str, hostile: Hostile) -> None:
    """Another browser's requests (on pooled connections to the workspace)
    get their own answers; /case went upstream once (a 1xx: not twice)."""
    for method in ("GET", "OPTIONS"):
        reader, writer = await connect(server)
        writer.write(request(method, "/other", host, cookie))
        other = await read_answer(reader)
        assert other is not None and (other[0], other[2]) == (200, b"real:/other"), (method, other)
        writer.close()
    assert hostile.paths().count("/case") == 1, hostile.paths()


async def test_a_late_planted_answer_is_never_taken_from_a_pooled_connection(hostile_site):
    """The workspace answers, then writes a second answer a moment later,
    while its connection sits in the pool: the next request (of another
    browser connection) must not get it."""
    server, host, cookie, hostile = hostile_site
    for method in ("GET", "OPTIONS"):
        hostile.answers["/late"] = ok(b"ok")
        hostile.delayed["/late"] = (0.2, PLANTED)
        reader, writer = await connect(server)
        writer.write(request(method, "/late", host, cookie))
        assert (await read_answer(reader))[2] == b"ok"
        writer.close()
        await asyncio.sleep(0.5)
        reader, writer = await connect(server)
        writer.write(request(method, "/after", host, cookie))
        after = await read_answer(reader)
        assert after is not None and (after[0], after[2]) == (200, b"real:/after"), (method, after)
        writer.close()


@pytest.mark.parametrize("method", ["DELETE", "GET", "OPTIONS", "POST", "PUT"])
async def test_a_chunked_request_body_is_framed_for_every_method(hostile_site, method):
    """Tornado's HTTP client frames a body only for POST, PUT and PATCH: a
    DELETE's chunked body went on raw, and the workspace saw the request
    smuggled inside it (finding 2)."""
    server, host, cookie, hostile = hostile_site
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    reader, writer = await connect(server)
    writer.write(request(method, "/body", host, cookie, f"Origin: http://{host}\r\nTransfer-Encoding: chunked\r\n",
                         body))
    got = await read_answer(reader)
    writer.close()
    await asyncio.sleep(0.2)
    assert "/smuggled" not in hostile.paths()
    assert got is not None and got[0] in (200, 400, 411), got
    if got[0] == 200:
        assert [(s.method, s.body) for s in hostile.seen] == [(method, SMUGGLED)]


@pytest.mark.parametrize("framing", [
    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "Content-Length: 5\r\nContent-Length: 6\r\n",
    "Content-Length: +5\r\n",
])
async def test_bad_request_framing_is_refused_before_the_workspace_sees_anything(hostile_site, framing):
    server, host, cookie, hostile = hostile_site
    reader, writer = await connect(server)
    writer.write(request("POST", "/both", host, cookie, f"Origin: http://{host}\r\n{framing}", b"5\r\nhello\r\n0\r\n\r\n"))
    got = await read_answer(reader)
    writer.close()
    await asyncio.sleep(0.2)
    assert got is not None and got[0] == 400, got
    assert hostile.connections == 0 and hostile.seen == []


async def test_connection_close_is_honoured(hostile_site):
    server, host, cookie, hostile = hostile_site
    reader, writer = await connect(server)
    writer.write(request("GET", "/bye", host, cookie, "Connection: close\r\n"))
    got = await read_answer(reader)
    assert got is not None and got[2] == b"real:/bye" and got[1].get("connection", "").lower() == "close", got
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_bare_lf_request_is_answered_at_once(hostile_site):
    """As Tornado's parser does (RFC 9112 allows a bare LF), on the API host
    and on a workspace host."""
    server, host, cookie, hostile = hostile_site
    for raw in (b"GET /health HTTP/1.1\nHost: 127.0.0.1\n\n",
                f"GET /lf HTTP/1.1\nHost: {host}\nCookie: {cookie}\n\n".encode()):
        reader, writer = await connect(server)
        writer.write(raw)
        got = await read_answer(reader, timeout=3)
        assert got is not None and got[0] == 200, (raw, got)
        writer.close()
    assert hostile.paths() == ["/lf"]


async def test_a_head_over_64_kib_is_never_forwarded(hostile_site):
    server, host, cookie, hostile = hostile_site
    reader, writer = await connect(server)
    writer.write(request("GET", "/big", host, cookie, "X-Big: " + "a" * 70_000 + "\r\n"))
    got = await read_answer(reader, timeout=5)
    writer.close()
    assert got is None or got[0] in (400, 431), got
    assert hostile.seen == []


@pytest.mark.parametrize("framing", ["Content-Length: 33554432\r\n", "Transfer-Encoding: chunked\r\n"])
@pytest.mark.parametrize("target", ["workspace socket", "dashboard page", "status socket"])
async def test_no_body_is_read_before_the_check(hostile_site, target, framing):
    """A request whose handler takes no body is refused on its head: the
    server answers before the body is sent (finding 6: 32 MiB were read
    into memory first, without a login)."""
    server, host, cookie, hostile = hostile_site
    upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" \
              "Sec-WebSocket-Version: 13\r\n"
    raw = {"workspace socket": request("GET", "/ws", host, None, upgrade + framing),
           "dashboard page": request("POST", "/", "127.0.0.1", None, framing),
           "status socket": request("GET", "/api/users/workspace/status/", "127.0.0.1", None, upgrade + framing)}
    reader, writer = await connect(server)
    writer.write(raw[target])  # the head only: the body never comes
    got = await read_answer(reader, timeout=3)
    writer.close()
    # 405 for the page: it takes no POST at all (answered on the head as well).
    assert got is not None and got[0] in ((400, 405, 413) if target == "dashboard page" else (400, 413)), got
    assert hostile.seen == []
