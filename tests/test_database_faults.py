"""The embedded database misbehaving under a running server: hung
(SIGSTOP) and dead (kill -9). Each test owns its database process."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx

from services.db import EmbeddedMongo
from tests.conftest import auth, register


async def wait_status(client: httpx.AsyncClient, path: str, status: int, timeout: float = 20, **kwargs) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(path, **kwargs)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_a_hung_database_answers_503_within_db_timeout(start_server, tmp_path):
    """SIGSTOP keeps the socket open and silent: only a client-side operation
    timeout (timeoutMS) bounds the wait. Every request answers within about
    DB_TIMEOUT_MS (it used to take over 10 s), and all is well after SIGCONT."""
    database = EmbeddedMongo(tmp_path / "own-db")
    database.start()
    try:
        server = await start_server(mongodb_uri=database.uri, db_timeout_ms=1000)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            user = await register(client)
            os.kill(database.process.pid, signal.SIGSTOP)
            try:
                for path in ("/api/users/profile/", "/api/users/profile/", "/ready"):
                    started = time.monotonic()
                    response = await client.get(path, headers=auth(user))
                    elapsed = time.monotonic() - started
                    assert response.status_code == 503, response.text
                    assert elapsed < 2.5, f"{path} took {elapsed:.1f}s with DB_TIMEOUT_MS=1000"
                started = time.monotonic()
                response = await client.post("/api/users/login/", json={
                    "email": user["user"]["email"], "password": user["password"], "role": "student"})
                assert response.status_code == 503 and time.monotonic() - started < 2.5
            finally:
                os.kill(database.process.pid, signal.SIGCONT)
            assert (await wait_status(client, "/api/users/profile/", 200, headers=auth(user))).status_code == 200
    finally:
        database.stop()
