"""A proxied WebSocket after its handshake: the bytes of both directions
copied as they are, as nginx and configurable-http-proxy do.

Copying bytes, not re-framing messages, keeps what the browser and
code-server agreed on end to end (subprotocol, permessage-deflate, pings,
close codes) and costs a fraction of parsing, unmasking and re-masking every
frame. Each direction reads its next bytes only once the previous ones were
written (backpressure).

The workspace-to-browser direction follows frame boundaries (`FrameTracker`:
headers read, bytes untouched), so that the proxy can end a socket whose
access was revoked with a proper close frame (e.g. 4401) between frames.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from tornado.iostream import IOStream, StreamClosedError

COPY_BYTES = 64 * 1024
CLOSE_GRACE_SECONDS = 2.0  # a frame still arriving when access ends gets this long to finish


class Tunnel:
    def __init__(self, client: IOStream, upstream: IOStream, grant: Any, touch: Callable[[], None] = lambda: None):
        self.client, self.upstream, self.grant = client, upstream, grant
        self.touch = touch  # called per relayed chunk, either way (activity, for idle culling)
        self.at_boundary = True  # the workspace-to-browser direction is between frames
        self.pending_close: tuple[int, str] | None = None
        self.closed = False

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
        frames = FrameTracker()
        try:
            while True:
                if self.pending_close and frames.at_boundary:
                    return await self._send_close()
                self.at_boundary = frames.at_boundary  # close() may write its frame while this waits
                data = await self.upstream.read_bytes(COPY_BYTES, partial=True)
                self.at_boundary = False
                self.touch()
                frames.feed(data)
                await self.client.write(data)
        except StreamClosedError:
            pass
        finally:
            self._shut()

    def close(self, code: int, reason: str) -> None:
        """End the socket with a close frame to the browser, between frames."""
        if self.closed or self.pending_close:
            return
        self.pending_close = (code, reason)
        if self.at_boundary:
            asyncio.ensure_future(self._send_close())
        asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, self._shut)

    async def _send_close(self) -> None:
        code, reason = self.pending_close or (1000, "")
        payload = code.to_bytes(2, "big") + reason.encode()[:123]
        try:
            await self.client.write(bytes([0x88, len(payload)]) + payload)
        except StreamClosedError:
            pass
        self._shut()

    def _shut(self) -> None:
        self.closed = True
        self.client.close()
        self.upstream.close()


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
