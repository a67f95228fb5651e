"""Builds every service from the settings, and closes them in order."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from typing import Any

from pymongo.errors import PyMongoError

from services import db as dbmod
from services.accounts import AccountService
from services.db_supervisor import Supervisor
from services.enrollment import migrate_enrollment
from services.authstate import AuthState
from services.passwords import PasswordHasher
from services.ratelimit import MemoryBackend, MongoBackend, RateLimits
from services.settings import Settings, resolve_jwt_secret
from services.tokens import TokenService

log = logging.getLogger("apranova")


class Services:
    """Everything a handler may call, built once per process."""

    def __init__(self, settings: Settings, share_embedded: bool = False, features: bool = True):
        self.settings = settings
        # False for command-line tasks (create-user): the database and the
        # account rules only; never the workspace engine, its reconciliation,
        # the culler or event watchers, which would act beside a running server.
        self.features = features
        # create-user: use the embedded database of a server running on this
        # DATA_DIR instead of refusing (a server refuses: DatabaseInUse).
        self.share_embedded = share_embedded
        self.embedded: dbmod.EmbeddedMongo | None = None
        self.supervisor: Supervisor | None = None
        self.dependency_errors: Counter[str] = Counter()
        self._closers: list[Any] = []
        # Set when close() begins: a request still running then may fail on a
        # closed service, and answers 503 "Shutting down" (handlers/base.py).
        self.closing = False

    async def start(self) -> "Services":
        settings = self.settings
        uri = settings.mongodb_uri
        if not uri:
            embedded = dbmod.EmbeddedMongo(settings.data_dir)
            running = embedded.running_elsewhere()
            if self.share_embedded and running and running[1]:
                uri = running[1]
                log.info("using the embedded database of the server running on this DATA_DIR (pid %d)", running[0])
            else:
                self.embedded = embedded
                uri = await asyncio.get_running_loop().run_in_executor(None, embedded.start)
                self.supervisor = Supervisor(embedded)
                self.supervisor.start()
        self.client, self.db = dbmod.connect(uri, settings.mongodb_db, settings.db_timeout_ms)
        await self._wait_for_database()
        await dbmod.ensure_indexes(self.db)
        await migrate_enrollment(self.db)
        self.authstate = AuthState(self.db, settings.auth_cache_size)
        await self.authstate.start()
        self.on_close(self.authstate.close)
        self.tokens = TokenService(self.db, resolve_jwt_secret(settings),
                                   dt.timedelta(minutes=settings.jwt_access_minutes),
                                   dt.timedelta(days=settings.jwt_refresh_days), self.authstate,
                                   reuse_seconds=settings.jwt_refresh_reuse_seconds,
                                   verified_tokens=settings.token_cache_size)
        self.hasher = PasswordHasher(settings.bcrypt_rounds)
        self.on_close(self.hasher.close)
        self.accounts = AccountService(self.db, self.tokens, self.hasher, settings.tracks, self.authstate)
        backend = MongoBackend(self.db) if settings.rate_limit_storage == "mongodb" else MemoryBackend()
        if isinstance(backend, MongoBackend):
            self.on_close(backend.close)  # sends the hits it counted locally
        self.ratelimits = RateLimits({
            "anon": settings.rate_limit_anon, "user": settings.rate_limit_user,
            "workspace": settings.rate_limit_workspace, "login_failures": settings.rate_limit_login_failures,
            "mail": settings.rate_limit_mail,
        }, backend)
        try:
            for starter in STARTERS if self.features else ():
                await starter(self)
        except BaseException:
            await self.close()  # what started so far, and the embedded database
            raise
        return self

    async def _wait_for_database(self, attempts: int = 15) -> None:
        for attempt in range(attempts):
            if await dbmod.ping(self.db):
                return
            log.warning("database not reachable yet (attempt %d/%d)", attempt + 1, attempts)
            await asyncio.sleep(1)
        raise RuntimeError("the database is not reachable; check MONGODB_URI")

    def on_close(self, closer: Any) -> None:
        """Register an async callable run (in reverse order) by close()."""
        self._closers.append(closer)

    def record_dependency_error(self, dependency: str) -> None:
        self.dependency_errors[dependency] += 1

    async def ready(self) -> dict[str, bool]:
        checks = {"database": await dbmod.ping(self.db)}
        if self.supervisor is not None:  # the embedded child: running, not stopped or being restarted
            checks["embedded_database"] = self.supervisor.state == "running"
        return checks

    async def close(self, deadline: float | None = None) -> None:
        """Close every service, then stop the embedded database. With a
        `deadline` (time.monotonic()), the services get what is left of it
        minus the database's own stop time, so the whole close fits."""
        self.closing = True
        if self.supervisor:  # first, or it would restart the child being stopped
            await self.supervisor.close()
        budget = None
        if deadline is not None:
            reserve = self.embedded.term_grace + 0.5 if self.embedded else 0.0
            budget = max(0.2, deadline - time.monotonic() - reserve)
        try:
            async with asyncio.timeout(budget):
                await self._close_services()
        except TimeoutError:
            log.warning("closing the services took longer than the shutdown allows; stopping anyway")
        if self.embedded:
            await self.embedded.wait_stopped()

    async def _close_services(self) -> None:
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:  # noqa: BLE001 - closing must go on
                log.exception("error while closing")
        try:
            await self.client.close()
        except PyMongoError:
            pass


# Other features (workspaces, payments, OAuth) add an async `start(services)`
# here so that this file needs no edit per feature beyond one line.
STARTERS: list[Any] = []

from services import workspaces as _workspaces  # noqa: E402 - feature starters, one line each
STARTERS.append(_workspaces.start)
from services import metrics as _metrics  # noqa: E402
STARTERS.append(_metrics.start)
from services import payments as _payments  # noqa: E402
STARTERS.append(_payments.start)
from services import checkout as _checkout  # noqa: E402 - after payments: it extends services.payments
STARTERS.append(_checkout.start)
from services import oauth as _oauth  # noqa: E402
STARTERS.append(_oauth.start)
from services import admin as _admin  # noqa: E402
STARTERS.append(_admin.start)
from services import students as _students  # noqa: E402
STARTERS.append(_students.start)
from services import mail as _mail  # noqa: E402
STARTERS.append(_mail.start)
from services import verification as _verification  # noqa: E402 - after mail: it uses services.mailer
STARTERS.append(_verification.start)
from services import retention as _retention  # noqa: E402
STARTERS.append(_retention.start)
# The workspace proxy (proxy/) is above the services: server.py starts it (`proxy.start`).
