"""Prometheus metrics of one server process (prometheus-client).

Each Services gets its own registry (tests run several servers in one
process). Requests are counted by route *pattern* (the OpenAPI path, e.g.
``/api/users/profile/``), never the raw path, so label values stay few.

Workspace figures are read from ``services.workspaces`` when that service
exists: ``count_by_state()`` (async, refreshed at scrape time),
``backend.errors``, and the ``provision_seconds`` / ``provisioned_total`` pair
of finished provisioning runs. Dependency errors come from
``services.dependency_errors`` (database) and the workspace backend's
``errors`` count. Open WebSockets are a gauge their handler moves.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.platform_collector import PlatformCollector

log = logging.getLogger("apranova.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the classic text format every Prometheus reads
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROVISION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600)
STATE_QUERY_TIMEOUT = 2.0
UNMATCHED = "(unmatched)"  # the route label of requests that no route matched


class _LiveCollector:
    """Figures read from the services at scrape time."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        services = self.metrics.services
        workspaces = getattr(services, "workspaces", None)
        errors = CounterMetricFamily("apranova_dependency_errors", "Failures talking to a dependency",
                                     labels=["dependency"])
        counts = dict(services.dependency_errors)
        counts["docker"] = counts.get("docker", 0) + (workspaces.backend.errors if workspaces is not None else 0)
        counts.setdefault("database", 0)
        for dependency, value in sorted(counts.items()):
            errors.add_metric([dependency], value)
        yield errors

        supervisor = getattr(services, "supervisor", None)
        if supervisor is not None:  # only with the embedded database
            up = GaugeMetricFamily("apranova_embedded_database_up",
                                   "1 when the embedded database child is running (not stopped or restarting)")
            up.add_metric([], 1 if supervisor.state == "running" else 0)
            yield up
            restarts = CounterMetricFamily("apranova_embedded_database_restarts",
                                           "Restarts of the embedded database child by its supervisor")
            restarts.add_metric([], supervisor.embedded.restarts)
            yield restarts

        authstate = getattr(services, "authstate", None)
        if authstate is not None:
            lookups = CounterMetricFamily("apranova_auth_cache_lookups", "Auth-state cache lookups (sessions and "
                                          "users) in this process, by result", labels=["result"])
            lookups.add_metric(["hit"], authstate.hits)
            lookups.add_metric(["miss"], authstate.misses)
            yield lookups

        inflight = GaugeMetricFamily("apranova_http_requests_in_flight", "HTTP requests being served")
        inflight.add_metric([], self.metrics.inflight())
        yield inflight


class Metrics:
    """The process's metrics; ``render()`` gives the exposition text."""

    content_type = CONTENT_TYPE

    def __init__(self, services: Any):
        self.services = services
        self.registry = CollectorRegistry(auto_describe=True)
        self.inflight = lambda: 0  # set by the HTTP edge to the app's in-flight count
        self.requests = Counter("apranova_http_requests", "HTTP requests by route pattern, method and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("apranova_http_request_duration_seconds", "HTTP request latency by route pattern",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.workspaces = Gauge("apranova_workspaces", "Workspaces by state (all processes: read from the database)",
                                ["state"], registry=self.registry)
        self.provisioning = Histogram("apranova_workspace_provisioning_seconds",
                                      "Time from a create to a running workspace, in this process",
                                      buckets=PROVISION_BUCKETS, registry=self.registry)
        self.websockets_open = Gauge("apranova_websockets_open", "Open WebSocket connections (the status socket "
                                     "counts itself: open() and on_close())", registry=self.registry)
        # Disk quotas (services/workspaces/quota.py): each quota'd home's latest reading, and the host's free space.
        self.disk_used = Gauge("apranova_workspace_disk_used_bytes", "A workspace home's use at its latest reading "
                               "(homes on a quota)", ["user_id"], registry=self.registry)
        self.disk_size = Gauge("apranova_workspace_disk_size_bytes", "A workspace home's size at its latest reading",
                               ["user_id"], registry=self.registry)
        self.host_free = Gauge("apranova_workspace_disk_host_free_bytes", "Free space of the file system holding the "
                               "workspace homes (this process's latest reading; NaN: unknown)", registry=self.registry)
        self._provisioned_seen = 0
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry.register(_LiveCollector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled children are kept: prometheus-client's labels() lookup
        # (validation, a lock) cost more than the increment itself.
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(method, route, str(status)),
                                              self.latency.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)

    def _drain_provisioning(self, workspaces: Any) -> None:
        """Move durations finished since the last scrape into the histogram.
        The workspace service keeps the last 1000; more between two scrapes
        are counted by what is still there."""
        total = workspaces.provisioned_total
        new = total - self._provisioned_seen
        if new > 0:
            for seconds in list(workspaces.provision_seconds)[-new:]:
                self.provisioning.observe(seconds)
        self._provisioned_seen = max(total, self._provisioned_seen)

    async def refresh(self) -> None:
        """Read the figures that need I/O (workspaces by state) before a scrape."""
        workspaces = getattr(self.services, "workspaces", None)
        if workspaces is None:
            return
        self._drain_provisioning(workspaces)
        try:
            counts = await asyncio.wait_for(workspaces.count_by_state(), STATE_QUERY_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
            log.warning("metrics: cannot count workspaces by state: %s", type(exc).__name__)
            self.services.record_dependency_error("database")
            return
        for state, count in counts.items():
            self.workspaces.labels(state).set(count)
        await self._refresh_disk(workspaces)

    async def _refresh_disk(self, workspaces: Any) -> None:
        free = workspaces.disk.host_free
        self.host_free.set(float("nan") if free is None else free)
        try:
            readings = await asyncio.wait_for(workspaces.store.disk_readings(), STATE_QUERY_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
            log.warning("metrics: cannot read the workspaces' disk use: %s", type(exc).__name__)
            return
        self.disk_used.clear()
        self.disk_size.clear()
        for owner_id, used, size in readings:
            self.disk_used.labels(str(owner_id)).set(used)
            self.disk_size.labels(str(owner_id)).set(size)

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)


async def start(services: Any) -> None:
    """Container starter: ``services.metrics``."""
    services.metrics = Metrics(services)
