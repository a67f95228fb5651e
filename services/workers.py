"""Worker mode: one command runs WORKERS server processes on one port.

The parent process:

* resolves the signing key once (a generated development key is written once,
  not raced by N children) and, without MONGODB_URI, starts the embedded
  nx-27017 once; the children connect to it by URI;
* checks the port can be bound, then forks the workers; each listens on the
  port with SO_REUSEPORT, so the kernel spreads connections over them;
* restarts a worker that dies (and the embedded database, if it dies);
* on SIGTERM or SIGINT, passes SIGTERM to every worker (each drains its
  requests as a single server does), waits, then stops the database.

Rate limits are counted in MongoDB (RATE_LIMIT_STORAGE=mongodb) so that they
hold across workers. Revocations and role changes reach the other workers
through the auth-state change log (services/authstate.py) within 1 s.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Any, Callable

from services import db as dbmod
from services.settings import Settings, resolve_jwt_secret

log = logging.getLogger("apranova.workers")

RESTART_WINDOW = 10.0  # a worker that dies sooner than this after its start counts as a crash loop
MAX_QUICK_DEATHS = 5


def _check_port(settings: Settings) -> None:
    """Fail in the parent, with one clear message, if the port is taken."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))


class Supervisor:
    def __init__(self, settings: Settings, run_worker: Callable[[Settings], Any]):
        self.settings = settings
        self.run_worker = run_worker
        self.embedded: dbmod.EmbeddedMongo | None = None
        self.children: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        self.quick_deaths = 0

    def worker_settings(self) -> Settings:
        uri = self.settings.mongodb_uri
        if not uri:
            self.embedded = dbmod.EmbeddedMongo(self.settings.data_dir)
            uri = self.embedded.start()
        if self.settings.rate_limit_storage != "mongodb":
            log.info("%d workers: rate limits are counted in MongoDB so that they hold across workers",
                     self.settings.workers)
        return self.settings.replace(mongodb_uri=uri, jwt_secret=resolve_jwt_secret(self.settings),
                                     rate_limit_storage="mongodb", workers=1)

    def spawn(self, settings: Settings) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                dbmod.die_with_parent()
                code = self.run_worker(settings) or 0
            except BaseException:  # noqa: BLE001 - a worker must exit, never return into the parent's loop
                log.exception("worker failed")
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = time.monotonic()
        log.info("worker %d started", pid)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _reap(self, settings: Settings) -> None:
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            started = self.children.pop(pid, None)
            if started is None or self.stopping:
                continue
            log.error("worker %d exited (status %d); starting another", pid, os.waitstatus_to_exitcode(status))
            self.quick_deaths = self.quick_deaths + 1 if time.monotonic() - started < RESTART_WINDOW else 0
            if self.quick_deaths >= MAX_QUICK_DEATHS:
                log.error("workers keep dying at start-up; stopping")
                self.stopping = True
                return
            self.spawn(settings)

    def _stop_children(self) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.settings.shutdown_timeout + 10
        while self.children and time.monotonic() < deadline:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in self.children:
            log.warning("worker %d did not stop in time; killing it", pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.children.clear()

    def run(self) -> int:
        try:
            _check_port(self.settings)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", self.settings.host, self.settings.port, exc)
            return 2
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        settings = self.worker_settings()
        try:
            for _ in range(self.settings.workers):
                self.spawn(settings)
            log.info("ApraNova: %d workers on http://%s:%s", self.settings.workers, self.settings.host,
                     self.settings.port)
            while not self.stopping:
                self._reap(settings)
                if self.embedded and self.embedded.process and self.embedded.process.poll() is not None:
                    log.error("the embedded database exited; starting it again")
                    self.embedded.start()
                time.sleep(0.2)
            log.info("shutting down %d worker(s)", len(self.children))
        finally:
            self._stop_children()
            if self.embedded:
                self.embedded.stop()
        log.info("stopped")
        return 1 if self.quick_deaths >= MAX_QUICK_DEATHS else 0


def serve_workers(settings: Settings, run_worker: Callable[[Settings], Any]) -> int:
    return Supervisor(settings, run_worker).run()
