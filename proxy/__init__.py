"""The workspace proxy, whole: every connection to the server's port enters
here first (server.py listens with `proxy.server.ProxyHTTPServer`).

    access.py     who may pass: tickets, the host cookie, the check
    runtime.py    pools of connections to workspaces, the idle watch
    headers.py    which headers cross, either way (one table, both lanes)
    conn.py       the fast lane's connections
    lane.py       the fast lane: plain reads served below Tornado's HTTP layer
    relay.py      the fast lane's request to a workspace and its answer back
    tunnel.py     a WebSocket after its handshake: bytes both ways
    edge.py       what the Tornado handlers share: the check, refusal pages
    handlers.py   the HTTP edge: the ticket endpoint and the HTTP relay
    websocket.py  the WebSocket handshake relay
    server.py     the listener: the lane in front of Tornado

The services below (services/) never import this package; it reads them
through the `services` container it is started with.
"""
from __future__ import annotations

from typing import Any


def start(services: Any) -> None:
    """Build ``services.proxy`` (its pools and sweeper) once; closed with the services."""
    from proxy.access import start as start_access
    start_access(services)
