"""Connections of the proxy's fast lane (proxy/lane.py): plain
asyncio protocols, whose socket stays registered for reading (a Tornado
IOStream adds and removes it around every read, two system calls and a
good deal of Python per request), and the idle keep-alive connections to
workspaces that the lane reuses.

A `Conn` buffers what arrives (reading pauses past READ_LIMIT, so a fast
workspace and a slow browser cannot fill the server's memory) and writes
with backpressure (`write` waits while the transport's buffer is over its
high-water mark).
"""
from __future__ import annotations

import asyncio
import re

from proxy.headers import FramingError
from proxy.runtime import KeepAlivePool

READ_LIMIT = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024  # Tornado's own limit (max_header_size): a longer head goes there to be refused
HEAD_END = re.compile(rb"\r?\n\r?\n")  # as Tornado finds the end of a head (a bare LF is allowed)
_HEX = re.compile(rb"[0-9a-fA-F]+")
_SIZE_LINE_BYTES = 64  # Tornado's read_until(b"\r\n", max_bytes=64) for a chunk size line


class Closed(Exception):
    """The connection ended (by the peer, a timeout or us)."""


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.closed = False
        self._waiter: asyncio.Future | None = None
        self._drain: asyncio.Future | None = None
        self._paused_reading = self._paused_writing = False

    # -- asyncio's side ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_LIMIT and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.closed = True
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the lane's side ----------------------------------------------------------------------
    async def more(self) -> None:
        """Wait until more bytes are in `buffer`; Closed at the end."""
        if self.eof:
            raise Closed
        if self._paused_reading:
            self._paused_reading = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        if self.eof and not self.buffer:
            raise Closed

    def take(self, size: int = -1) -> bytes:
        """Up to `size` buffered bytes (all when -1), removed from the buffer."""
        buffer = self.buffer
        if size < 0 or size >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:size])
            del buffer[:size]
        if self._paused_reading and len(buffer) <= READ_LIMIT:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise Closed
        self.transport.write(data)
        if self._paused_writing:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain
            if self.closed:
                raise Closed

    async def flushed(self) -> None:
        """Wait until everything written has left for the socket."""
        while not self.closed and self.transport.get_write_buffer_size():
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """Abort: used when the exchange failed or timed out (nothing pending matters)."""
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True


class LanePool(KeepAlivePool):
    """The fast lane's pool: `Conn`s (a parked one with bytes or an end
    waiting on it is not reused)."""

    async def _open(self, address: tuple[str, int]) -> Conn:
        _, conn = await asyncio.get_running_loop().create_connection(Conn, *address)
        return conn

    def _usable(self, conn: Conn) -> bool:
        return not conn.eof and not conn.buffer


class Head:
    """httptools' callbacks for one message head: what was parsed."""
    __slots__ = ("url", "headers", "complete", "status", "upgrade", "_text")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.status = b""
        self.upgrade = False
        self._text: list[tuple[str, str]] | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        self.complete = True

    def text_pairs(self) -> list[tuple[str, str]]:
        """The headers as text (for the rule table in proxy/headers.py), decoded once."""
        if self._text is None:
            self._text = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.headers]
        return self._text


class ChunkedEnd:
    """Where a chunked body ends, by Tornado's grammar (a hex size line of at
    most 64 bytes with its CRLF, the data, a CRLF; `0` and a CRLF to end:
    no extensions, no trailers), so that the fast lane and the Tornado path
    agree on every message's end. `feed` says how many bytes of a piece
    belong to the body: what follows is another message the workspace wrote,
    which nobody may receive."""
    __slots__ = ("line", "remaining", "expect", "last", "done")

    def __init__(self) -> None:
        self.line = b""  # a size line split across pieces
        self.remaining = 0  # data bytes of the current chunk still to come
        self.expect = b""  # fixed bytes still to come (the CRLF after data, or the final one)
        self.last = False  # the zero chunk was read: `expect` is the body's end
        self.done = False

    def feed(self, data: bytes) -> int:
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self.remaining:
                step = min(self.remaining, end - pos)
                self.remaining -= step
                pos += step
                if not self.remaining:
                    self.expect = b"\r\n"
            elif self.expect:
                step = min(len(self.expect), end - pos)
                if data[pos:pos + step] != self.expect[:step]:
                    raise FramingError("a chunk not ended by CRLF")
                self.expect = self.expect[step:]
                pos += step
                self.done = self.last and not self.expect
            else:
                pos = self._size_line(data, pos)
        return pos

    def _size_line(self, data: bytes, pos: int) -> int:
        known = len(self.line)
        buffer = self.line + data[pos:pos + _SIZE_LINE_BYTES]
        found = buffer.find(b"\r\n")
        if found < 0:
            if len(buffer) >= _SIZE_LINE_BYTES:
                raise FramingError("a chunk size line too long")
            self.line = buffer
            return len(data)
        self.line = b""
        if not _HEX.fullmatch(buffer[:found]):
            raise FramingError("a chunk size that is not hexadecimal")
        size = int(buffer[:found], 16)
        if size:
            self.remaining = size
        else:
            self.expect, self.last = b"\r\n", True
        return pos + found + 2 - known
