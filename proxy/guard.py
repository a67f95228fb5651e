"""Every request Tornado serves on the server's port passes here on its head,
before any handler runs and before a byte of its body is read
(proxy/server.py wraps each request's delegate in a `BodyGuard`):

* a body whose framing cannot be trusted (Content-Length with
  Transfer-Encoding, a coding other than `chunked`, several or odd lengths)
  is refused with 400, so that nothing of it, not even its head, reaches a
  workspace;
* a body sent to a handler that takes none (one that does not stream its
  body: the pages, the static files, every WebSocket handshake) is refused
  with 400 too (405 when the handler has no such method at all), instead
  of being read into memory first, without a login.

The refusal is the proxy's page (HTML for a browser, else the contract's
error envelope), and the connection is closed after it (its body unread)."""
from __future__ import annotations

from typing import Any

from tornado import httputil, web
from tornado.web import _HandlerDelegate

from proxy.headers import FramingError, body_framing, request_port, request_scheme


class BodyGuard(httputil.HTTPMessageDelegate):
    def __init__(self, delegate: httputil.HTTPMessageDelegate, request_conn: Any, services: Any):
        self.delegate, self.request_conn, self.services = delegate, request_conn, services
        self.refused = False

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        try:
            framing = body_framing(list(headers.get_all()))
        except FramingError:
            return self._refuse(start_line, headers, "framing")
        answer = self.delegate.headers_received(start_line, headers)
        handler = _handler_of(self.delegate)
        # A handler that does not stream has only been found, not run, yet (Tornado runs it once the body is in).
        if framing != 0 and handler is not None and not handler.stream_request_body:
            if not _implements(handler.handler_class, start_line.method):
                return self._refuse(start_line, headers, "method", 405)
            return self._refuse(start_line, headers, "no_body")
        return answer

    def data_received(self, chunk: bytes) -> Any:
        if not self.refused:
            return self.delegate.data_received(chunk)
        return None

    def finish(self) -> None:
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.delegate.on_connection_close()

    def _refuse(self, start_line: Any, headers: httputil.HTTPHeaders, reason: str, status: int = 400) -> None:
        """Answer 400 on the raw connection and close it: Tornado's own
        connection is detached, so it neither reads the body nor answers."""
        from proxy.edge import refusal  # the page's text lives with the other refusals

        self.refused = True
        config = self.services.settings
        request = httputil.HTTPServerRequest(connection=self.request_conn, start_line=start_line, headers=headers)
        extra, body = refusal(config, status, reason, headers.get("Accept", ""),
                              request_scheme(request, config.trusted_proxies), request_port(request))
        lines = [f"HTTP/1.1 {status} {httputil.responses[status]}", *(f"{name}: {value}" for name, value in extra),
                 f"Content-Length: {len(body)}", "Connection: close"]
        stream = self.request_conn.detach()
        written = stream.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        written.add_done_callback(lambda done: _close(stream, done))


def _close(stream: Any, written: Any) -> None:
    if not written.cancelled():
        written.exception()  # a browser that left before reading it: nothing to do
    stream.close()


def _implements(handler_class: Any, method: str) -> bool:
    """The handler answers `method` itself (else Tornado's 405 would)."""
    name = method.lower()
    return method in handler_class.SUPPORTED_METHODS and \
        getattr(handler_class, name, None) is not getattr(web.RequestHandler, name, None)


def _handler_of(delegate: Any) -> _HandlerDelegate | None:
    """The handler Tornado's router found for the request, if any (under
    the routing and proxy-header adapters)."""
    for _ in range(4):
        if isinstance(delegate, _HandlerDelegate):
            return delegate
        delegate = getattr(delegate, "delegate", None)
    return None
