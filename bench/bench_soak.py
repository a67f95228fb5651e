"""Soak: a steady mixed load for many minutes; prints one line a minute (not a test).

    .venv/bin/python bench/bench_soak.py [--minutes 10] [--rate 8] [--env AUTH_CACHE_SIZE=200]

The issue's soak is 45 minutes: `--minutes 45` (on a quiet machine).

The server of bench/bench_longevity.py (its own nx-27017, in-memory
workspace engine, retention every 5 s). Every second --rate "visits"
start: log in, read the profile 5 times, refresh, read it again, log out
(9 requests, a new session and two auth changes each); and --users
students cycle their workspaces (start, stop) one after another. Each
minute: requests served, the database's and the server's CPU per request,
their RSS, DATA_DIR's size and the sessions stored. Flat CPU per request
and a flat RSS once the caches are full (AUTH_CACHE_SIZE) are the goal.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_longevity import PASSWORD, Server, cpu_seconds, dir_bytes, register, rss_kib  # noqa: E402
from services.db import connect  # noqa: E402


class Load:
    def __init__(self, client: httpx.AsyncClient, users: list[dict]):
        self.client, self.users = client, users
        self.requests = self.errors = self.late = 0
        self.stopping = False

    async def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = await self.client.request(method, path, **kwargs)
        self.requests += 1
        self.errors += response.status_code >= 500
        response.raise_for_status()
        return response

    async def visit(self, n: int) -> None:
        email = self.users[n % len(self.users)]["user"]["email"]
        pair = (await self.call("POST", "/api/auth/login/", json={"email": email, "password": PASSWORD})).json()
        for _ in range(5):
            await self.call("GET", "/api/users/profile/", headers={"Authorization": f"Bearer {pair['access']}"})
        pair = (await self.call("POST", "/api/auth/token/refresh/", json={"refresh": pair["refresh"]})).json()
        headers = {"Authorization": f"Bearer {pair['access']}"}
        await self.call("GET", "/api/users/profile/", headers=headers)
        await self.call("POST", "/api/users/logout/", json={"refresh": pair["refresh"]}, headers=headers)

    async def visits(self, rate: float, most: int) -> None:
        """`rate` visits a second, at most `most` at once: on a machine too
        busy for the rate the load waits instead of piling up open sessions."""
        started, n, running = time.monotonic(), 0, set()
        while not self.stopping:
            if len(running) >= most:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                self.late += 1
                continue
            n += 1
            task = asyncio.create_task(self.visit(n))
            running.add(task)
            task.add_done_callback(running.discard)
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        await asyncio.gather(*running, return_exceptions=True)

    async def cycles(self, user: dict) -> None:
        headers = {"Authorization": f"Bearer {user['access']}"}
        while not self.stopping:
            await self.call("POST", "/api/users/workspace/create/", headers=headers, json={"wait": True})
            await self.call("POST", "/api/users/workspace/stop/", headers=headers)
            await asyncio.sleep(1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=8.0, help="visits started a second (9 requests each)")
    parser.add_argument("--most", type=int, default=16, help="visits in flight at most")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--cyclers", type=int, default=4, help="students cycling their workspaces")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start (shared)")
    server = Server(**dict(item.split("=", 1) for item in args.env))
    try:
        await server.ready()
        mongo_client, db = connect(server.database_uri(), "apranova", 60000)
        async with httpx.AsyncClient(base_url=server.url, timeout=120,
                                     limits=httpx.Limits(max_connections=100)) as client:
            load = Load(client, [await register(client, f"s{n}") for n in range(args.users)])
            tasks = [asyncio.create_task(load.visits(args.rate, args.most))]
            tasks += [asyncio.create_task(load.cycles(user)) for user in load.users[:args.cyclers]]
            db_pid, server_pid = server.database_pid(), server.process.pid
            print("| minute | requests | 5xx | database CPU / request | server CPU / request | RSS server / database "
                  "| DATA_DIR | sessions | visits held back | load average |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for minute in range(1, args.minutes + 1):
                requests, db_cpu, server_cpu = load.requests, cpu_seconds(db_pid), cpu_seconds(server_pid)
                await asyncio.sleep(60)
                done = max(1, load.requests - requests)
                sessions = await db.sessions.estimated_document_count()
                print(f"| {minute} | {done:,} | {load.errors} | {(cpu_seconds(db_pid) - db_cpu) / done * 1000:.2f} ms "
                      f"| {(cpu_seconds(server_pid) - server_cpu) / done * 1000:.2f} ms "
                      f"| {rss_kib(server_pid) / 1024:.1f} / {rss_kib(db_pid) / 1024:.1f} MiB "
                      f"| {dir_bytes(server.path) / 1e6:.1f} MB | {sessions:,} | {load.late} | {os.getloadavg()[0]:.1f} |",
                      flush=True)
            load.stopping = True
            await asyncio.wait(tasks, timeout=60)
        await mongo_client.close()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
