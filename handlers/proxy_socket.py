"""The workspace proxy's WebSocket relay (code-server's terminal and editor
live on WebSockets): frame by frame both ways, with backpressure."""
from __future__ import annotations

import asyncio
from typing import Any

from tornado import websocket
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError

from handlers.proxy_edge import ProxyEdge, refuse
from services.workspace_proxy import WEBSOCKET_HANDSHAKE, forwarded_headers

def _sendable(code: int | None) -> int | None:
    """A close code that may be sent on (1005, 1006 and 1015 only describe)."""
    if code is None or code in (1005, 1006, 1015) or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        return None
    return code


class WorkspaceProxySocket(ProxyEdge, websocket.WebSocketHandler):
    """A WebSocket relayed frame by frame; each direction reads the next
    frame only once the previous one is written (backpressure)."""

    def initialize(self) -> None:
        self.setup()
        self.upstream: websocket.WebSocketClientConnection | None = None
        self.pump: asyncio.Task | None = None

    async def get(self, *args: Any) -> None:
        if self.cross_origin():
            return refuse(self, 403, "origin")
        address = await self.admitted()
        if address is None:
            return
        headers = forwarded_headers(self.request, self.scheme, self.config.trusted_proxies, skip=WEBSOCKET_HANDSHAKE)
        protocols = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        request = HTTPRequest(f"ws://{address[0]}:{address[1]}{self.request.uri}", headers=headers,
                              connect_timeout=self.config.proxy_connect_timeout,
                              request_timeout=self.config.proxy_connect_timeout)
        try:
            self.upstream = await websocket.websocket_connect(request, subprotocols=protocols or None)
        except (HTTPClientError, OSError, StreamClosedError, asyncio.TimeoutError):
            return refuse(self, 502, "unreachable")
        await super().get(*args)

    def check_origin(self, origin: str) -> bool:
        return False  # Tornado asks only about cross-origin handshakes; get() refused those already

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self.upstream.selected_subprotocol if self.upstream else None

    def open(self, *args: Any) -> None:
        self.services.proxy.sockets.add(self)
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        upstream = self.upstream
        try:
            while (message := await upstream.read_message()) is not None:
                await self.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            pass
        self.close(_sendable(upstream.close_code), upstream.close_reason if _sendable(upstream.close_code) else None)

    def on_message(self, message: str | bytes) -> Any:
        try:
            return self.upstream.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            self.close(1011, "Workspace connection lost")
            return None

    def on_close(self) -> None:
        self.services.proxy.sockets.discard(self)
        if self.upstream is not None:
            code = _sendable(self.close_code)
            self.upstream.close(code, self.close_reason if code else None)
