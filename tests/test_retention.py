"""Retention (services/retention.py) on the real app and nx-27017: the
periodic sweep deletes what its settings say and nothing else, and of
several processes asking at once exactly one sweeps."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

import httpx

from services.retention import Retention
from tests.support.app import auth, register
from tests.support.app import NO_DOCKER

NOW = dt.datetime.now(dt.timezone.utc)
HOUR = dt.timedelta(hours=1)


async def refresh(client, token: str):
    return await client.post("/api/auth/token/refresh/", json={"refresh": token})


async def wait_for(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the sweep did not come"
        await asyncio.sleep(0.1)


async def seed(db) -> None:
    """What weeks leave behind, written directly: expired sessions, tickets,
    mail links and rate limits next to live ones, an old and a new audit
    entry, and a workspace in its 6th run with events of every run."""
    await db.sessions.insert_many([{"_id": "expired", "user_id": 99, "revoked": False, "expires_at": NOW - HOUR},
                                   {"_id": "live", "user_id": 99, "revoked": False, "expires_at": NOW + HOUR}])
    for name in ("workspace_tickets", "email_tokens", "rate_limits"):
        await db[name].insert_many([{"_id": "dead", "expires_at": NOW - HOUR},
                                    {"_id": "alive", "expires_at": NOW + HOUR}])
    await db.audit_log.insert_many([{"at": NOW - dt.timedelta(days=40), "action": "old"},
                                    {"at": NOW - dt.timedelta(days=1), "action": "new"}])
    await db.workspaces.insert_one({"_id": "ws1", "owner_id": 99, "state": "running", "run": 6, "seq": 12})
    await db.workspace_events.insert_many([{"workspace_id": "ws1", "seq": seq, "run": (seq + 1) // 2}
                                           for seq in range(1, 13)])  # two events a run


async def test_the_sweep_deletes_what_its_settings_say(start_server):
    server = await start_server(docker_host=NO_DOCKER, retention_interval=0.3, session_revoked_keep_hours=0,
                                audit_log_days=30, workspace_event_runs=2)
    db = server.db
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        gone = await register(client)  # logs out: a revoked session
        assert (await client.post("/api/users/logout/", headers=auth(gone), json={"refresh": gone["refresh"]})
                ).status_code == 200
        kept = await register(client)
        renewed = await refresh(client, kept["refresh"])  # its expires_at is now $set (text on nx-27017)
        assert renewed.status_code == 200
        await seed(db)

        async def swept() -> bool:
            return await db.sessions.count_documents({"_id": "expired"}) == 0 and \
                await db.audit_log.count_documents({"action": "old"}) == 0
        await wait_for(swept)
        await wait_for(lambda: _no_revoked(db))
        sessions = {doc["_id"] async for doc in db.sessions.find({})}
        assert "live" in sessions and len(sessions) == 2  # "live" and the renewed login
        for name in ("workspace_tickets", "email_tokens", "rate_limits"):
            assert [doc["_id"] async for doc in db[name].find({})] == ["alive"], name
        assert [doc["action"] async for doc in db.audit_log.find({})] == ["new"]
        runs = sorted({doc["run"] async for doc in db.workspace_events.find({"workspace_id": "ws1"})})
        assert runs == [5, 6]
        # The renewed login still works; the deleted one is a clean 401.
        fresh = renewed.json()
        assert (await client.get("/api/users/profile/", headers=auth(fresh))).status_code == 200
        refused = await refresh(client, gone["refresh"])
        assert refused.status_code == 401 and set(refused.json()) >= {"error", "message"}


async def _no_revoked(db) -> bool:
    return await db.sessions.count_documents({"revoked": True}) == 0


async def test_the_defaults_keep_the_audit_log_and_recent_revocations(start_server):
    server = await start_server(docker_host=NO_DOCKER)
    await seed(server.db)
    await server.db.sessions.insert_one({"_id": "revoked", "user_id": 99, "revoked": True,
                                         "expires_at": NOW + dt.timedelta(days=7) - HOUR})  # revoked an hour ago
    done = await server.services.retention.sweep()
    assert done["sessions_expired"] == 1 and done["sessions_revoked"] == 0 and "audit_log" not in done
    assert await server.db.audit_log.count_documents({}) == 2
    assert await server.db.sessions.count_documents({"_id": "revoked"}) == 1
    assert done["workspace_events"] == 0  # 6 runs: fewer than the default 10


async def test_of_several_processes_exactly_one_sweeps(start_server):
    server = await start_server(docker_host=NO_DOCKER)
    sweepers = [Retention(server.db, server.services.settings) for _ in range(12)]
    first = await asyncio.gather(*[sweeper.claim() for sweeper in sweepers])
    assert sum(first) == 1
    again = await asyncio.gather(*[sweeper.claim() for sweeper in sweepers])
    assert sum(again) == 0  # not due yet
    later = time.time() + server.services.settings.retention_interval
    assert sum(await asyncio.gather(*[sweeper.claim(later) for sweeper in sweepers])) == 1
