"""One request of the proxy's fast lane (proxy/lane.py) to its workspace,
and the answer back to the browser: the answer's head parsed once by llhttp,
its framing judged by Tornado's rules (proxy/headers.py `body_framing`, so
both lanes agree where every message ends), its headers passed through the
one rule table, its body bytes relayed unchanged up to the end of the
message and no further, each piece written to the browser before more is
read (backpressure).

Whatever the workspace writes after the end of its answer is another
message nobody asked for: the connection is closed, never pooled."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import httptools

from proxy.conn import HEAD_END, MAX_HEAD_BYTES, ChunkedEnd, Closed, Conn, Head
from proxy.headers import FramingError, body_framing, browser_response_headers
from proxy.runtime import IdleWatch

MAX_1XX = 10  # as Tornado's client: more interim answers than this is an error


class Relay:
    """One request to the workspace and its answer back to the browser.
    `refuse(status)` writes the proxy's own page (502/504) to the browser."""

    def __init__(self, client: Conn, proxy: Any, settings: Any, address: tuple[str, int], workspace_id: Any,
                 is_head: bool, close_after: bool, refuse: Callable[[int], Awaitable[int]]):
        self.client, self.proxy, self.settings, self.address = client, proxy, settings, address
        self.workspace_id, self.is_head, self.refuse = workspace_id, is_head, refuse
        self.client_open = not close_after  # the browser asked for Connection: close
        self.touch = proxy.on_activity  # one call per request and per relayed piece

    async def run(self, request: bytes) -> int | None:
        """The status relayed, or None when nothing was sent to the browser
        (Tornado then serves the request: its refusal pages, its 502)."""
        pool = self.proxy.lane_pool
        for reuse in (True, False):
            try:
                upstream, reused = await pool.connect(self.address, self.settings.proxy_connect_timeout, reuse)
            except (OSError, TimeoutError):
                return None
            watch = IdleWatch(upstream, self.settings.proxy_idle_timeout)
            try:
                upstream.transport.write(request)
                answer = await self._final_head(upstream)
            except Closed:
                answer = None
            except (FramingError, httptools.HttpParserError):  # an answer nobody can delimit
                watch.cancel()
                upstream.close()
                return await self.refuse(502)
            if answer is not None:
                break
            watch.cancel()
            upstream.close()
            if not reused and watch.fired:  # silent for PROXY_IDLE_TIMEOUT: Tornado would wait as long again
                return await self.refuse(504)
            if not reused:  # a fresh connection that failed: Tornado tries once more and answers 502
                return None
        self.touch(self.workspace_id)
        try:
            return await self._relay(upstream, watch, *answer)
        finally:
            watch.cancel()

    async def _final_head(self, upstream: Conn) -> tuple | None:
        """The workspace's final answer head (interim 1xx answers skipped, as
        Tornado's client does): (head, status, keep-alive, body length or
        None for chunked). FramingError when it cannot be delimited."""
        for _ in range(MAX_1XX + 1):
            match = HEAD_END.search(upstream.buffer)
            while match is None:
                if len(upstream.buffer) > MAX_HEAD_BYTES:
                    raise FramingError("an answer head over 64 KiB")
                await upstream.more()
                match = HEAD_END.search(upstream.buffer)
            if match.end() > MAX_HEAD_BYTES:
                raise FramingError("an answer head over 64 KiB")
            head = Head()
            parser = httptools.HttpResponseParser(head)
            parser.feed_data(upstream.take(match.end()))
            status = parser.get_status_code()
            framing = body_framing(head.text_pairs())
            if status == 101:  # switching protocols on a plain request: what follows is no HTTP answer
                raise FramingError("101 to a request that asked for no upgrade")
            if status >= 200:
                connection = b",".join(v for n, v in head.headers if n == b"connection").lower()
                keep = parser.get_http_version() == "1.1" and b"close" not in connection
                return head, status, keep, framing
            if framing != 0:
                raise FramingError("a 1xx answer with a body")
        raise FramingError("too many 1xx answers")

    async def _relay(self, upstream: Conn, watch: IdleWatch, head: Head, status: int, keep: bool,
                     length: int | None) -> int:
        bodyless = self.is_head or status in (204, 304)
        until_close = not bodyless and length == 0 and not any(n == b"content-length" for n, _ in head.headers)
        lines = [b"HTTP/1.1 %d %s" % (status, head.status)]
        for name, value in browser_response_headers(head.text_pairs(), keep_framing=True):
            lines.append(f"{name}: {value}".encode("latin-1"))
        if until_close:  # the body ends when the workspace closes: so must this connection
            self.client_open = False
        if not self.client_open:
            lines.append(b"connection: close")
        out = b"\r\n".join(lines) + b"\r\n\r\n"
        try:
            if bodyless:
                await self.client.write(out)
            elif until_close:
                await self._until_close(upstream, watch, out)
                keep = False
            elif length is None:
                keep = await self._chunked(upstream, watch, out) and keep
            else:
                await self._sized(upstream, watch, length, out)
        except (Closed, FramingError):  # either side went away, or the body broke its framing: a broken transfer
            keep = self.client_open = False
        if keep:  # the pool closes it instead when bytes or an end arrived meanwhile
            watch.cancel()
            self.proxy.lane_pool.park(self.address, upstream)
        else:
            upstream.close()
        return status

    async def _sized(self, upstream: Conn, watch: IdleWatch, remaining: int, out: bytes) -> None:
        """A Content-Length body (bytes after it stay on the connection, which is then not pooled)."""
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

    async def _chunked(self, upstream: Conn, watch: IdleWatch, out: bytes) -> bool:
        """A chunked body, relayed as it is up to its last chunk; False when
        the workspace wrote more after it (the connection must not be pooled)."""
        end, leftover = ChunkedEnd(), False
        while not end.done:
            if not upstream.buffer:
                await upstream.more()
            data = upstream.take()
            used = end.feed(data)
            watch.touch()
            self.touch(self.workspace_id)
            if used < len(data):  # another message after the body's end: dropped, with its connection
                data, leftover = data[:used], True
            await self.client.write(out + data if out else data)
            out = b""
        return not leftover and not upstream.buffer

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
