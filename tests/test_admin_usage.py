"""CPU and memory now in the admin workspaces list (GET /api/admin/workspaces/),
over HTTP against the real app with the in-memory backend: running ones carry
the engine's figures, others null; the engine is asked for all at once, and a
slow or absent engine leaves the figures null without holding up the list.
Docker's own stats answer is read by docker.support.usage_of (tested here on
recorded answers) and on the real engine in test_admin_docker.py."""
from __future__ import annotations

import random
import time

import httpx
import pytest

from services.workspaces import usage as usage_module
from services.workspaces.backend import Usage
from services.workspaces.docker.support import usage_of
from tests.support.app import auth, make_admin, register

FAKE = "tests.support.fake_backend:FakeBackend"
WORKSPACES = "/api/admin/workspaces/"
MIB = 2**20


@pytest.fixture
async def site(start_server):
    return await start_server(workspace_backend=FAKE, instance_name=f"use{random.randrange(16**8):08x}")


async def running_students(client: httpx.AsyncClient, count: int) -> list[dict]:
    students = [await register(client, name=f"Busy {index}") for index in range(count)]
    for student in students:
        response = await client.post("/api/users/workspace/create/", json={"wait": True}, headers=auth(student))
        assert response.json()["state"] == "running", response.text
    return students


def by_owner(listed: dict) -> dict[int, dict]:
    return {item["owner"]["id"]: item for item in listed["results"]}


async def test_running_workspaces_carry_cpu_and_memory_others_null(site):
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        admin = await make_admin(site, client)
        busy, idle = await running_students(client, 2)
        await client.post("/api/users/workspace/stop/", headers=auth(idle))
        listed = by_owner((await client.get(WORKSPACES, headers=auth(admin))).json())
        assert {k: listed[busy["user"]["id"]][k] for k in ("state", "cpu_percent", "memory_bytes", "memory_limit")} \
            == {"state": "running", "cpu_percent": 12.5, "memory_bytes": 300 * MIB, "memory_limit": 2048 * MIB}
        stopped = listed[idle["user"]["id"]]
        assert (stopped["state"], stopped["cpu_percent"], stopped["memory_bytes"]) == ("stopped", None, None)
        # A student gets none of it.
        assert (await client.get(WORKSPACES, headers=auth(busy))).status_code == 403


async def test_the_engine_is_asked_concurrently_and_a_slow_one_never_holds_up_the_list(site, monkeypatch):
    backend = site.services.workspaces.backend
    inflight, most, calls = 0, 0, 0
    real_stats = backend.stats

    async def counting(ref: str):
        nonlocal inflight, most, calls
        inflight, calls = inflight + 1, calls + 1
        most = max(most, inflight)
        try:
            return await real_stats(ref)
        finally:
            inflight -= 1

    monkeypatch.setattr(backend, "stats", counting)
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        admin = await make_admin(site, client)
        await running_students(client, 3)
        backend.stats_delay = 0.2

        async def cpu_figures() -> list:
            response = await client.get(WORKSPACES, headers=auth(admin))
            assert response.status_code == 200 and all(i["state"] == "running" for i in response.json()["results"])
            return [item["cpu_percent"] for item in response.json()["results"]]
        assert await cpu_figures() == [12.5] * 3 and most == 3  # a first look: all asked at once
        assert await cpu_figures() == [12.5] * 3 and calls == 3  # kept: a refresh asks the engine nothing

        monkeypatch.setattr(usage_module, "FRESH_SECONDS", 0)  # every kept reading is old from here on
        backend.stats_delay, backend.unavailable = 0, True  # an engine that is gone
        assert await cpu_figures() == [12.5] * 3  # the kept readings at once, new ones asked behind them
        assert await cpu_figures() == [None] * 3  # those failed: unknown now

        backend.stats_delay, backend.unavailable = 30, False  # an engine that hangs
        site.services.workspaces.usage_sampler.timeout = 0.3
        started = time.monotonic()
        assert await cpu_figures() == [None] * 3
        assert time.monotonic() - started < 5


# Docker's answers, cut to what usage_of reads: cgroup v2 (inactive_file), v1 (total_inactive_file), stopped.
V2 = {"read": "2026-11-28T10:00:01Z",
      "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}, "system_cpu_usage": 20_000_000_000,
                    "online_cpus": 2},
      "precpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}, "system_cpu_usage": 18_000_000_000},
      "memory_stats": {"usage": 150 * MIB, "limit": 64 * MIB * 32, "stats": {"inactive_file": 50 * MIB}}}
V1 = {**V2, "cpu_stats": {"cpu_usage": {"total_usage": 100, "percpu_usage": [60, 40, 0, 0]},
                          "system_cpu_usage": 1000},
      "precpu_stats": {"cpu_usage": {"total_usage": 50}, "system_cpu_usage": 800},
      "memory_stats": {"usage": 90 * MIB, "limit": 128 * MIB, "stats": {"total_inactive_file": 10 * MIB,
                                                                         "cache": 30 * MIB}}}
STOPPED = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}, "precpu_stats": {},
           "memory_stats": {}}


def test_docker_stats_become_cpu_percent_and_memory_without_cache():
    assert usage_of(V2) == Usage(50.0, 100 * MIB, 2048 * MIB)  # 0.5 s of 2 s, two CPUs
    assert usage_of(V1) == Usage(100.0, 80 * MIB, 128 * MIB)  # 50 of 200 over four CPUs
    assert usage_of(STOPPED) is None
    first = {**V2, "precpu_stats": {}}  # no earlier sample: memory known, CPU not
    assert usage_of(first) == Usage(None, 100 * MIB, 2048 * MIB)
