"""Retention: what the database forgets, so that weeks of a course leave it
the size of its live data (each rule is a setting; see the README's
"Retention").

* sessions: an expired one goes (the TTL index, and this sweep); a revoked
  one (logout, password change, a reused refresh token) once it has not
  been refreshed for SESSION_REVOKED_KEEP_HOURS (then it only answered
  "revoked" instead of "unknown", both a 401);
* the auth-state change feed is a fixed ring (services/authstate.py):
  nothing to trim;
* workspace events: those of the last WORKSPACE_EVENT_RUNS runs of each
  workspace are kept (a run: one start to its stop);
* workspace tickets and mail links: used ones are deleted when used, expired
  ones by their TTL index and this sweep (nx-27017 applies a TTL index only
  when the collection is next read; MongoDB's reaper runs once a minute);
* the admin audit log: kept AUDIT_LOG_DAYS, or forever (0, the default: an
  operator may need it).

One sweep every RETENTION_INTERVAL, by whichever process claims it first
(a compare-and-set on `counters`), so several processes do not repeat each
other's work. Every delete reads by an index (equality, or a range on an
indexed field other than `_id`, which nx-27017 scans): its cost is what it
deletes, not the history.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.settings import Settings

log = logging.getLogger("apranova.retention")
CLAIM = {"_id": "retention"}  # in `counters`: `due`, the epoch second the next sweep is due


class Retention:
    def __init__(self, db: AsyncDatabase, settings: Settings):
        self.db, self.settings = db, settings
        self.task: asyncio.Task | None = None
        self.closing = False

    def start(self) -> None:
        if self.settings.retention_interval > 0:
            self.task = asyncio.create_task(self._forever(), name="retention-sweep")

    async def close(self) -> None:
        self.closing = True  # a PyMongo call may absorb the cancellation: the loop checks this too
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task], timeout=5)

    async def _forever(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.settings.retention_interval)  # not at start: a restart loop sweeps no more
            try:
                if await self.claim():
                    log.info("retention sweep: %s", await self.sweep())
            except asyncio.CancelledError:
                raise
            except PyMongoError as exc:  # the database is away: the next round tries again
                if not self.closing:
                    log.warning("retention sweep: the database did not answer (%s)", type(exc).__name__)
            except Exception:  # noqa: BLE001 - the sweep must survive anything
                log.exception("retention sweep error")

    async def claim(self, now: float | None = None) -> bool:
        """True for exactly one of the processes asking while a sweep is due."""
        now = time.time() if now is None else now
        due = now + self.settings.retention_interval * 0.9  # a little early: the next claim is not a round late
        taken = await self.db.counters.update_one({**CLAIM, "due": {"$lte": now}}, {"$set": {"due": due}})
        if taken.modified_count:
            return True
        try:
            await self.db.counters.insert_one({**CLAIM, "due": due})  # the very first sweep
            return True
        except DuplicateKeyError:
            return False  # another process's claim holds

    async def sweep(self) -> dict[str, int]:
        """Delete what the rules say; returns the count per rule."""
        now = dt.datetime.now(dt.timezone.utc)
        settings, db = self.settings, self.db
        done: dict[str, int] = {}

        async def delete(name: str, collection: Any, query: dict) -> None:
            done[name] = done.get(name, 0) + (await collection.delete_many(query)).deleted_count

        await delete("sessions_expired", db.sessions, {"expires_at": {"$lt": now}})
        # expires_at is the last refresh plus the refresh lifetime (its index serves the range).
        unused_since = now - dt.timedelta(hours=settings.session_revoked_keep_hours)
        last = unused_since + dt.timedelta(days=settings.jwt_refresh_days)
        await delete("sessions_revoked", db.sessions, {"expires_at": {"$lt": last}, "revoked": True})
        for name in ("workspace_tickets", "email_tokens", "rate_limits"):
            await delete(name, db[name], {"expires_at": {"$lt": now}})
        if settings.audit_log_days > 0:
            await delete("audit_log", db.audit_log, {"at": {"$lt": now - dt.timedelta(days=settings.audit_log_days)}})
        if settings.workspace_event_runs > 0:
            await self._trim_events(done)
        return done

    async def _trim_events(self, done: dict[str, int]) -> None:
        """The events of runs older than the last WORKSPACE_EVENT_RUNS of
        each workspace (one read of the workspaces, one indexed delete per
        workspace that has more runs than that)."""
        keep = self.settings.workspace_event_runs
        done["workspace_events"] = 0
        async for doc in self.db.workspaces.find({"run": {"$gt": keep}}, {"run": 1}):
            query = {"workspace_id": doc["_id"], "run": {"$lte": int(doc["run"]) - keep}}
            done["workspace_events"] += (await self.db.workspace_events.delete_many(query)).deleted_count


async def start(services: Any) -> None:
    services.retention = Retention(services.db, services.settings)
    services.retention.start()
    services.on_close(services.retention.close)
