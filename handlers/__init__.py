"""The route table: every URL the server answers, gathered from the handler
modules (each ends with its own `routes`). Read this to find any endpoint.

Every connection enters the workspace proxy's lane first (proxy/server.py,
the server's listener): plain reads of a workspace host are served there,
and every other request reaches this table, on the same connection. The
workspace hosts' own routes (proxy/handlers.py) come before these."""
from __future__ import annotations

from tornado import web

from handlers import (accounts, admin, docs, health, metrics, oauth, oauth_alias, payments, static, verification,
                      workspace_open, workspaces)
from handlers.base import NotFoundHandler
from handlers.observe import log_request
from proxy import handlers as proxy

routes: list[tuple] = [
    *health.routes,
    *accounts.routes,
    *verification.routes,
    *workspace_open.routes,
    *workspaces.routes,
    *payments.routes,
    *admin.routes,
    *oauth.routes,
    *oauth_alias.routes,  # django-allauth's /accounts/<provider>/login/ for the original frontend
    *docs.routes,
    *metrics.routes,
    *static.routes,  # the browser client: `/`, its page routes, /static/ (last: matches no /api path)
]


def make_app(services, extra_routes: list[tuple] | None = None) -> web.Application:
    app = web.Application(
        [*routes, *(extra_routes or [])],
        services=services,
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        compress_response=True,
        xsrf_cookies=False,
        websocket_ping_interval=20,
        websocket_ping_timeout=15,  # Tornado wants it no longer than the interval
    )
    # Each workspace's own host (ws-<id>.localhost by default) is the proxy, whatever the path;
    # add_handlers puts these rules before the API's.
    app.add_handlers(proxy.host_pattern(services.settings), proxy.host_routes)
    app.inflight = 0
    return app
