"""A proxied WebSocket after its handshake: the bytes of both directions
copied as they are, as nginx and configurable-http-proxy do.

Copying bytes, not re-framing messages, keeps what the browser and
code-server agreed on end to end (subprotocol, permessage-deflate, pings,
close codes) and costs a fraction of parsing, unmasking and re-masking every
frame.

The workspace-to-browser direction follows frame boundaries (`FrameTracker`:
headers read, bytes untouched), so that the proxy can end a socket whose
access was revoked with a proper close frame (e.g. 4401) between frames.

Two ways to move the bytes, chosen by `open_tunnel`:
- `SocketTunnel` (plain connections, the usual case behind a TLS front
  proxy): both sockets taken from their Tornado IOStreams and served by
  asyncio protocols, each piece written from `data_received` with no
  future, no task and no re-registering in epoll per message, which a
  Tornado read costs (BENCHMARKS.md: server CPU per echoed message 0.33 ->
  0.21-0.27 ms, memory per open socket 5.1 -> 1.5-2.4 KiB). Backpressure: a
  side whose write buffer is over its high-water mark pauses reading on the
  other.
- `StreamTunnel` (a browser on TLS served by this process: its TLS state
  lives in Tornado's SSLIOStream): each direction reads its next bytes only
  once the previous ones were written.
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Callable

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

COPY_BYTES = 64 * 1024
CLOSE_GRACE_SECONDS = 2.0  # a frame still arriving when access ends gets this long to finish


def open_tunnel(client: IOStream, upstream: IOStream, grant: Any,
                touch: Callable[[], None] = lambda: None) -> "Tunnel":
    kind = StreamTunnel if isinstance(client, SSLIOStream) else SocketTunnel
    return kind(client, upstream, grant, touch)


class Tunnel:
    """What both kinds share: the frame boundaries of the workspace's
    direction, and ending the socket with a close frame between frames."""

    def __init__(self, client: IOStream, upstream: IOStream, grant: Any, touch: Callable[[], None] = lambda: None):
        self.client, self.upstream, self.grant = client, upstream, grant
        self.touch = touch  # called per relayed chunk, either way (activity, for idle culling)
        self.frames = FrameTracker()  # the workspace-to-browser direction
        self.pending_close: tuple[int, str] | None = None
        self.closed = False

    @property
    def at_boundary(self) -> bool:
        return self.frames.at_boundary

    def close(self, code: int, reason: str) -> None:
        """End the socket with a close frame to the browser, between frames."""
        if self.closed or self.pending_close:
            return
        self.pending_close = (code, reason)
        if self.at_boundary:
            self._close_now()
        asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, self._shut)

    def _close_frame(self) -> bytes:
        code, reason = self.pending_close or (1000, "")
        payload = code.to_bytes(2, "big") + reason.encode()[:123]
        return bytes([0x88, len(payload)]) + payload

    def _close_now(self) -> None:
        raise NotImplementedError

    def _shut(self) -> None:
        raise NotImplementedError


class StreamTunnel(Tunnel):
    """Both directions on Tornado IOStreams (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reading_at_boundary = True  # the workspace's direction waits for bytes between frames

    @property
    def at_boundary(self) -> bool:
        return self.reading_at_boundary

    async def run(self, on_end: Callable[["Tunnel"], None]) -> None:
        try:
            await asyncio.gather(self._to_workspace(), self._to_browser())
        finally:
            on_end(self)

    async def _to_workspace(self) -> None:
        try:
            while True:
                data = await self.client.read_bytes(COPY_BYTES, partial=True)
                self.touch()
                await self.upstream.write(data)
        except StreamClosedError:
            pass
        finally:
            self._shut()

    async def _to_browser(self) -> None:
        frames = self.frames
        try:
            while True:
                if self.pending_close and frames.at_boundary:
                    return await self._send_close()
                self.reading_at_boundary = frames.at_boundary  # close() may write its frame while this waits
                data = await self.upstream.read_bytes(COPY_BYTES, partial=True)
                self.reading_at_boundary = False
                self.touch()
                frames.feed(data)
                await self.client.write(data)
        except StreamClosedError:
            pass
        finally:
            self._shut()

    def _close_now(self) -> None:
        asyncio.ensure_future(self._send_close())

    async def _send_close(self) -> None:
        try:
            await self.client.write(self._close_frame())
        except StreamClosedError:
            pass
        self._shut()

    def _shut(self) -> None:
        self.closed = True
        self.client.close()
        self.upstream.close()


class _Side(asyncio.Protocol):
    """One connection of a `SocketTunnel`: what arrives goes to `forward`."""

    def __init__(self, tunnel: "SocketTunnel", forward: Callable[[bytes], None]):
        self.tunnel, self.forward = tunnel, forward
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]  # until both sides are up (SocketTunnel.run)

    def data_received(self, data: bytes) -> None:
        self.forward(data)

    def eof_received(self) -> bool:
        self.tunnel._shut()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel._shut()

    def pause_writing(self) -> None:  # our buffer is full: the other side stops reading
        if self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.resume_reading()


class SocketTunnel(Tunnel):
    """Both directions on asyncio protocols (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.browser = _Side(self, self._from_browser)
        self.workspace = _Side(self, self._from_workspace)
        self.browser.peer, self.workspace.peer = self.workspace, self.browser
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()

    async def run(self, on_end: Callable[["Tunnel"], None]) -> None:
        try:
            if await self._start():
                await self.ended
        finally:
            self._shut()
            on_end(self)

    async def _start(self) -> bool:
        """Both sockets taken over, what Tornado had read already relayed first."""
        taken: list[tuple[socket.socket, bytes]] = []
        try:
            for stream in (self.client, self.upstream):
                taken.append(await _take(stream))
        except (OSError, StreamClosedError):
            for sock, _ in taken:
                sock.close()
            self.client.close()
            self.upstream.close()
            return False
        loop = asyncio.get_running_loop()
        for (sock, _), side in zip(taken, (self.browser, self.workspace)):
            try:
                await loop.connect_accepted_socket(lambda side=side: side, sock)
            except OSError:
                sock.close()
                return False
        if self.closed:
            return False
        (_, client_data), (_, upstream_data) = taken
        if client_data:
            self._from_browser(client_data)
        if upstream_data:
            self._from_workspace(upstream_data)
        if self.pending_close and self.at_boundary:
            self._close_now()
        for side in (self.browser, self.workspace):
            side.transport.resume_reading()
        return not self.closed

    def _from_browser(self, data: bytes) -> None:
        self.touch()
        self.workspace.transport.write(data)

    def _from_workspace(self, data: bytes) -> None:
        self.touch()
        self.frames.feed(data)
        self.browser.transport.write(data)
        if self.pending_close and self.frames.at_boundary:
            self._close_now()

    def _close_now(self) -> None:
        if self.browser.transport is not None and not self.closed:  # else run() writes it once both are up
            self.browser.transport.write(self._close_frame())
            self._shut()

    def _shut(self) -> None:
        """Both connections closed (again: a side made after an early close)."""
        self.closed = True
        for side in (self.browser, self.workspace):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()  # what is buffered still goes out (a close frame, the last bytes)
                asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, side.transport.abort)
        if not self.ended.done():
            self.ended.set_result(None)


async def _take(stream: IOStream) -> tuple[socket.socket, bytes]:
    """The stream's socket, duplicated once what was written to it has left,
    and the bytes Tornado had read but not handed out; the stream is then
    closed (closing one of two descriptors of a connection sends nothing;
    proxy/server.py hands connections the other way alike)."""
    if stream.closed():
        raise StreamClosedError()
    await stream.write(b"")  # resolves once every earlier write has left
    sock = socket.socket(fileno=os.dup(stream.socket.fileno()))
    sock.setblocking(False)
    data = bytes(stream._read_buffer[:stream._read_buffer_size])  # noqa: SLF001
    stream.close()
    return sock, data


class FrameTracker:
    """Where WebSocket frames end in a byte stream: headers are read, payloads
    skipped, bytes never changed. One read and one write per chunk, however
    many frames it holds."""

    def __init__(self) -> None:
        self.remaining = 0  # payload bytes of the current frame still to come
        self.header = b""  # a frame header split across chunks

    @property
    def at_boundary(self) -> bool:
        return not self.remaining and not self.header

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self.remaining:
                step = min(self.remaining, end - pos)
                self.remaining -= step
                pos += step
                continue
            known = len(self.header)
            head = self.header + data[pos:pos + 14]
            if len(head) < 2:
                self.header = head
                return
            size = head[1] & 0x7F
            head_size = 2 + {126: 2, 127: 8}.get(size, 0) + (4 if head[1] & 0x80 else 0)
            if len(head) < head_size:  # the rest of the header comes with the next chunk
                self.header = head
                return
            if size >= 126:
                size = int.from_bytes(head[2:4] if size == 126 else head[2:10], "big")
            self.header = b""
            pos += head_size - known
            self.remaining = size
