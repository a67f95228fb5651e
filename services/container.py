"""Builds every service from the settings, and closes them in order."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from typing import Any

from pymongo.errors import PyMongoError

from services import db as dbmod
from services.accounts import AccountService
from services.passwords import PasswordHasher
from services.ratelimit import MemoryBackend, MongoBackend, RateLimits
from services.settings import Settings, resolve_jwt_secret
from services.tokens import TokenService

log = logging.getLogger("apranova")


class Services:
    """Everything a handler may call, built once per process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.embedded: dbmod.EmbeddedMongo | None = None
        self.dependency_errors: Counter[str] = Counter()
        self._closers: list[Any] = []

    async def start(self) -> "Services":
        settings = self.settings
        uri = settings.mongodb_uri
        if not uri:
            self.embedded = dbmod.EmbeddedMongo(settings.data_dir)
            uri = await asyncio.get_running_loop().run_in_executor(None, self.embedded.start)
        self.client, self.db = dbmod.connect(uri, settings.mongodb_db, settings.db_timeout_ms)
        await self._wait_for_database()
        await dbmod.ensure_indexes(self.db)
        self.tokens = TokenService(self.db, resolve_jwt_secret(settings),
                                   dt.timedelta(minutes=settings.jwt_access_minutes),
                                   dt.timedelta(days=settings.jwt_refresh_days))
        self.hasher = PasswordHasher(settings.bcrypt_rounds)
        self.accounts = AccountService(self.db, self.tokens, self.hasher, settings.tracks)
        backend = MongoBackend(self.db) if settings.rate_limit_storage == "mongodb" else MemoryBackend()
        self.ratelimits = RateLimits({
            "anon": settings.rate_limit_anon, "user": settings.rate_limit_user,
            "workspace": settings.rate_limit_workspace, "login_failures": settings.rate_limit_login_failures,
        }, backend)
        for starter in STARTERS:
            await starter(self)
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
        return {"database": await dbmod.ping(self.db)}

    async def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:  # noqa: BLE001 - closing must go on
                log.exception("error while closing")
        try:
            await self.client.close()
        except PyMongoError:
            pass
        if self.embedded:
            await self.embedded.wait_stopped()


# Other features (workspaces, payments, OAuth) add an async `start(services)`
# here so that this file needs no edit per feature beyond one line.
STARTERS: list[Any] = []

from services import workspaces as _workspaces  # noqa: E402 - feature starters, one line each
STARTERS.append(_workspaces.start)
from services import metrics as _metrics  # noqa: E402
STARTERS.append(_metrics.start)
from services import payments as _payments  # noqa: E402
STARTERS.append(_payments.start)
from services import oauth as _oauth  # noqa: E402
STARTERS.append(_oauth.start)
from services import proxy_auth as _proxy_auth  # noqa: E402 - after workspaces: it reads services.workspaces
STARTERS.append(_proxy_auth.start)
