"""What the loopback fakes (fake_oauth, fake_stripe) share: the record of a
request they received, and starting and stopping their Tornado server."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port


@dataclass
class Recorded:
    """One request as a fake received it."""
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]


def listen(app: web.Application) -> tuple[HTTPServer, str]:
    """`app` served on an ephemeral loopback port: (server, base URL)."""
    sock, port = bind_unused_port()
    http = HTTPServer(app)
    http.add_sockets([sock])
    return http, f"http://127.0.0.1:{port}"


async def close(http: HTTPServer) -> None:
    """Stop listening and drop connections (a client's idle keep-alive
    connection must not hold the test up)."""
    http.stop()
    try:
        await asyncio.wait_for(http.close_all_connections(), 5)
    except asyncio.TimeoutError:
        pass
