"""The workspace proxy, whole: every connection to the server's port enters
here first (server.py listens with `proxy.server.ProxyHTTPServer`).

    access.py     who may pass: tickets, the host cookie, the check (login,
                  viewer, workspace state, another site's page), the sweep
    runtime.py    pools of connections to workspaces, the open WebSockets
                  (per-login cap), the workspace cache, the idle watch
    headers.py    the rule table: which headers cross, either way (both
                  lanes), and the framing rules (Tornado's, for both lanes)
    conn.py       the fast lane's connections, head and chunked-end parsing
    lane.py       the fast lane: plain reads served below Tornado's HTTP layer
    relay.py      the fast lane's request to a workspace and its answer back
    tunnel.py     a WebSocket after its handshake: bytes both ways
    edge.py       what the Tornado handlers share: the check, refusal pages
    handlers.py   the HTTP edge: the HTTP relay on workspace hosts (the ticket
                  endpoint, an API route, is handlers/workspace_open.py)
    websocket.py  the WebSocket handshake relay
    guard.py      every request Tornado serves, judged on its head: bad
                  framing, or a body for a handler that takes none: 400
    server.py     the listener: the lane in front of Tornado

Imports go one way: server -> lane -> relay -> conn -> headers/runtime;
handlers/websocket -> edge -> access -> runtime/headers.

The services below (services/) never import this package; it reads them
through the `services` container it is started with.
"""
from __future__ import annotations

from typing import Any


def start(services: Any) -> None:
    """Build ``services.proxy`` (its pools and sweeper) once; closed with the services."""
    from proxy.access import start as start_access
    start_access(services)
