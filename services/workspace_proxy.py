"""The workspace proxy's plumbing, without the HTTP edge: which address a
workspace is reached at, the host names and URLs of workspace origins, the
headers that may cross the proxy, and one HTTP/1.1 connection to a workspace.

Every workspace is its own origin (``ws-<user id>.localhost:<port>`` by
default), so one workspace's pages can never read another's, or the API's,
cookies and storage.
"""
from __future__ import annotations

import asyncio
import re
import urllib.parse
from http.cookies import CookieError, SimpleCookie
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

from services.netutil import _in
from services.settings import Settings, workspace_host_regex

COOKIE_NAME = "apranova_ws"
OUR_COOKIE_PREFIX = "apranova"  # every cookie of ours starts so; none reaches a workspace
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy sets itself.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
              "proxy-authorization", "proxy-authenticate", "expect"}
NEVER_FORWARDED = HOP_BY_HOP | {"authorization", "cookie", "x-forwarded-for", "x-forwarded-proto",
                                "x-forwarded-host", "x-real-ip", "forwarded"}
WEBSOCKET_HANDSHAKE = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                       "sec-websocket-protocol", "sec-websocket-accept"}
_tcp = TCPClient()


def upstream_of(services: Any, doc: dict) -> tuple[str, int] | None:
    """Where the server connects for a workspace document. The one seam to
    swap for ``services.workspaces.endpoint(doc)`` once workspaces expose it;
    today the IDE is a published host port, reached like the readiness probe
    reaches it."""
    if doc.get("port") is None:
        return None
    settings = services.settings
    host_ip = settings.workspace_host_ip
    host = settings.workspace_ready_host or (host_ip if host_ip not in ("", "0.0.0.0", "::") else "127.0.0.1")
    return host, int(doc["port"])


# -- origins ------------------------------------------------------------------------------
def owner_of_host(settings: Settings, host_name: str) -> int | None:
    """The user id a workspace host name belongs to, or None."""
    match = re.fullmatch(workspace_host_regex(settings), host_name.lower())
    return int(match["user_id"]) if match else None


def public_origin(settings: Settings, scheme: str, port: int | None) -> str:
    """The API's own origin (the dashboard): PUBLIC_URL, else localhost on
    the port the request came in on (or PORT)."""
    if settings.public_url:
        return settings.public_url
    return _origin(scheme, "localhost", port or settings.port)


def workspace_origin(settings: Settings, user_id: int, scheme: str, port: int | None) -> str:
    """The workspace's own origin: its host name, with the scheme and port of
    PUBLIC_URL (or else of the request that asked)."""
    if settings.public_url:
        parts = urllib.parse.urlsplit(settings.public_url)
        scheme, port = parts.scheme, parts.port
    host = settings.workspace_host_template.strip().lower().format(user_id=user_id)
    return _origin(scheme, host, port)


def _origin(scheme: str, host: str, port: int | None) -> str:
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def request_scheme(request: httputil.HTTPServerRequest, trusted: list) -> str:
    """https when the connection is TLS, or a trusted proxy says so."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if forwarded in ("http", "https") and trusted and _in(request.remote_ip or "", trusted):
        return forwarded
    return request.protocol


def request_port(request: httputil.HTTPServerRequest) -> int | None:
    _, _, port = request.host.rpartition(":")
    return int(port) if port.isdigit() and "]" not in port else None


# -- headers ------------------------------------------------------------------------------
def foreign_cookies(header: str) -> str | None:
    """The Cookie header without any cookie of ours (None when nothing is left)."""
    kept = []
    for part in header.split(";"):
        name = part.split("=", 1)[0].strip()
        if name and not name.lower().startswith(OUR_COOKIE_PREFIX):
            kept.append(part.strip())
    return "; ".join(kept) or None


def cookie_value(header: str, name: str = COOKIE_NAME) -> str | None:
    try:
        jar = SimpleCookie(header)
    except CookieError:
        return None
    return jar[name].value if name in jar else None


def forwarded_headers(request: httputil.HTTPServerRequest, scheme: str, trusted: list,
                      skip: set[str] = frozenset()) -> httputil.HTTPHeaders:
    """The client's headers as the workspace may see them: no hop-by-hop
    headers, no Authorization, no cookie of ours, and X-Forwarded-* set by us
    (a client's own are believed only from a trusted proxy)."""
    out = httputil.HTTPHeaders()
    connection_tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    for name, value in request.headers.get_all():
        lowered = name.lower()
        if lowered in NEVER_FORWARDED or lowered in connection_tokens or lowered in skip:
            continue
        out.add(name, value)
    cookies = foreign_cookies("; ".join(request.headers.get_list("Cookie")))
    if cookies:
        out["Cookie"] = cookies
    remote = request.remote_ip or ""
    previous = request.headers.get("X-Forwarded-For") if trusted and _in(remote, trusted) else None
    out["X-Forwarded-For"] = f"{previous}, {remote}" if previous else remote
    out["X-Forwarded-Proto"] = scheme
    out["X-Forwarded-Host"] = request.host
    return out


def response_headers(headers: httputil.HTTPHeaders) -> list[tuple[str, str]]:
    """A workspace's response headers that go to the browser: no hop-by-hop
    ones, and no Set-Cookie that would overwrite a cookie of ours."""
    connection_tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    kept = []
    for name, value in headers.get_all():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in connection_tokens:
            continue
        if lowered == "set-cookie" and value.split("=", 1)[0].strip().lower().startswith(OUR_COOKIE_PREFIX):
            continue
        kept.append((name, value))
    return kept


# -- one connection to a workspace ---------------------------------------------------------
async def open_exchange(address: tuple[str, int], connect_timeout: float,
                        idle_timeout: float) -> tuple[IOStream, HTTP1Connection]:
    """A fresh TCP connection and a client-side HTTP/1.1 exchange on it.
    Raises OSError or asyncio.TimeoutError when the workspace does not answer."""
    host, port = address
    stream = await asyncio.wait_for(_tcp.connect(host, port), connect_timeout)
    stream.set_nodelay(True)
    # Responses are streamed, never held, so their size needs no bound here.
    params = HTTP1ConnectionParameters(no_keep_alive=True, decompress=False, header_timeout=idle_timeout,
                                       max_body_size=2**62, chunk_size=64 * 1024)
    return stream, HTTP1Connection(stream, True, params)


class IdleWatch:
    """Closes a stream that moves no byte for `seconds` (one timer, re-armed
    lazily: touching it costs one clock read)."""

    def __init__(self, stream: IOStream, seconds: float):
        self.stream, self.seconds = stream, seconds
        self.last = asyncio.get_running_loop().time()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._check)
        self.fired = False

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        due = self.last + self.seconds
        if loop.time() >= due:
            self.fired = True
            self.stream.close()
        else:
            self.timer = loop.call_later(due - loop.time(), self._check)

    def cancel(self) -> None:
        self.timer.cancel()
