"""GET /metrics: Prometheus exposition, for the networks in
METRICS_ALLOWED_NETWORKS only (default loopback; empty: anyone). The client address honours
TRUSTED_PROXIES like everything else, so a proxy in front cannot be used to
read metrics from outside."""
from __future__ import annotations

from handlers.base import APIHandler, Operation
from models.common import ErrorOut
from services.errors import Forbidden
from services.netutil import allowed


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
