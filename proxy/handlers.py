"""The workspace proxy's HTTP edge on Tornado: on each workspace's own host
(``ws-<id>.localhost:<port>``), a streaming HTTP relay (here) and a
WebSocket relay (proxy/websocket.py). The ticket endpoint on the API's
origin is an API handler (handlers/workspace_open.py): nothing here imports
the handlers package, which imports this module for its route table.

Nothing reaches a workspace without a cookie that passes `ProxyAccess.check`;
refusals are a small HTML page for browsers and the JSON envelope otherwise
(proxy/edge.py).
"""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from tornado import httputil, routing, web
from tornado.iostream import StreamClosedError

from proxy.edge import ProxyEdge, refuse
from proxy.headers import COOKIE_NAME, FramingError, body_framing, forwarded_headers, response_headers, without_ticket
from proxy.runtime import IdleWatch, exchange_on, reusable
from proxy.websocket import WorkspaceProxySocket
from services.settings import workspace_host_regex

TORNADO_CHUNKS = ("POST", "PUT", "PATCH")  # the methods whose body Tornado's HTTP client frames itself


@web.stream_request_body
class WorkspaceProxyHandler(ProxyEdge, web.RequestHandler):
    """Any method, bodies streamed both ways with backpressure."""
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(self) -> None:
        self.setup()
        self.pool = self.services.proxy.pool
        self.stream = self.exchange = self.watch = self.address = None
        self.reused = False
        self.chunking = False  # the body's chunks are framed here (Tornado's client frames only POST, PUT, PATCH)

    async def prepare(self) -> None:
        self._transforms = []  # the workspace's bytes pass as they are (no second gzip)
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > self.config.proxy_max_body_bytes):
            return refuse(self, 413, "too_large")
        self.request.connection.set_max_body_size(self.config.proxy_max_body_bytes)
        if self.cross_site():  # a sibling workspace's fetch, img, iframe or form, with our cookie
            return refuse(self, 403, "origin")
        ticket = self.get_query_argument("ticket", None)
        if ticket is not None and self.request.method == "GET":
            return await self.redeem(ticket)
        if ticket is not None:  # never forwarded (without_ticket), and spent: the workspace must not redeem it
            await self.services.proxy.redeem(ticket, self.owner_id)
        self.address = await self.admitted()
        if self.address is not None and self._has_body():
            # The body streams through as it arrives, on a fresh connection: a
            # parked one may have gone stale, and a streamed body cannot be sent twice.
            await self._start(reuse=False)

    def _has_body(self) -> bool:
        # The framing was checked on the head, before this handler ran (proxy/server.py's BodyGuard).
        length = self.request.headers.get("Content-Length")
        return length not in (None, "0") or "Transfer-Encoding" in self.request.headers

    async def _start(self, reuse: bool) -> bool:
        """Connect to the workspace and send the request head; False after
        refusing (502) when it does not answer."""
        config = self.config
        try:
            self.stream, self.reused = await self.pool.connect(self.address, config.proxy_connect_timeout, reuse)
        except (OSError, asyncio.TimeoutError, StreamClosedError):
            refuse(self, 502, "unreachable")
            return False
        self.exchange = exchange_on(self.stream)
        self.watch = IdleWatch(self.stream, config.proxy_idle_timeout)
        headers = forwarded_headers(self.request, self.scheme, config.trusted_proxies)
        if "Transfer-Encoding" in self.request.headers and self.request.method not in TORNADO_CHUNKS:
            headers["Transfer-Encoding"] = "chunked"
            self.chunking = True
        start = httputil.RequestStartLine(self.request.method, without_ticket(self.request.uri), "HTTP/1.1")
        await self._upstream(self.exchange.write_headers(start, headers))
        return True

    async def redeem(self, ticket: str) -> None:
        """Trade the ticket for this host's cookie, then drop it from the URL.
        A spent ticket with a cookie already set (the Back button) just
        leads on: the cookie is checked at the ticketless URL."""
        grant = await self.services.proxy.redeem(ticket, self.owner_id)
        if grant is None and self.grant is None:
            return refuse(self, 401, "login")
        if grant is not None:  # under https a __Host- cookie: no page of a sibling host can set one for us
            name = f"__Host-{COOKIE_NAME}" if self.scheme == "https" else COOKIE_NAME
            self.set_cookie(name, self.services.proxy.cookie_for(grant), httponly=True, samesite="Lax",
                            secure=self.scheme == "https", path="/")
        query = [(k, v.decode("utf-8", "replace")) for k, vs in self.request.query_arguments.items()
                 if k != "ticket" for v in vs]
        self.set_header("Cache-Control", "no-store")
        path = "/" + self.request.path.lstrip("/\\")  # never `//other.site`: a redirect to this host only
        self.redirect(path + (f"?{urlencode(query)}" if query else ""))

    async def data_received(self, chunk: bytes) -> None:
        if self.exchange is not None and chunk:
            self.watch.touch()
            await self._upstream(self.exchange.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self.chunking else chunk))

    async def _upstream(self, write: Any) -> None:
        """A write to the workspace; a workspace that went away is noticed
        when its answer is read."""
        try:
            await write
        except StreamClosedError:
            pass

    async def get(self, *args: Any) -> None:
        if self.exchange is None and not await self._start(reuse=True):
            return
        self.services.proxy.on_activity(self.workspace_id)
        relay, complete = await self._relay()
        if not relay.started and self.reused and not relay.refused:  # a parked one had gone stale: once more, fresh
            self._release()
            if not await self._start(reuse=False):
                return
            relay, complete = await self._relay()
        if relay.refused or not relay.started:
            return refuse(self, 504 if self.watch.fired else 502, "unreachable")
        if not complete:  # cut short: the browser must see a broken transfer, not a short one
            self.request.connection.close()
            return
        if reusable(self.request.method, relay.start_line, relay.headers):  # the pool closes a closed one
            self.watch.cancel()
            self.pool.park(self.address, self.exchange.detach())
            self.stream = None
        self.finish()

    async def _relay(self) -> tuple["ResponseRelay", bool]:
        relay = ResponseRelay(self)
        try:
            if self.chunking:
                await self._upstream(self.exchange.write(b"0\r\n\r\n"))
            self.exchange.finish()
            return relay, await self.exchange.read_response(relay) and not relay.refused
        except StreamClosedError:  # closed by the workspace before it answered
            return relay, False
        except httputil.HTTPInputError:  # an answer nobody can delimit: never retried, never pooled
            relay.refused = True
            self.stream.close()
            return relay, False

    head = post = put = patch = delete = options = get

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        self._release()

    def _release(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class ResponseRelay(httputil.HTTPMessageDelegate):
    """The workspace's answer, written to the browser as it arrives; each
    chunk waits until the browser took the previous one (backpressure)."""

    def __init__(self, handler: WorkspaceProxyHandler):
        self.handler = handler
        self.started = False
        self.refused = False  # a 101 to a plain request: what follows is no HTTP answer
        self.start_line: Any = None
        self.headers = httputil.HTTPHeaders()

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> None:
        handler = self.handler
        handler.watch.touch()
        if self.refused:
            return
        try:
            body_framing(list(headers.get_all()))  # as the fast lane judges it (Tornado's client raises later)
            if start_line.code == 101:  # on a plain request: what follows is no HTTP answer
                raise FramingError("101")
        except FramingError:
            self.refused = True
            handler.stream.close()
            return
        if start_line.code < 200:  # an interim answer (100, 103): Tornado's client reads on to the final one
            return
        handler.set_status(start_line.code, start_line.reason or None)
        for name in ("Content-Type", "Date"):
            handler.clear_header(name)
        for name, value in response_headers(headers):
            handler.add_header(name, value)
        self.started = True
        self.start_line, self.headers = start_line, headers

    async def data_received(self, chunk: bytes) -> None:
        if self.refused:
            return
        handler = self.handler
        handler.watch.touch()
        handler.services.proxy.on_activity(handler.workspace_id)
        handler.write(chunk)
        try:
            await handler.flush()
        except StreamClosedError:  # the browser went away: stop reading the workspace
            handler.stream.close()


class IsUpgrade(routing.Matcher):
    """Matches a WebSocket handshake (any path)."""

    def match(self, request: httputil.HTTPServerRequest) -> dict | None:
        return {} if request.headers.get("Upgrade", "").lower() == "websocket" else None


def host_pattern(settings: Any) -> str:
    return workspace_host_regex(settings)


# Served on the workspace hosts only (handlers/__init__.py adds them for `host_pattern`).
host_routes = [
    (IsUpgrade(), WorkspaceProxySocket),
    (r".*", WorkspaceProxyHandler),
]
