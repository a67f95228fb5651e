"""Liveness and readiness."""
from __future__ import annotations

from handlers.base import APIHandler, Operation
from models.common import ErrorOut, HealthOut


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
        if all(checks.values()):
            self.send({"status": "ready", "checks": checks})
        else:
            self.set_header("Retry-After", "5")
            self.send({"status": "unavailable", "error": "Service unavailable",
                       "message": "A dependency is not reachable.", "details": checks}, 503)


routes = [
    (r"/health/?", HealthHandler),
    (r"/ready/?", ReadyHandler),
]
