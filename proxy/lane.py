"""The proxy's fast lane: plain reads of workspace hosts (GET and HEAD
without a body, the static assets that make up most of an IDE's requests)
handled below Tornado's HTTP layer.

Tornado parses and re-serialises both HTTP/1.1 messages of a proxied request
in Python, which cost about three times the request itself (BENCHMARKS.md).
Here the request head is parsed by llhttp (`httptools`, C), checked exactly
as the Tornado path checks it (the cookie, then `ProxyAccess.check`: the
login session, the viewer's right, the workspace running), and forwarded
with our cookies and Authorization stripped and X-Forwarded-* set; the
answer is relayed by proxy/relay.py (its head parsed once for the
framing and to drop hop-by-hop headers, its body bytes unchanged, with
backpressure).

Anything else goes to Tornado with the bytes read so far put back, on the
same connection, for good: requests of other hosts (the API), WebSocket
handshakes, tickets, bodies, refusals (whose pages Tornado renders), and a
workspace that does not answer before its response began. So the lane only
ever serves requests that the Tornado path would have forwarded.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable

import httptools
from tornado import httputil

from services.netutil import _in
from proxy.access import Denied, cross_site
from proxy.conn import HEAD_END, MAX_HEAD_BYTES, Closed, Conn, Head
from proxy.headers import ticket_in, upstream_request_headers
from proxy.relay import Relay
from proxy.runtime import IdleWatch
from services.workspace_hosts import owner_of_host

log = logging.getLogger("apranova.proxy")
_LANE_METHODS = {b"GET", b"HEAD"}
_MAYBE_TICKET = re.compile(rb"\?.*(?:ticket|%)", re.IGNORECASE)  # a query that may name `ticket` (then parsed)


class Lane:
    """One browser connection to the server's port, served here until a
    request needs Tornado (`hand_off(conn, data)` gets the connection then,
    with the bytes still unserved)."""

    def __init__(self, services: Any, conn: Conn, address: Any, hand_off: Callable[[Conn, bytes], None],
                 observe: Callable[[str, str, int, float], None], idle_seconds: float,
                 refusal: Callable[[int, str, str, str, str], bytes]):
        self.services, self.conn, self.hand_off, self.observe = services, conn, hand_off, observe
        self.refusal = refusal  # (status, reason, accept, scheme, host) -> a whole response (proxy/edge.py)
        self.settings = services.settings
        self.proxy = services.proxy
        self.remote_ip = address[0] if isinstance(address, tuple) and address else "0.0.0.0"
        self.scheme = "http"  # TLS connections never take the lane (proxy/server.py)
        self.idle_seconds = idle_seconds

    async def run(self) -> None:
        conn = self.conn
        watch = IdleWatch(conn, self.idle_seconds)  # as Tornado's idle_connection_timeout: none between requests
        try:
            while True:
                match = HEAD_END.search(conn.buffer)
                while match is None:
                    if len(conn.buffer) > MAX_HEAD_BYTES:
                        return await self._give_up(watch)
                    await conn.more()
                    match = HEAD_END.search(conn.buffer)
                end = match.end()
                raw = bytes(conn.buffer[:end])
                if end > MAX_HEAD_BYTES or raw.count(b"\n") != raw.count(b"\r\n"):
                    return await self._give_up(watch)  # too long, or bare LFs: Tornado's parser answers
                # During the exchange only PROXY_IDLE_TIMEOUT applies (the workspace's
                # silence), as on Tornado's path: a long answer is never cut here.
                watch.pause()
                kept_alive = await self._serve(raw)
                if kept_alive is None:
                    return await self._give_up(watch)
                if not kept_alive:
                    await conn.flushed()
                    conn.transport.close()
                    return
                del conn.buffer[:end]
                watch.resume()
        except Closed:
            conn.close()
        except Exception:  # noqa: BLE001 - a bug here must cost one connection, never the server
            log.exception("workspace proxy fast lane failed; connection closed")
            conn.close()
        finally:
            watch.cancel()

    async def _give_up(self, watch: IdleWatch) -> None:
        """Tornado serves this connection from here on, starting with what is buffered."""
        watch.cancel()
        await self.conn.flushed()  # what the lane wrote goes out before Tornado writes
        if not self.conn.closed:
            self.hand_off(self.conn, self.conn.take())

    async def _serve(self, raw: bytes) -> bool | None:
        """Forward one request; whether the browser's connection stays open,
        or None when Tornado must serve it (nothing was sent yet)."""
        started = time.perf_counter()
        head = Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(raw)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError):
            return None
        method = parser.get_method()
        if not head.complete or method not in _LANE_METHODS or not head.url.startswith(b"/") \
                or parser.get_http_version() != "1.1":
            return None  # a body, another method, an odd target or HTTP/1.0: Tornado's full path
        try:
            plan = await self._admit(head, method.decode())
        except Exception:  # noqa: BLE001 - e.g. the database unreachable: Tornado's path answers as it does
            log.warning("workspace proxy fast lane: check failed; handing the request to Tornado", exc_info=True)
            return None
        if plan is None:
            return None
        workspace_id, address, upstream_head = plan
        relay = Relay(self.conn, self.proxy, self.settings, address, workspace_id, method == b"HEAD",
                      _asks_close(head), lambda status: self._refuse(status, head))
        status = await relay.run(method + b" " + head.url + b" HTTP/1.1\r\n" + upstream_head)
        if status is None:
            return None
        path = head.url.partition(b"?")[0].decode("latin-1")  # never the query: it may carry secrets
        self.observe(method.decode(), path, status, time.perf_counter() - started)
        return relay.client_open

    async def _refuse(self, status: int, head: Head) -> int:
        """The 502/504 page (or envelope) Tornado's path would give."""
        headers = dict(head.headers)
        accept = headers.get(b"accept", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        await self.conn.write(self.refusal(status, "unreachable", accept, self.scheme_of(head), host))
        return status

    async def _admit(self, head: Head, method: str) -> tuple[Any, tuple[str, int], bytes] | None:
        """The workspace and the head to send it, when the Tornado path would
        forward this request; else None."""
        hosts = [value for name, value in head.headers if name == b"host"]
        if len(hosts) != 1 or (_MAYBE_TICKET.search(head.url) and ticket_in(head.url.decode("latin-1"))):
            return None
        host = hosts[0].decode("latin-1")
        owner_id = owner_of_host(self.settings, httputil.split_host_and_port(host.lower())[0])
        if owner_id is None:
            return None
        pairs = head.text_pairs()
        values = dict(pairs)  # Sec-Fetch-*, Origin, Referer, Accept: one each from a browser
        if cross_site(method, lambda name: values.get(name.lower()), host):
            return None  # Tornado refuses it with the page
        cookies = "; ".join(value for name, value in pairs if name == "cookie")
        grant = self.proxy.grant_in(cookies, owner_id)
        try:
            access = await self.proxy.check(grant)
        except Denied:
            return None  # Tornado checks again and answers with the page
        endpoint = self.services.workspaces.endpoint(access.doc)
        if endpoint is None:
            return None
        headers = upstream_request_headers(pairs, self.remote_ip, host, self.scheme_of(head),
                                           self.settings.trusted_proxies)
        upstream_head = "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        return access.doc["_id"], (endpoint.host, endpoint.port), upstream_head.encode("latin-1")

    def scheme_of(self, head: Head) -> str:
        """As `request_scheme`: https when a trusted proxy in front says so."""
        trusted = self.settings.trusted_proxies
        if trusted and _in(self.remote_ip, trusted):
            for name, value in head.headers:
                if name == b"x-forwarded-proto":
                    forwarded = value.split(b",")[0].strip().lower().decode("latin-1")
                    if forwarded in ("http", "https"):
                        return forwarded
        return self.scheme


def _asks_close(head: Head) -> bool:
    """`Connection: close` from the browser (llhttp forgets it once the message is complete)."""
    return any(name == b"connection" and b"close" in value.lower() for name, value in head.headers)
