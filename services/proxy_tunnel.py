"""A proxied WebSocket after its handshake: the bytes of both directions
copied as they are, as nginx and configurable-http-proxy do.

Copying bytes, not re-framing messages, keeps what the browser and
code-server agreed on end to end (subprotocol, permessage-deflate, pings,
close codes) and costs a fraction of parsing, unmasking and re-masking every
frame. Each direction reads its next bytes only once the previous ones were
written (backpressure).

The workspace-to-browser direction follows frame boundaries (headers only;
payloads are copied untouched), so that the proxy can end a socket whose
access was revoked with a proper close frame (e.g. 4401) between frames.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from tornado.iostream import IOStream, StreamClosedError

COPY_BYTES = 64 * 1024
CLOSE_GRACE_SECONDS = 2.0  # a frame still arriving when access ends gets this long to finish


class Tunnel:
    def __init__(self, client: IOStream, upstream: IOStream, grant: Any):
        self.client, self.upstream, self.grant = client, upstream, grant
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
                await self.upstream.write(data)
        except StreamClosedError:
            pass
        finally:
            self._shut()

    async def _to_browser(self) -> None:
        upstream, client = self.upstream, self.client
        try:
            while True:
                self.at_boundary = True
                if self.pending_close:
                    return await self._send_close()
                head = await upstream.read_bytes(2)
                self.at_boundary = False
                size = head[1] & 0x7F
                if size >= 126:
                    extended = await upstream.read_bytes(2 if size == 126 else 8)
                    head += extended
                    size = int.from_bytes(extended, "big")
                if head[1] & 0x80:  # masked (a server should not; passed on as it is)
                    head += await upstream.read_bytes(4)
                if not size:
                    await client.write(head)
                while size:
                    chunk = await upstream.read_bytes(min(size, COPY_BYTES), partial=True)
                    size -= len(chunk)
                    await client.write(head + chunk if head else chunk)
                    head = b""
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
