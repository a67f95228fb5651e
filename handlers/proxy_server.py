"""The server's HTTP listener: Tornado's, with the proxy's fast lane
(services/proxy_lane.py) in front of each connection. The lane serves plain
reads of workspace hosts itself and gives every other connection, with the
bytes it read, to Tornado at the first request it does not serve."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from handlers.observe import access_log
from services.proxy_lane import Lane

PROXY_ROUTE = "workspace proxy"  # the metrics label of requests the lane served


class ProxyHTTPServer(HTTPServer):
    def initialize(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401 - Tornado's configurable init
        super().initialize(*args, **kwargs)
        self.services = self.request_callback.settings["services"]
        self.lanes: set[IOStream] = set()  # connections the lane serves (Tornado's own are in _connections)

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        if not self.services.settings.proxy_fast_lane:
            return super().handle_stream(stream, address)
        lane = Lane(self.services, stream, address, lambda s, data: self._to_tornado(s, address, data),
                    self._observe, self.conn_params.header_timeout or 3600)
        self.lanes.add(stream)
        asyncio.ensure_future(lane.run()).add_done_callback(lambda _: self.lanes.discard(stream))

    async def close_all_connections(self) -> None:
        for stream in list(self.lanes):
            stream.close()
        await super().close_all_connections()

    def _to_tornado(self, stream: IOStream, address: tuple, data: bytes) -> None:
        """Tornado's HTTP/1.1 connection takes over, as if it had read `data` itself."""
        self.lanes.discard(stream)
        if data:  # put back what the lane read (Tornado keeps unread bytes in this buffer)
            stream._read_buffer[:0] = data  # noqa: SLF001
            stream._read_buffer_size += len(data)  # noqa: SLF001
        super().handle_stream(stream, address)

    def _observe(self, method: str, status: int, seconds: float) -> None:
        """What the app's log function does for a request (handlers/observe.py)."""
        level = logging.INFO if status < 500 else logging.ERROR
        if access_log.isEnabledFor(level):
            access_log.log(level, "%s (workspace) %d %.1fms", method, status, seconds * 1000,
                           extra={"method": method, "path": "(workspace)", "status": status,
                                  "ms": round(seconds * 1000, 1)})
        metrics = getattr(self.services, "metrics", None)
        if metrics is not None:
            metrics.observe_request(method, PROXY_ROUTE, status, seconds)
