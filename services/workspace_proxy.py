"""The workspace proxy's plumbing, without the HTTP edge: which address a
workspace is reached at, the host names and URLs of workspace origins, the
headers that may cross the proxy, and one HTTP/1.1 connection to a workspace.

Every workspace is its own origin (``ws-<user id>.localhost:<port>`` by
default), so one workspace's pages can never read another's, or the API's,
cookies and storage.
"""
from __future__ import annotations

import asyncio
import functools
import re
import time
import types
import urllib.parse
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
_tcp = TCPClient()


# -- origins ------------------------------------------------------------------------------
def owner_of_host(settings: Settings, host_name: str) -> int | None:
    """The user id a workspace host name belongs to, or None."""
    match = _host_pattern(settings.workspace_host_template).fullmatch(host_name.lower())
    return int(match["user_id"]) if match else None


@functools.lru_cache(maxsize=8)
def _host_pattern(template: str) -> re.Pattern:
    """Compiled once per template (asked on every proxied request)."""
    return re.compile(workspace_host_regex(types.SimpleNamespace(workspace_host_template=template)))


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
    return host_port(request.host)


def host_port(host: str) -> int | None:
    """The port a Host header names, None when it names none."""
    _, _, port = host.rpartition(":")
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
    """One cookie's value from a Cookie header (a plain split: SimpleCookie
    costs more than the rest of the check on every proxied request)."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None


def forwarded_headers(request: httputil.HTTPServerRequest, scheme: str, trusted: list) -> httputil.HTTPHeaders:
    """The client's headers as the workspace may see them: no hop-by-hop
    headers, no Authorization, no cookie of ours, and X-Forwarded-* set by us
    (a client's own are believed only from a trusted proxy)."""
    out = httputil.HTTPHeaders()
    connection_tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    for name, value in request.headers.get_all():
        lowered = name.lower()
        if lowered in NEVER_FORWARDED or lowered in connection_tokens:
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


# -- connections to workspaces -------------------------------------------------------------
class KeepAlivePool:
    """Idle keep-alive connections to workspaces, per address, so that a
    page's many asset requests do not each open a TCP connection. Kept
    shorter than Node's 5 s keep-alive (code-server closes idle ones then);
    a connection that went stale anyway is noticed by its first request,
    which is retried once on a fresh one (only requests without a body).
    A subclass says how a connection is opened and whether it may be reused;
    each connection has `close()`."""

    def __init__(self, per_address: int = 32, idle_seconds: float = 4.0):
        self.per_address, self.idle_seconds = per_address, idle_seconds
        self.idle: dict[tuple[str, int], list[tuple[Any, float]]] = {}

    async def _open(self, address: tuple[str, int]) -> Any:
        raise NotImplementedError

    def _usable(self, conn: Any) -> bool:
        """Still open, with nothing unread on it."""
        raise NotImplementedError

    async def connect(self, address: tuple[str, int], timeout: float, reuse: bool) -> tuple[Any, bool]:
        """A connection to `address` and whether it was reused. Raises OSError
        or asyncio.TimeoutError when the workspace does not answer."""
        now = time.monotonic()
        parked = self.idle.get(address)
        while reuse and parked:
            conn, since = parked.pop()
            if self._usable(conn) and now - since < self.idle_seconds:
                return conn, True
            conn.close()
        return await asyncio.wait_for(self._open(address), timeout), False

    def park(self, address: tuple[str, int], conn: Any) -> None:
        parked = self.idle.setdefault(address, [])
        if not self._usable(conn) or len(parked) >= self.per_address:
            conn.close()
        else:
            parked.append((conn, time.monotonic()))

    def prune(self) -> None:
        """Close connections idle too long (run every second)."""
        limit = time.monotonic() - self.idle_seconds
        for address, parked in list(self.idle.items()):
            kept = []
            for conn, since in parked:
                if since < limit or not self._usable(conn):
                    conn.close()
                else:
                    kept.append((conn, since))
            parked[:] = kept
            if not parked:
                del self.idle[address]

    def close(self) -> None:
        for parked in self.idle.values():
            for conn, _ in parked:
                conn.close()
        self.idle.clear()


class UpstreamPool(KeepAlivePool):
    """The Tornado path's pool: IOStreams."""

    async def _open(self, address: tuple[str, int]) -> IOStream:
        stream = await _tcp.connect(*address)
        stream.set_nodelay(True)
        return stream

    def _usable(self, stream: IOStream) -> bool:
        return not stream.closed()


def exchange_on(stream: IOStream) -> HTTP1Connection:
    """A client-side HTTP/1.1 exchange on a connection to a workspace."""
    # Responses are streamed, never held, so their size needs no bound here.
    # No header_timeout: the caller's IdleWatch already cuts a silent workspace (one timer, not two).
    params = HTTP1ConnectionParameters(decompress=False, max_body_size=2**62, chunk_size=64 * 1024)
    return HTTP1Connection(stream, True, params)


def reusable(method: str, start_line: Any, headers: httputil.HTTPHeaders) -> bool:
    """Whether the connection may carry another request after this answer:
    HTTP/1.1 without `Connection: close`, its body delimited (not by close)."""
    if start_line is None or start_line.version != "HTTP/1.1" or \
            headers.get("Connection", "").lower() == "close":
        return False
    return (method == "HEAD" or start_line.code in (204, 304) or "Content-Length" in headers
            or headers.get("Transfer-Encoding", "").lower() == "chunked")


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
