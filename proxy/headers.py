"""Which headers cross the proxy, either way (both lanes use these rules),
and what a request says of its scheme and port."""
from __future__ import annotations

from urllib.parse import parse_qsl, unquote_plus

from tornado import httputil

from services.netutil import _in

COOKIE_NAME = "apranova_ws"
OUR_COOKIE_PREFIX = "apranova"  # every cookie of ours starts so; none reaches a workspace
# Hop-by-hop headers (RFC 9110 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
              "proxy-authorization", "proxy-authenticate", "expect"}


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


# -- the rule table ------------------------------------------------------------------------
# What happens to each header crossing the proxy, one table for both lanes
# (the fast lane's proxy/lane.py and relay.py, the Tornado path's
# handlers.py and websocket.py). A header not named passes unchanged.
DROP = "drop"
REQUEST_RULES: dict[str, str] = {
    **{name: DROP for name in HOP_BY_HOP},  # this hop's business (the body's framing is re-made)
    "authorization": DROP,  # the API's bearer token: never the workspace's
    "cookie": "ours removed",  # the workspace's own cookies pass; apranova* never (see foreign_cookies)
    **{name: "set by the proxy" for name in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")},
    "x-real-ip": DROP,
    "forwarded": DROP,
}
RESPONSE_RULES: dict[str, str] = {
    **{name: DROP for name in HOP_BY_HOP},  # "transfer-encoding" passes where the lane relays the body as is
    "set-cookie": "ours dropped, Domain= removed",  # no cookie of ours overwritten, none tossed to a sibling
    "x-sendfile": DROP,  # a lighttpd/Apache front would serve the file it names
    "x-lighttpd-send-file": DROP,
    "content-security-policy": "frame-ancestors 'self' added",  # (as a header of its own, see FRAME_POLICY)
}
RESPONSE_DROPPED_PREFIXES = ("x-accel-",)  # nginx in front acts on X-Accel-Redirect, -Buffering, -Limit-Rate...
# Added to every proxied answer: no other site (a sibling workspace, the
# API's pages) may frame a workspace. A second CSP header only narrows.
FRAME_POLICY = ("Content-Security-Policy", "frame-ancestors 'self'")
NEVER_FORWARDED = {name for name, rule in REQUEST_RULES.items() if rule != "ours removed"}


def foreign_cookies(header: str) -> str | None:
    """The Cookie header without any cookie of ours (None when nothing is left)."""
    kept = []
    for part in header.split(";"):
        name = part.split("=", 1)[0].strip()
        if name and not _ours(name):
            kept.append(part.strip())
    return "; ".join(kept) or None


def _ours(cookie_name: str) -> bool:
    lowered = cookie_name.lower()
    return lowered.startswith(OUR_COOKIE_PREFIX) or lowered.startswith("__host-" + OUR_COOKIE_PREFIX) \
        or lowered.startswith("__secure-" + OUR_COOKIE_PREFIX)


def cookie_values(header: str, names: tuple[str, ...] = (COOKIE_NAME, "__Host-" + COOKIE_NAME)) -> list[str]:
    """Every value of our workspace cookie in a Cookie header, in order (a
    sibling workspace's script can add its own for the parent domain: the
    check tries each). A plain split: SimpleCookie costs more than the rest
    of the check on every proxied request."""
    values = []
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key in names:
            value = value.strip().strip('"')
            if value:
                values.append(value)
    return values


def cookie_value(header: str, name: str = COOKIE_NAME) -> str | None:
    """The first value of one cookie."""
    values = cookie_values(header, (name,))
    return values[0] if values else None


def upstream_request_headers(pairs: list[tuple[str, str]], remote_ip: str, host: str, scheme: str,
                             trusted: list) -> list[tuple[str, str]]:
    """The browser's headers as the workspace may see them (REQUEST_RULES):
    X-Forwarded-* set by us, a client's own believed only from a trusted proxy."""
    connection_tokens = {t.strip().lower() for name, value in pairs if name.lower() == "connection"
                         for t in value.split(",")}
    out, cookies, previous = [], [], []
    for name, value in pairs:
        lowered = name.lower()
        if lowered == "cookie":
            cookies.append(value)
        elif lowered == "x-forwarded-for":
            previous.append(value)
        elif lowered not in REQUEST_RULES and lowered not in connection_tokens:
            out.append((name, value))
    kept = foreign_cookies("; ".join(cookies)) if cookies else None
    if kept:
        out.append(("Cookie", kept))
    forwarded = ", ".join(previous) if previous and trusted and _in(remote_ip, trusted) else ""
    out.append(("X-Forwarded-For", f"{forwarded}, {remote_ip}" if forwarded else remote_ip))
    out.append(("X-Forwarded-Proto", scheme))
    out.append(("X-Forwarded-Host", host))
    return out


def forwarded_headers(request: httputil.HTTPServerRequest, scheme: str, trusted: list) -> httputil.HTTPHeaders:
    """`upstream_request_headers` of a Tornado request."""
    out = httputil.HTTPHeaders()
    for name, value in upstream_request_headers(list(request.headers.get_all()), request.remote_ip or "",
                                                request.host, scheme, trusted):
        out.add(name, value)
    return out


def browser_response_headers(pairs: list[tuple[str, str]], keep_framing: bool = False) -> list[tuple[str, str]]:
    """A workspace's answer headers as the browser may see them
    (RESPONSE_RULES); `keep_framing`: Transfer-Encoding passes (the fast lane
    relays the chunked body as it is)."""
    connection_tokens = {t.strip().lower() for name, value in pairs if name.lower() == "connection"
                         for t in value.split(",")}
    kept = []
    for name, value in pairs:
        lowered = name.lower()
        if lowered == "set-cookie":
            value = _tossed_cookie_removed(value)
            if value is None:
                continue
        elif lowered == "transfer-encoding" and keep_framing:
            pass
        elif (RESPONSE_RULES.get(lowered) == DROP or lowered in connection_tokens
              or lowered.startswith(RESPONSE_DROPPED_PREFIXES)):
            continue
        kept.append((name, value))
    kept.append(FRAME_POLICY)
    return kept


def response_headers(headers: httputil.HTTPHeaders) -> list[tuple[str, str]]:
    """`browser_response_headers` of a Tornado answer."""
    return browser_response_headers(list(headers.get_all()))


def _tossed_cookie_removed(value: str) -> str | None:
    """A workspace's Set-Cookie without its Domain attribute (a host-only
    cookie: `Domain=example.edu` would reach every sibling workspace), or
    None for a cookie named like ours."""
    name = value.split("=", 1)[0].strip()
    if _ours(name):
        return None
    if "domain" not in value.lower():
        return value
    parts = value.split(";")
    return ";".join([parts[0]] + [p for p in parts[1:] if p.split("=", 1)[0].strip().lower() != "domain"])


# -- framing -------------------------------------------------------------------------------
class FramingError(ValueError):
    """A message whose body cannot be delimited without guessing."""


def body_framing(pairs: list[tuple[str, str]]) -> int | None:
    """How a message's body is delimited, by Tornado's own rules (both lanes
    follow them, so they agree on where every message ends): its length, or
    None for chunked; 0 when it has neither. FramingError for
    Content-Length with Transfer-Encoding, a transfer coding other than a
    single `chunked`, or lengths that are not one plain number."""
    codings = [value for name, value in pairs if name.lower() == "transfer-encoding"]
    lengths = [value for name, value in pairs if name.lower() == "content-length"]
    if codings:
        if lengths:
            raise FramingError("Content-Length and Transfer-Encoding")
        if ",".join(codings).strip().lower() != "chunked":
            raise FramingError("a transfer coding other than chunked")
        return None
    if not lengths:
        return 0
    pieces = {piece.strip() for value in lengths for piece in value.split(",")}
    if len(pieces) != 1:
        raise FramingError("several Content-Lengths")
    length = pieces.pop()
    if not length.isdigit() or not length.isascii() or len(length) > 18:
        raise FramingError("a Content-Length that is not a number")
    return int(length)


# -- the ticket in a URL -------------------------------------------------------------------------
def ticket_in(uri: str) -> bool:
    """Whether a request target's query names a `ticket`, in any encoding
    (`%74icket` is `ticket` to every server that decodes its query)."""
    _, _, query = uri.partition("?")
    return bool(query) and any(key == "ticket" for key, _ in parse_qsl(query, keep_blank_values=True))


def without_ticket(uri: str) -> str:
    """The request target with every `ticket` parameter removed (the rest
    of the query kept as it was written)."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    kept = [part for part in query.split("&") if unquote_plus(part.split("=", 1)[0]) != "ticket"]
    return path + ("?" + "&".join(kept) if kept else "")
