"""GET /metrics: Prometheus exposition, for the networks in
METRICS_ALLOWED_NETWORKS only (default loopback; empty: anyone). The client address honours
TRUSTED_PROXIES like everything else, so a proxy in front cannot be used to
read metrics from outside."""
from __future__ import annotations

from tornado import web

from handlers.base import APIHandler, Operation
from handlers.docs import route_rules
from models.common import ErrorOut
from services.errors import Forbidden
from services.metrics import UNMATCHED
from services.netutil import allowed
from services.openapi import openapi_path


def route_label(handler: web.RequestHandler) -> str:
    """The route pattern that served this request, as the OpenAPI document
    writes it (``/api/users/profile/``); never the raw path, whose values are
    unbounded. Unknown paths share one label."""
    application = handler.application
    labels = application.settings.get("_route_labels")
    if labels is None:
        labels = {}
        for pattern, target in route_rules(application):
            if target in labels:
                continue
            try:
                labels[target] = openapi_path(pattern)[0]
            except ValueError:
                labels[target] = pattern.removesuffix("$")
        application.settings["_route_labels"] = labels
    return labels.get(type(handler), UNMATCHED)


def record_request(handler: web.RequestHandler) -> None:
    """Count a finished request (called from the app's log function)."""
    services = handler.application.settings.get("services")
    metrics = getattr(services, "metrics", None)
    if metrics is not None:
        metrics.observe_request(handler.request.method or "-", route_label(handler), handler.get_status(),
                                handler.request.request_time())


class MetricsHandler(APIHandler):
    rate_limited = False
    operations = {"get": Operation(
        "Prometheus metrics (text exposition format)", tags=("meta",),
        description="Restricted to METRICS_ALLOWED_NETWORKS (default: loopback; 403 otherwise).",
        responses={200: "Metrics in the Prometheus text format (text/plain; version=0.0.4)", 403: ErrorOut})}

    async def get(self) -> None:
        if not allowed(self.client_ip, self.config.metrics_allowed_networks):
            raise Forbidden("Metrics are not available from this address.")
        metrics = self.services.metrics
        metrics.inflight = lambda: self.application.inflight
        body = await metrics.render()
        self.set_header("Content-Type", metrics.content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


routes = [
    (r"/metrics", MetricsHandler),
]
