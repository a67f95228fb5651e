"""The proxy's fast lane: plain reads of workspace hosts (GET and HEAD
without a body, the static assets that make up most of an IDE's requests)
handled below Tornado's HTTP layer.

Tornado parses and re-serialises both HTTP/1.1 messages of a proxied request
in Python, which cost about three times the request itself (BENCHMARKS.md).
Here the request head is parsed by llhttp (`httptools`, C), checked exactly
as the Tornado path checks it (the cookie, then `ProxyAccess.check`: the
login session, the viewer's right, the workspace running), and forwarded
with our cookies and Authorization stripped and X-Forwarded-* set; the
answer's head is parsed once to learn its framing and to drop hop-by-hop
headers, and its body bytes pass unchanged, each chunk written to the
browser before the next is read (backpressure).

Anything else goes to Tornado with the bytes read so far put back, on the
same connection, for good: requests of other hosts (the API), WebSocket
handshakes, tickets, bodies, refusals (whose pages Tornado renders), and a
workspace that does not answer before its response began. So the lane only
ever serves requests that the Tornado path would have forwarded.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import httptools
from tornado import httputil

from services.netutil import _in
from services.proxy_conn import Closed, Conn
from services.proxy_auth import Denied
from services.workspace_proxy import (HOP_BY_HOP, NEVER_FORWARDED, OUR_COOKIE_PREFIX, IdleWatch, cookie_value,
                                      foreign_cookies, owner_of_host)

log = logging.getLogger("apranova.proxy")
MAX_HEAD_BYTES = 64 * 1024  # Tornado's own limit: a longer head goes there to be refused
_NEVER_FORWARDED = {name.encode() for name in NEVER_FORWARDED}
_NOT_RETURNED = {name.encode() for name in HOP_BY_HOP} - {b"transfer-encoding"}  # the body's framing passes as is
_OUR_COOKIE = OUR_COOKIE_PREFIX.encode()
_LANE_METHODS = {b"GET", b"HEAD"}


class Head:
    """httptools' callbacks for one message head: what was parsed."""
    __slots__ = ("url", "headers", "complete", "status", "upgrade")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.status = b""
        self.upgrade = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        self.complete = True


class Lane:
    """One browser connection to the server's port, served here until a
    request needs Tornado (`hand_off(conn, data)` gets the connection then,
    with the bytes still unserved)."""

    def __init__(self, services: Any, conn: Conn, address: Any, hand_off: Callable[[Conn, bytes], None],
                 observe: Callable[[str, int, float], None], idle_seconds: float):
        self.services, self.conn, self.hand_off, self.observe = services, conn, hand_off, observe
        self.settings = services.settings
        self.proxy = services.proxy
        self.remote_ip = address[0] if isinstance(address, tuple) and address else "0.0.0.0"
        self.scheme = "http"  # TLS connections never take the lane (handlers/proxy_server.py)
        self.idle_seconds = idle_seconds

    async def run(self) -> None:
        conn = self.conn
        watch = IdleWatch(conn, self.idle_seconds)  # as Tornado's idle_connection_timeout: none between requests
        try:
            while True:
                end = conn.buffer.find(b"\r\n\r\n")
                while end < 0:
                    if len(conn.buffer) > MAX_HEAD_BYTES:
                        return await self._give_up(watch)
                    await conn.more()
                    end = conn.buffer.find(b"\r\n\r\n")
                watch.touch()
                kept_alive = await self._serve(bytes(conn.buffer[:end + 4]))
                if kept_alive is None:
                    return await self._give_up(watch)
                if not kept_alive:
                    await conn.flushed()
                    conn.transport.close()
                    return
                del conn.buffer[:end + 4]
                watch.touch()
        except Closed:
            conn.close()
        except Exception:  # noqa: BLE001 - a bug here must cost one connection, never the server
            log.exception("workspace proxy fast lane failed; connection closed")
            conn.close()
        finally:
            watch.cancel()

    async def _give_up(self, watch: IdleWatch) -> None:
        """Tornado serves this connection from here on, starting with what is buffered."""
        watch.cancel()
        await self.conn.flushed()  # what the lane wrote goes out before Tornado writes
        if not self.conn.closed:
            self.hand_off(self.conn, self.conn.take())

    async def _serve(self, raw: bytes) -> bool | None:
        """Forward one request; whether the browser's connection stays open,
        or None when Tornado must serve it (nothing was sent yet)."""
        started = time.perf_counter()
        head = Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(raw)
        except httptools.HttpParserUpgrade:
            return None
        except httptools.HttpParserError:
            return None
        method = parser.get_method()
        if not head.complete or method not in _LANE_METHODS or not head.url.startswith(b"/") \
                or parser.get_http_version() != "1.1":
            return None  # a body, another method, an odd target or HTTP/1.0: Tornado's full path
        try:
            plan = await self._admit(head)
        except Exception:  # noqa: BLE001 - e.g. the database unreachable: Tornado's path answers as it does
            log.warning("workspace proxy fast lane: check failed; handing the request to Tornado", exc_info=True)
            return None
        if plan is None:
            return None
        workspace_id, address, upstream_head = plan
        relay = Relay(self, address, method == b"HEAD", workspace_id)
        status = await relay.run(upstream_head, head.url)
        if status is None:
            return None
        self.observe(method.decode(), status, time.perf_counter() - started)
        return relay.client_open and parser.should_keep_alive()

    async def _admit(self, head: Head) -> tuple[Any, tuple[str, int], bytes] | None:
        """The workspace and the head to send it, when the Tornado path would
        forward this request; else None."""
        hosts = [value for name, value in head.headers if name == b"host"]
        if len(hosts) != 1 or b"ticket=" in head.url:
            return None
        host = hosts[0].decode("latin-1")
        owner_id = owner_of_host(self.settings, httputil.split_host_and_port(host.lower())[0])
        if owner_id is None:
            return None
        cookies = "; ".join(value.decode("latin-1") for name, value in head.headers if name == b"cookie")
        grant = self.proxy.cached_grant(cookie_value(cookies), owner_id)
        try:
            access = await self.proxy.check(grant)
        except Denied:
            return None  # Tornado checks again and answers with the page
        endpoint = self.services.workspaces.endpoint(access.doc)
        if endpoint is None:
            return None
        return access.doc["_id"], (endpoint.host, endpoint.port), self._upstream_head(head, host, cookies)

    def _upstream_head(self, head: Head, host: str, cookies: str) -> bytes:
        """The request as the workspace may see it (as `forwarded_headers`)."""
        connection = b",".join(value for name, value in head.headers if name == b"connection")
        dropped = _NEVER_FORWARDED | {t.strip().lower() for t in connection.split(b",")}
        lines = []
        for name, value in head.headers:
            if name not in dropped:
                lines.append(name + b": " + value)
        kept_cookies = foreign_cookies(cookies) if cookies else None
        if kept_cookies:
            lines.append(b"cookie: " + kept_cookies.encode("latin-1"))
        trusted = self.settings.trusted_proxies
        previous = None
        if trusted and _in(self.remote_ip, trusted):
            previous = b", ".join(value for name, value in head.headers if name == b"x-forwarded-for") or None
        remote = self.remote_ip.encode()
        lines.append(b"x-forwarded-for: " + (previous + b", " + remote if previous else remote))
        lines.append(b"x-forwarded-proto: " + self._scheme(head, trusted).encode())
        lines.append(b"x-forwarded-host: " + host.encode("latin-1"))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _scheme(self, head: Head, trusted: list) -> str:
        """As `request_scheme`: https when a trusted proxy in front says so."""
        if trusted and _in(self.remote_ip, trusted):
            for name, value in head.headers:
                if name == b"x-forwarded-proto":
                    forwarded = value.split(b",")[0].strip().lower().decode("latin-1")
                    if forwarded in ("http", "https"):
                        return forwarded
        return self.scheme


class Relay:
    """One request to the workspace and its answer back to the browser."""

    def __init__(self, lane: Lane, address: tuple[str, int], is_head: bool, workspace_id: Any):
        self.lane, self.address, self.is_head, self.workspace_id = lane, address, is_head, workspace_id
        self.client = lane.conn
        self.client_open = True
        self.touch = lane.proxy.on_activity  # one call per request and per relayed chunk

    async def run(self, upstream_head: bytes, url: bytes) -> int | None:
        """The status relayed, or None when nothing was sent to the browser
        (Tornado then serves the request: its refusal pages, its 502/504)."""
        settings, pool = self.lane.settings, self.lane.proxy.lane_pool
        request = (b"HEAD " if self.is_head else b"GET ") + url + b" HTTP/1.1\r\n" + upstream_head
        for reuse in (True, False):
            try:
                upstream, reused = await pool.connect(self.address, settings.proxy_connect_timeout, reuse)
            except (OSError, TimeoutError):
                return None
            watch = IdleWatch(upstream, settings.proxy_idle_timeout)
            try:
                upstream.transport.write(request)
                answer = await self._answer_head(upstream)
            except (Closed, httptools.HttpParserError):
                answer = None
            if answer is not None:
                break
            watch.cancel()
            upstream.close()
            if not reused:  # a fresh connection that failed: Tornado tries once more and answers 502/504
                return None
        self.touch(self.workspace_id)
        try:
            return await self._relay(upstream, watch, *answer)
        finally:
            watch.cancel()

    async def _answer_head(self, upstream: Conn) -> tuple | None:
        """The workspace's answer head, parsed (None for 1xx: Tornado's path)."""
        end = upstream.buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(upstream.buffer) > MAX_HEAD_BYTES:
                raise Closed
            await upstream.more()
            end = upstream.buffer.find(b"\r\n\r\n")
        head = Head()
        parser = httptools.HttpResponseParser(head)
        parser.feed_data(upstream.take(end + 4))
        status = parser.get_status_code()
        if status < 200:
            return None
        return parser, head, status

    async def _relay(self, upstream: Conn, watch: IdleWatch, parser: Any, head: Head, status: int) -> int:
        headers = head.headers
        connection = b",".join(value for name, value in headers if name == b"connection")
        dropped = _NOT_RETURNED | {t.strip().lower() for t in connection.split(b",")}
        codings = b",".join(value for name, value in headers if name == b"transfer-encoding")
        chunked = codings.lower().rstrip().endswith(b"chunked")
        lengths = [value for name, value in headers if name == b"content-length"]
        bodyless = self.is_head or status in (204, 304)
        delimited = bodyless or chunked or (len(lengths) == 1 and not codings)
        lines = [b"HTTP/1.1 %d %s" % (status, head.status)]
        for name, value in headers:
            if name in dropped or (name == b"set-cookie" and value.lstrip().lower().startswith(_OUR_COOKIE)):
                continue
            lines.append(name + b": " + value)
        if not delimited:  # the body ends when the workspace closes: so must this connection
            lines.append(b"connection: close")
            self.client_open = False
        out = b"\r\n".join(lines) + b"\r\n\r\n"
        keep = parser.should_keep_alive() and delimited
        try:
            if bodyless:
                await self.client.write(out)
            elif chunked:
                await self._chunked(upstream, watch, parser, head, out)
            elif delimited:
                await self._sized(upstream, watch, int(lengths[0]), out)
            else:
                await self._until_close(upstream, watch, out)
                keep = False
        except (Closed, httptools.HttpParserError):  # either side went away mid-answer: a broken transfer
            keep = self.client_open = False
        if keep and not upstream.eof and not upstream.buffer:
            watch.cancel()
            self.lane.proxy.lane_pool.park(self.address, upstream)
        else:
            upstream.close()
        return status

    async def _sized(self, upstream: Conn, watch: IdleWatch, remaining: int, out: bytes) -> None:
        """A Content-Length body."""
        while remaining:
            if not upstream.buffer:
                await upstream.more()
            data = upstream.take(remaining)
            remaining -= len(data)
            watch.touch()
            self.touch(self.workspace_id)
            await self.client.write(out + data if out else data)
            out = b""
        if out:
            await self.client.write(out)

    async def _chunked(self, upstream: Conn, watch: IdleWatch, parser: Any, head: Head, out: bytes) -> None:
        """A chunked body, relayed as it is while llhttp finds its end."""
        while not head.complete:
            if not upstream.buffer:
                await upstream.more()
            data = upstream.take()
            watch.touch()
            self.touch(self.workspace_id)
            parser.feed_data(data)
            await self.client.write(out + data if out else data)
            out = b""

    async def _until_close(self, upstream: Conn, watch: IdleWatch, out: bytes) -> None:
        await self.client.write(out)
        while True:
            if not upstream.buffer:
                try:
                    await upstream.more()
                except Closed:
                    break
            watch.touch()
            self.touch(self.workspace_id)
            await self.client.write(upstream.take())
        self.client_open = False  # the end of the body: Lane closes the connection
