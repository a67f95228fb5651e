"""The server's HTTP listener: Tornado's, with the proxy's fast lane
(proxy/lane.py) in front of each plain-HTTP connection. The lane
serves plain reads of workspace hosts itself and gives every other
connection, with the bytes it read, to Tornado at the first request it does
not serve."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from handlers.observe import access_log
from proxy.edge import refusal
from proxy import start
from proxy.conn import Conn
from proxy.guard import BodyGuard
from proxy.lane import Lane
from proxy.headers import host_port

PROXY_ROUTE = "workspace proxy"  # the metrics label of requests the lane served


class ProxyHTTPServer(HTTPServer):
    def initialize(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401 - Tornado's configurable init
        super().initialize(*args, **kwargs)
        self.services = self.request_callback.settings["services"]
        start(self.services)  # as server.py does: a server built elsewhere (tests, bench) gets the proxy too
        self.lanes: set[Conn] = set()  # connections the lane serves (Tornado's own are in _connections)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> \
            httputil.HTTPMessageDelegate:
        """Each request Tornado serves: its head checked before any handler
        runs or any body is read (proxy/guard.py)."""
        return BodyGuard(super().start_request(server_conn, request_conn), request_conn, self.services)

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        if not self.services.settings.proxy_fast_lane or self.ssl_options is not None:
            return super().handle_stream(stream, address)
        sock, stream.socket = stream.socket, None  # the lane's from here on (the IOStream never read)
        asyncio.ensure_future(self._lane(sock, address))

    async def _lane(self, sock: socket.socket, address: tuple) -> None:
        conn = Conn()
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: conn, sock)
        except OSError:
            sock.close()
            return
        self.lanes.add(conn)
        try:
            await Lane(self.services, conn, address, lambda c, data: self._to_tornado(c, address, data),
                       self._observe, self.conn_params.header_timeout or 3600, self._refusal).run()
        finally:
            self.lanes.discard(conn)

    async def close_all_connections(self) -> None:
        for conn in list(self.lanes):
            conn.close()
        await super().close_all_connections()

    def _to_tornado(self, conn: Conn, address: tuple, data: bytes) -> None:
        """Tornado's HTTP/1.1 connection takes over, as if it had read `data`
        itself: the socket is duplicated for a Tornado IOStream, and the
        lane's transport let go without a word on the wire (closing one of
        two descriptors of a connection sends nothing)."""
        self.lanes.discard(conn)
        own = conn.transport.get_extra_info("socket")
        try:
            sock = socket.socket(fileno=os.dup(own.fileno()))
        except OSError:
            conn.close()
            return
        conn.transport.pause_reading()
        conn.close()
        sock.setblocking(False)
        stream = IOStream(sock, max_buffer_size=self.max_buffer_size, read_chunk_size=self.read_chunk_size)
        if data:  # put back what the lane read (Tornado keeps unread bytes in this buffer)
            stream._read_buffer[:0] = data  # noqa: SLF001
            stream._read_buffer_size += len(data)  # noqa: SLF001
        super().handle_stream(stream, address)

    def _refusal(self, status: int, reason: str, accept: str, scheme: str, host: str) -> bytes:
        """A whole refusal response, as proxy/edge.py's `refuse` writes it."""
        headers, body = refusal(self.services.settings, status, reason, accept, scheme, host_port(host))
        lines = [f"HTTP/1.1 {status} {httputil.responses.get(status, 'Unknown')}",
                 *(f"{name}: {value}" for name, value in headers), f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _observe(self, method: str, path: str, status: int, seconds: float) -> None:
        """What the app's log function does for a request (handlers/observe.py)."""
        level = logging.INFO if status < 500 else logging.ERROR
        if access_log.isEnabledFor(level):
            access_log.log(level, "%s %s %d %.1fms (workspace)", method, path, status, seconds * 1000,
                           extra={"method": method, "path": path, "status": status,
                                  "ms": round(seconds * 1000, 1)})
        metrics = getattr(self.services, "metrics", None)
        if metrics is not None:
            metrics.observe_request(method, PROXY_ROUTE, status, seconds)
