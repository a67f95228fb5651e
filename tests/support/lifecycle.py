from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.app import RunningServer, port_range

FAKE = "tests.support.fake_backend:FakeBackend"

RANGE = port_range(28000)
LOW = int(RANGE.split("-")[0])


class Fake:
    """Servers on one database and one fake engine (one INSTANCE_NAME)."""

    def __init__(self, start_server: Any, mongo: Any):
        self.start_server, self.mongo = start_server, mongo
        self.instance = f"fake{uuid.uuid4().hex[:8]}"
        self.db_name = f"fk_{uuid.uuid4().hex[:10]}"

    async def start(self, **overrides: Any) -> RunningServer:
        # The direct exposure (host ports) unless a test says otherwise: most
        # of these tests are about the port book.
        values = {"workspace_backend": FAKE, "instance_name": self.instance, "mongodb_db": self.db_name,
                  "workspace_exposure": "direct", "workspace_port_range": RANGE,
                  "workspace_wait_timeout": "5", **overrides}
        return await self.start_server(**values)


@pytest.fixture
def fake(start_server, mongo) -> Fake:
    return Fake(start_server, mongo)
