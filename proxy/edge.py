"""What the workspace proxy's HTTP and WebSocket relays share: the
workspace a host names, the check of the caller's cookie, and the refusal
page (HTML for a browser, the JSON envelope otherwise)."""
from __future__ import annotations

import html
import json
from typing import Any

from tornado import httputil, web

from services.errors import ApiError
from proxy.access import Denied, cross_site
from proxy.headers import request_port, request_scheme
from services.workspace_hosts import owner_of_host, public_origin

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
    "framing": ("Request refused", "The request's body is framed in a way the server does not accept."),
    "no_body": ("Request refused", "This address takes no request body."),
    "method": ("Method Not Allowed", "This address does not take that method."),
    "too_many": ("Too many connections", "Close some of this workspace's tabs or terminals, then try again."),
}


def refuse(handler: web.RequestHandler, status: int, reason: str) -> None:
    """Finish with the page for `reason`: HTML for a browser, else the envelope."""
    config = handler.application.settings["services"].settings
    headers, body = refusal(config, status, reason, handler.request.headers.get("Accept", ""),
                            request_scheme(handler.request, config.trusted_proxies), request_port(handler.request))
    handler.clear()
    handler.clear_header("Server")
    handler.set_status(status)
    for name, value in headers:
        handler.set_header(name, value)
    handler.finish(body)


def refusal(config: Any, status: int, reason: str, accept: str, scheme: str, port: int | None) -> \
        tuple[list[tuple[str, str]], bytes]:
    """The headers and body of the page for `reason` (the fast lane writes
    them itself when a workspace never answered)."""
    title, advice = PAGES[reason]
    headers = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Cookie realm="workspace"'))
    if "text/html" in accept:
        dashboard = public_origin(config, scheme, port) + "/"
        headers += [("Content-Type", "text/html; charset=UTF-8"), ("Content-Security-Policy", PAGE_CSP)]
        body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
                f"<h1>{html.escape(title)}</h1><p>{html.escape(advice)}</p>"
                f'<p><a href="{html.escape(dashboard)}">Go to the dashboard</a></p></html>')
    else:
        headers.append(("Content-Type", "application/json; charset=UTF-8"))
        body = json.dumps(ApiError(status, title, advice, details={"reason": reason}).body(), separators=(",", ":"))
    return headers, body.encode()


class ProxyEdge:
    """What the HTTP and the WebSocket relay share: the workspace this host
    names and the check of the caller's cookie."""
    request: httputil.HTTPServerRequest

    def setup(self: Any) -> None:
        self.services = self.application.settings["services"]
        self.config = self.services.settings
        self.owner_id = owner_of_host(self.config, self.request.host_name)
        self.scheme = request_scheme(self.request, self.config.trusted_proxies)
        self.grant = self.services.proxy.grant_in("; ".join(self.request.headers.get_list("Cookie")),
                                                  self.owner_id)
        self.workspace_id = None  # known once admitted (for the activity hook)
        self.user_id = self.grant.viewer_id if self.grant else None  # for the access log

    def cross_site(self: Any) -> bool:
        """Another site's page asked, and not as a page load (proxy/access.py)."""
        return cross_site(self.request.method, self.request.headers.get, self.request.host)

    async def admitted(self: Any) -> tuple[str, int] | None:
        """The workspace's address, or None after refusing the request."""
        try:
            access = await self.services.proxy.check(self.grant)
        except Denied as denied:
            refuse(self, denied.status, denied.reason)
            return None
        self.workspace_id = access.doc["_id"]
        endpoint = self.services.workspaces.endpoint(access.doc)
        address = (endpoint.host, endpoint.port) if endpoint else None
        if address is None:
            refuse(self, 503, "busy")
        return address
