"""The workspace proxy's WebSocket relay (code-server's terminal and editor
live on WebSockets): the handshake is checked here and passed on to the
workspace; once it answers 101, both connections become a byte tunnel
(proxy/tunnel.py) that the proxy's sweep can close."""
from __future__ import annotations

import asyncio
from typing import Any

from tornado import httputil, web
from tornado.iostream import StreamClosedError, UnsatisfiableReadError

from proxy.edge import ProxyEdge, refuse
from proxy.tunnel import open_tunnel
from proxy.headers import forwarded_headers, response_headers, without_ticket

HANDSHAKE_HEAD_BYTES = 64 * 1024


class WorkspaceProxySocket(ProxyEdge, web.RequestHandler):
    """A WebSocket handshake on a workspace host."""

    def initialize(self) -> None:
        self.setup()

    async def get(self, *args: Any) -> None:
        if self.cross_site():  # another site's page opening this workspace's terminal with our cookie
            return refuse(self, 403, "origin")
        address = await self.admitted()
        if address is None:
            return
        proxy = self.services.proxy
        if not proxy.sockets.hold(self.grant):  # PROXY_MAX_SOCKETS_PER_LOGIN open already
            return refuse(self, 429, "too_many")
        try:
            answered = await self._upstream(address)
        finally:
            proxy.sockets.release(self.grant)  # from here on the tunnel counts
        if answered is None:
            return
        upstream, start, headers = answered
        self.set_status(101, start.reason or "Switching Protocols")
        for name in ("Content-Type", "Date"):
            self.clear_header(name)
        for name, value in response_headers(headers):
            self.add_header(name, value)
        self.set_header("Upgrade", "websocket")
        self.set_header("Connection", "Upgrade")
        self.finish()
        workspace_id = self.workspace_id
        tunnel = open_tunnel(self.detach(), upstream, self.grant,  # detached at once, as Tornado's own WebSockets do
                             lambda: proxy.on_activity(workspace_id))
        proxy.sockets.add(tunnel)
        asyncio.ensure_future(tunnel.run(proxy.sockets.discard))

    async def _upstream(self, address: tuple[str, int]) -> tuple | None:
        """(connection, answer start line, answer headers) after the
        workspace agreed to upgrade; None after refusing (502)."""
        timeout = self.config.proxy_connect_timeout
        try:
            upstream, _ = await self.services.proxy.pool.connect(address, timeout, reuse=False)
        except (OSError, asyncio.TimeoutError, StreamClosedError):
            refuse(self, 502, "unreachable")
            return None
        try:
            start, headers = await asyncio.wait_for(self._handshake(upstream), timeout)
        except (OSError, asyncio.TimeoutError, StreamClosedError, UnsatisfiableReadError, httputil.HTTPInputError):
            start = None
        if start is None or start.code != 101:
            upstream.close()
            refuse(self, 502, "unreachable")
            return None
        return upstream, start, headers

    async def _handshake(self, upstream: Any) -> tuple[httputil.ResponseStartLine, httputil.HTTPHeaders]:
        """Send the browser's handshake on (its key, version, subprotocols and
        extensions unchanged) and read the workspace's answer head."""
        headers = forwarded_headers(self.request, self.scheme, self.config.trusted_proxies)
        headers["Connection"], headers["Upgrade"] = "Upgrade", "websocket"
        lines = [f"GET {without_ticket(self.request.uri)} HTTP/1.1"] + [f"{name}: {value}" for name, value in headers.get_all()]
        await upstream.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await upstream.read_until(b"\r\n\r\n", max_bytes=HANDSHAKE_HEAD_BYTES)
        first, _, rest = head.decode("latin-1").partition("\r\n")
        return httputil.parse_response_start_line(first), httputil.HTTPHeaders.parse(rest)
