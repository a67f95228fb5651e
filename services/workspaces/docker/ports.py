"""Direct mode's host ports, the Docker backend's own affair: a port of
WORKSPACE_PORT_RANGE is recorded in the workspace's document through the
run (a unique index makes two workspaces with one port impossible), and a
port Docker could not bind is skipped for a while."""
from __future__ import annotations

import random
import time

from pymongo.errors import DuplicateKeyError

from services.workspaces.backend import BackendError, Run

BAD_PORT_SECONDS = 600  # a host port Docker could not bind is skipped this long


class HostPorts:
    def __init__(self, low: int, high: int):
        self.low, self.high = low, high
        self.bad: dict[int, float] = {}

    def refused(self, port: int) -> None:
        """Docker could not bind `port` (something outside holds it)."""
        self.bad[port] = time.monotonic()

    async def allocate(self, run: Run) -> int:
        """Claim a free port of the range for the run's workspace; when all
        are held, the port of the workspace stopped the longest."""
        now = time.monotonic()
        self.bad = {p: t for p, t in self.bad.items() if now - t < BAD_PORT_SECONDS}
        for _ in range(50):
            used = await run.held_ports(self.low, self.high)
            free = [p for p in range(self.low, self.high + 1) if p not in used and p not in self.bad]
            port = random.choice(free[:64]) if free else await run.reclaim_port(self.low, self.high)
            if port is None:
                raise BackendError("No free workspace port is left; ask an administrator to widen "
                                   "WORKSPACE_PORT_RANGE.")
            try:
                await run.record(port=port)
            except DuplicateKeyError:
                continue  # another workspace took it a moment ago
            return port
        raise BackendError("Could not reserve a workspace port; try again.")
