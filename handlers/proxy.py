"""The workspace proxy's HTTP edge: the ticket endpoint on the API's origin,
and, on each workspace's own host (``ws-<id>.localhost:<port>``), a streaming
HTTP relay and a WebSocket relay to the workspace.

Nothing reaches a workspace without a cookie that passes `ProxyAccess.check`;
refusals are a small HTML page for browsers and the JSON envelope otherwise.
"""
from __future__ import annotations

import asyncio
import html
import json
import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

from tornado import httputil, routing, web, websocket
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError

from handlers.workspaces import WorkspaceBase
from handlers.base import Operation
from models.common import ErrorOut
from services.errors import ApiError
from services.proxy_auth import Denied
from services.settings import workspace_host_regex
from services.workspace_proxy import (COOKIE_NAME, WEBSOCKET_HANDSHAKE, IdleWatch, cookie_value, exchange_on,
                                      forwarded_headers, owner_of_host, public_origin, request_port, request_scheme,
                                      response_headers, reusable, upstream_of, workspace_origin)

log = logging.getLogger("apranova.proxy")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PAGE_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
PAGES = {  # reason -> (title, what to do)
    "login": ("Sign in to open this workspace", "Open it from your dashboard: the link there signs you in."),
    "forbidden": ("Not your workspace", "Only its owner can open this workspace."),
    "origin": ("Request refused", "This request came from another site."),
    "none": ("No workspace here", "Create your workspace from the dashboard."),
    "stopped": ("This workspace is stopped", "Start it from the dashboard; your files are kept."),
    "provisioning": ("This workspace is starting", "Wait until the dashboard shows it running, then open it."),
    "failed": ("This workspace failed to start", "Start it again from the dashboard."),
    "busy": ("This workspace is changing state", "Check its state on the dashboard."),
    "unreachable": ("The workspace does not answer", "Try again in a moment, or restart it from the dashboard."),
    "too_large": ("Upload too large", "This upload is larger than the server accepts."),
}


class OpenWorkspaceHandler(WorkspaceBase):
    operations = {"post": Operation(
        "A one-time URL that opens the caller's workspace (admins: ?user_id=) through the proxy", auth=True,
        query={"user_id": "Admins only: open this user's workspace (logged)."}, tags=("workspaces",),
        description="Answers {\"url\": \"http://ws-<id>.localhost:<port>/?ticket=...\"}: the ticket works once, "
                    "within PROXY_TICKET_SECONDS, and becomes a cookie for that workspace's host only.",
        responses={200: "{\"url\": the workspace URL with its one-time ticket}", 404: ErrorOut, 401: ErrorOut,
                   403: ErrorOut})}

    async def post(self) -> None:
        target = await self.target_user()
        await self.services.workspaces.get(target)  # 404 when there is none
        ticket = await self.services.proxy.issue_ticket(self.user, target)
        scheme = request_scheme(self.request, self.config.trusted_proxies)
        origin = workspace_origin(self.config, target, scheme, request_port(self.request))
        self.send({"url": f"{origin}/?{urlencode({'ticket': ticket})}"})


def refuse(handler: web.RequestHandler, status: int, reason: str) -> None:
    """Finish with the page for `reason`: HTML for a browser, else the envelope."""
    config = handler.application.settings["services"].settings
    title, advice = PAGES[reason]
    handler.clear()
    handler.clear_header("Server")
    handler.set_status(status)
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("X-Content-Type-Options", "nosniff")
    if status == 401:
        handler.set_header("WWW-Authenticate", 'Cookie realm="workspace"')
    if "text/html" in handler.request.headers.get("Accept", ""):
        scheme = request_scheme(handler.request, config.trusted_proxies)
        dashboard = public_origin(config, scheme, request_port(handler.request)) + "/"
        handler.set_header("Content-Type", "text/html; charset=UTF-8")
        handler.set_header("Content-Security-Policy", PAGE_CSP)
        handler.finish(f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
                       f"<h1>{html.escape(title)}</h1><p>{html.escape(advice)}</p>"
                       f'<p><a href="{html.escape(dashboard)}">Go to the dashboard</a></p></html>')
    else:
        handler.set_header("Content-Type", "application/json; charset=UTF-8")
        body = ApiError(status, title, advice, details={"reason": reason}).body()
        handler.finish(json.dumps(body, separators=(",", ":")))


class ProxyEdge:
    """What the HTTP and the WebSocket relay share: the workspace this host
    names and the check of the caller's cookie."""
    request: httputil.HTTPServerRequest

    def setup(self: Any) -> None:
        self.services = self.application.settings["services"]
        self.config = self.services.settings
        self.owner_id = owner_of_host(self.config, self.request.host_name)
        self.scheme = request_scheme(self.request, self.config.trusted_proxies)
        self.grant = self.services.proxy.grant_of(cookie_value(self.request.headers.get("Cookie", "")),
                                                  self.owner_id)
        self.user_id = self.grant.viewer_id if self.grant else None  # for the access log

    def cross_origin(self: Any) -> bool:
        """A browser request made by another origin's page (under a wildcard
        domain every workspace is the same site, so SameSite does not stop it)."""
        origin = self.request.headers.get("Origin")
        return origin is not None and urlsplit(origin).netloc.lower() != self.request.host.lower()

    async def admitted(self: Any) -> tuple[str, int] | None:
        """The workspace's address, or None after refusing the request."""
        try:
            access = await self.services.proxy.check(self.grant)
        except Denied as denied:
            refuse(self, denied.status, denied.reason)
            return None
        address = upstream_of(self.services, access.doc)
        if address is None:
            refuse(self, 503, "busy")
        return address


@web.stream_request_body
class WorkspaceProxyHandler(ProxyEdge, web.RequestHandler):
    """Any method, bodies streamed both ways with backpressure."""
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(self) -> None:
        self.setup()
        self.pool = self.services.proxy.pool
        self.stream = self.exchange = self.watch = self.address = None
        self.reused = False

    async def prepare(self) -> None:
        self._transforms = []  # the workspace's bytes pass as they are (no second gzip)
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > self.config.proxy_max_body_bytes):
            return refuse(self, 413, "too_large")
        self.request.connection.set_max_body_size(self.config.proxy_max_body_bytes)
        ticket = self.get_query_argument("ticket", None)
        if ticket is not None and self.request.method == "GET":
            return await self.redeem(ticket)
        if self.request.method not in SAFE_METHODS and self.cross_origin():
            return refuse(self, 403, "origin")  # another workspace's page posting here with our cookie
        self.address = await self.admitted()
        if self.address is not None and self._has_body():
            # The body streams through as it arrives, on a fresh connection: a
            # parked one may have gone stale, and a streamed body cannot be sent twice.
            await self._start(reuse=False)

    def _has_body(self) -> bool:
        length = self.request.headers.get("Content-Length")
        return length not in (None, "0") or "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()

    async def _start(self, reuse: bool) -> bool:
        """Connect to the workspace and send the request head; False after
        refusing (502) when it does not answer."""
        config = self.config
        try:
            self.stream, self.reused = await self.pool.connect(self.address, config.proxy_connect_timeout, reuse)
        except (OSError, asyncio.TimeoutError, StreamClosedError):
            refuse(self, 502, "unreachable")
            return False
        self.exchange = exchange_on(self.stream, config.proxy_idle_timeout)
        self.watch = IdleWatch(self.stream, config.proxy_idle_timeout)
        headers = forwarded_headers(self.request, self.scheme, config.trusted_proxies)
        start = httputil.RequestStartLine(self.request.method, self.request.uri, "HTTP/1.1")
        await self._upstream(self.exchange.write_headers(start, headers))
        return True

    async def redeem(self, ticket: str) -> None:
        grant = await self.services.proxy.redeem(ticket, self.owner_id)
        if grant is None:
            return refuse(self, 401, "login")
        self.set_cookie(COOKIE_NAME, self.services.proxy.cookie_for(grant), httponly=True, samesite="Lax",
                        secure=self.scheme == "https", path="/")
        query = [(k, v) for k, vs in self.request.query_arguments.items() if k != "ticket"
                 for v in vs]
        self.set_header("Cache-Control", "no-store")
        self.redirect(self.request.path + (f"?{urlencode([(k, v.decode()) for k, v in query])}" if query else ""))

    async def data_received(self, chunk: bytes) -> None:
        if self.exchange is not None:
            self.watch.touch()
            await self._upstream(self.exchange.write(chunk))

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
        relay, complete = await self._relay()
        if not relay.started and self.reused:  # a parked connection had gone stale: once more, fresh
            self._release()
            if not await self._start(reuse=False):
                return
            relay, complete = await self._relay()
        if not relay.started:
            return refuse(self, 504 if self.watch.fired else 502, "unreachable")
        if not complete:  # cut short: the browser must see a broken transfer, not a short one
            self.request.connection.close()
            return
        if reusable(self.request.method, relay.start_line, relay.headers) and not self.stream.closed():
            self.watch.cancel()
            self.pool.park(self.address, self.exchange.detach())
            self.stream = None
        self.finish()

    async def _relay(self) -> tuple["ResponseRelay", bool]:
        relay = ResponseRelay(self)
        try:
            self.exchange.finish()
            return relay, await self.exchange.read_response(relay)
        except StreamClosedError:  # closed by the workspace before it answered
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
        self.start_line: Any = None
        self.headers = httputil.HTTPHeaders()

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> None:
        handler = self.handler
        handler.watch.touch()
        handler.set_status(start_line.code, start_line.reason or None)
        for name in ("Content-Type", "Date"):
            handler.clear_header(name)
        for name, value in response_headers(headers):
            handler.add_header(name, value)
        self.started = True
        self.start_line, self.headers = start_line, headers

    async def data_received(self, chunk: bytes) -> None:
        handler = self.handler
        handler.watch.touch()
        handler.write(chunk)
        try:
            await handler.flush()
        except StreamClosedError:  # the browser went away: stop reading the workspace
            handler.stream.close()


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

routes = [
    (r"/api/users/workspace/open/?", OpenWorkspaceHandler),
]
