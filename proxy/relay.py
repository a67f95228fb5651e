"""One request of the proxy's fast lane (proxy/lane.py) to its
workspace, and the answer back to the browser: the answer's head parsed
once by llhttp for its framing and rewritten without hop-by-hop headers or
a cookie named like ours, its body bytes relayed unchanged, each chunk
written to the browser before more is read (backpressure)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httptools

from proxy.conn import Closed, Conn
from proxy.headers import HOP_BY_HOP, OUR_COOKIE_PREFIX
from proxy.runtime import IdleWatch

if TYPE_CHECKING:
    from proxy.lane import Lane

MAX_HEAD_BYTES = 64 * 1024  # Tornado's own limit: a longer head goes there to be refused
_NOT_RETURNED = {name.encode() for name in HOP_BY_HOP} - {b"transfer-encoding"}  # the body's framing passes as is
_OUR_COOKIE = OUR_COOKIE_PREFIX.encode()


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


class Relay:
    """One request to the workspace and its answer back to the browser."""

    def __init__(self, lane: Lane, address: tuple[str, int], is_head: bool, workspace_id: Any, request: Head):
        self.lane, self.address, self.is_head, self.workspace_id = lane, address, is_head, workspace_id
        self.request = request
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
            if not reused and watch.fired:  # silent for PROXY_IDLE_TIMEOUT: Tornado would wait as long again
                return await self._gateway_timeout()
            if not reused:  # a fresh connection that failed: Tornado tries once more and answers 502
                return None
        self.touch(self.workspace_id)
        try:
            return await self._relay(upstream, watch, *answer)
        finally:
            watch.cancel()

    async def _gateway_timeout(self) -> int:
        """The 504 page (or envelope) Tornado's path would give."""
        headers = dict(self.request.headers)
        accept = headers.get(b"accept", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        await self.client.write(self.lane.refusal(504, "unreachable", accept, self.lane.scheme_of(self.request,
                                                  self.lane.settings.trusted_proxies), host))
        return 504

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
        if keep:  # the pool closes it instead when bytes or an end arrived meanwhile
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
