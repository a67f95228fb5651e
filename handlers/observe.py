"""Request logging and metrics, in one place that the app's log function
calls: one access-log line and one metrics observation per request. Kept
apart from handlers/base.py and handlers/metrics.py so that neither imports
the other."""
from __future__ import annotations

import logging

from tornado import web

from handlers.docs import route_rules
from services.metrics import UNMATCHED
from services.openapi import openapi_path

access_log = logging.getLogger("apranova.access")


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


def log_request(handler: web.RequestHandler) -> None:
    """One line per request: method, path (never the query: it may carry
    secrets), status, milliseconds, user id, request id; then the metrics."""
    status = handler.get_status()
    ms = handler.request.request_time() * 1000
    user_id = getattr(handler, "user_id", None)
    request_id = getattr(handler, "request_id", "-")
    level = logging.INFO if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):  # else skip building the line and its fields
        access_log.log(level, "%s %s %d %.1fms user=%s ip=%s rid=%s", handler.request.method, handler.request.path,
                       status, ms, user_id if user_id is not None else "-", handler.request.remote_ip, request_id,
                       extra={"method": handler.request.method, "path": handler.request.path, "status": status,
                              "ms": round(ms, 1), "user_id": user_id, "request_id": request_id})
    record_request(handler)
