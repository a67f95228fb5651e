"""Liveness and readiness."""
from __future__ import annotations

from handlers.base import APIHandler, Operation
from models.common import ErrorOut, HealthOut
from services.errors import ApiError


class HealthHandler(APIHandler):
    rate_limited = False
    operations = {"get": Operation("Liveness: the process answers", responses={200: HealthOut}, tags=("health",))}

    def get(self) -> None:
        self.send({"status": "healthy"})


class ReadyHandler(APIHandler):
    rate_limited = False
    operations = {"get": Operation("Readiness: the database answers", responses={200: HealthOut, 503: ErrorOut},
                                   tags=("health",))}

    async def get(self) -> None:
        checks = await self.services.ready()
        if not all(checks.values()):
            raise ApiError(503, "Service unavailable", "A dependency is not reachable.", details=checks,
                           headers={"Retry-After": "5"}, extra={"status": "unavailable"})
        self.send({"status": "ready", "checks": checks})


routes = [
    (r"/health/?", HealthHandler),
    (r"/ready/?", ReadyHandler),
]
