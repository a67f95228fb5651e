"""CPU and memory of running workspaces, for the admin's lists.

Docker takes about a second for one stats reading (two samples a second
apart, so a CPU share can be computed), and a list of twenty running
workspaces must not wait for twenty of them on every refresh. So a reading
is kept for FRESH_SECONDS; a list shows the kept one and asks for a new one
in the background when it is older. Only a workspace never read before is
waited for, and never longer than the timeout (then its figures are
unknown, and the next look has them).
"""
from __future__ import annotations

import asyncio
import logging
import time
from services.workspaces.backend import Backend, BackendError, BackendUnavailable, Usage

log = logging.getLogger("apranova.workspaces")

FRESH_SECONDS = 10.0  # a console refreshed more often than this shows the same reading
FORGET_SECONDS = 300.0  # readings of workspaces nobody looked at for this long are dropped
READ_TIMEOUT = 30.0  # a background reading that takes longer is abandoned


class UsageSampler:
    def __init__(self, backend: Backend, timeout: float = 3.0):
        self.backend, self.timeout = backend, timeout
        self.kept: dict[str, tuple[float, Usage]] = {}  # workspace id -> (when read, reading)
        self.pending: dict[str, asyncio.Task] = {}  # readings under way (held here, so never collected)

    async def of(self, running: dict[str, str]) -> dict[str, Usage]:
        """Readings of the workspaces in `running` (workspace id -> engine
        ref): kept ones at once, new ones within the timeout."""
        now = time.monotonic()
        for gone in [key for key, (at, _) in self.kept.items() if now - at > FORGET_SECONDS]:
            del self.kept[gone]
        first_looks = []
        for workspace_id, ref in running.items():
            kept = self.kept.get(workspace_id)
            if kept is None or now - kept[0] > FRESH_SECONDS:
                task = self.pending.get(workspace_id) or self._start(workspace_id, ref)
                if kept is None:
                    first_looks.append(task)
        if first_looks:
            await asyncio.wait(first_looks, timeout=self.timeout)
        return {key: self.kept[key][1] for key in running if key in self.kept}

    def _start(self, workspace_id: str, ref: str) -> asyncio.Task:
        task = asyncio.ensure_future(self._read(workspace_id, ref))
        self.pending[workspace_id] = task
        return task

    async def _read(self, workspace_id: str, ref: str) -> None:
        try:
            usage = await asyncio.wait_for(self.backend.stats(ref), READ_TIMEOUT)
        except (asyncio.TimeoutError, BackendError, BackendUnavailable) as exc:
            log.debug("no stats for workspace %s: %s", workspace_id, type(exc).__name__)
            usage = None
        finally:
            self.pending.pop(workspace_id, None)
        if usage is None:
            self.kept.pop(workspace_id, None)
        else:
            self.kept[workspace_id] = (time.monotonic(), usage)

    def close(self) -> None:
        for task in list(self.pending.values()):
            task.cancel()
