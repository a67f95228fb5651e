"""The manager's service, task and node calls (Engine API 1.41, Docker
20.10), on the Docker adapter's client: its error translation
(DockerUnavailable, DockerError) holds here too."""
from __future__ import annotations

import json

from services.docker import DockerEngine, label_filter


class SwarmEngine(DockerEngine):
    async def swarm_active(self) -> bool:
        """This engine is a manager of an active swarm."""
        info = await self._json("info")
        swarm = info.get("Swarm") or {}
        return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))

    async def create_service(self, body: dict) -> str:
        return (await self._json("services/create", "POST", body=body))["ID"]

    async def inspect_service(self, ref: str) -> dict | None:
        return await self._json_unless((404,), f"services/{ref}")

    async def update_service(self, service: dict, spec: dict) -> None:
        await self._json(f"services/{service['ID']}/update", "POST",
                         params={"version": str(service["Version"]["Index"])}, body=spec)

    async def remove_service(self, ref: str) -> None:
        await self._json_unless((404,), f"services/{ref}", "DELETE")

    async def list_services(self, labels: dict[str, str]) -> list[dict]:
        return await self._json("services", params={"filters": json.dumps({"label": label_filter(labels)})})

    async def tasks(self, service_ids: list[str] | None = None) -> list[dict]:
        """The tasks of these services (None: every task of the swarm). A
        service removed meanwhile makes the filter a 404: then every task."""
        if service_ids:
            found = await self._json_unless((404,), "tasks", params={"filters": json.dumps({"service": service_ids})})
            if found is not None:
                return found
        return await self._json("tasks")

    async def nodes(self) -> dict[str, dict]:
        """Every node by ID."""
        return {node["ID"]: node for node in await self._json("nodes")}
