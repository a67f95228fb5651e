"""Supervision of the embedded database child (services/db.py EmbeddedMongo)."""
from __future__ import annotations

import asyncio
import logging
import time

from services.db import EmbeddedMongo, process_state

log = logging.getLogger("apranova.db")


class Supervisor:
    """Keeps the embedded database alive while the server runs: a dead child
    is reaped at once (no zombie), its pid file cleared, and it is started
    again on the same port and files, with backoff (0.5 s doubling to 30 s;
    back to 0.5 s after a minute up). Each restart is logged. A stopped
    (SIGSTOP) child is reported, not killed: requests answer 503 within
    DB_TIMEOUT_MS meanwhile, and SIGCONT brings it back."""

    MIN_BACKOFF, MAX_BACKOFF, STABLE_AFTER = 0.5, 30.0, 60.0

    def __init__(self, embedded: EmbeddedMongo, interval: float = 0.25):
        self.embedded = embedded
        self.interval = interval
        self.state = "running"  # running | stopped | restarting
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        backoff, up_since = self.MIN_BACKOFF, time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            process = self.embedded.process
            code = process.poll() if process is not None else None  # poll() reaps a dead child
            if process is not None and code is None:
                self.state = "stopped" if process_state(process.pid) == "T" else "running"
                if time.monotonic() - up_since > self.STABLE_AFTER:
                    backoff = self.MIN_BACKOFF
                continue
            self.state = "restarting"
            self.embedded.restarts += 1
            log.error("embedded database exited with code %s; restart #%d in %.1fs", code,
                      self.embedded.restarts, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.MAX_BACKOFF)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.embedded.start)
            except (RuntimeError, OSError) as exc:
                log.error("embedded database restart #%d failed: %s", self.embedded.restarts, exc)
                continue
            up_since = time.monotonic()
            self.state = "running"
            log.warning("embedded database restarted (restart #%d) on 127.0.0.1:%d", self.embedded.restarts,
                        self.embedded.port)
