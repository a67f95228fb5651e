"""Which headers cross the proxy, either way (both lanes use these rules),
and what a request says of its scheme and port."""
from __future__ import annotations

from tornado import httputil

from services.netutil import _in

COOKIE_NAME = "apranova_ws"
OUR_COOKIE_PREFIX = "apranova"  # every cookie of ours starts so; none reaches a workspace
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy sets itself.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
              "proxy-authorization", "proxy-authenticate", "expect"}
NEVER_FORWARDED = HOP_BY_HOP | {"authorization", "cookie", "x-forwarded-for", "x-forwarded-proto",
                                "x-forwarded-host", "x-real-ip", "forwarded"}


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
