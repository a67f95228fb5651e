"""Idle culling, maximum lifetime and keep-running (services/workspaces/culler.py)
against the in-memory backend with short timeouts: the real app over HTTP and
WebSocket, the real database, the real proxy in front of a stand-in IDE."""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

import httpx
import pytest

from services import settings as settings_mod
from services.settings import SettingsError
from services.workspaces.culler import plan, span
from tests.support.app import auth, make_admin, register, RunningServer
from tests.support.proxy_upstream import start_upstream
from tests.support.proxy import host_of, open_url, proxy_socket, redeem, workspace_get
from tests.support.workspaces import CREATE, WORKSPACE
from tests.support.lifecycle import Fake
from tests.support.workspaces import Socket, WORKSPACE_KEYS

KEEP = "/api/users/workspace/keepalive/"
QUICK = {"workspace_idle_timeout": "3", "workspace_idle_warning": "2", "workspace_cull_interval": "0.2"}


async def running(http: httpx.AsyncClient, user: dict) -> dict:
    response = await http.post(CREATE, headers=auth(user), json={"wait": True})
    assert response.status_code in (200, 201) and response.json()["state"] == "running", response.text
    return response.json()


async def follow(server: RunningServer, user: dict) -> Socket:
    socket = await Socket.open(server, token=user["access"])
    assert (await socket.receive())["type"] == "snapshot"
    return socket


async def logged(server: RunningServer, user: dict) -> list[dict]:
    doc = await server.services.workspaces.find(user["user"]["id"])
    return await server.services.workspaces.store.events_after(doc["_id"], 0)


@pytest.fixture
async def quick(fake: Fake) -> tuple[RunningServer, httpx.AsyncClient]:
    server = await fake.start(**QUICK)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield server, http


@pytest.mark.parametrize("values, words", [
    ({"workspace_cull_interval": "0"}, "WORKSPACE_CULL_INTERVAL must be more than 0"),
    ({"workspace_idle_timeout": "-1"}, "WORKSPACE_IDLE_TIMEOUT: must not be negative"),
    ({"workspace_max_lifetime": "soon"}, "WORKSPACE_MAX_LIFETIME: must be a number"),
])
def test_unusable_culling_settings_are_refused(values, words):
    with pytest.raises(SettingsError) as raised:
        settings_mod.load(environ={}, **values)
    assert words in str(raised.value)


def test_culling_can_be_switched_off():
    settings = settings_mod.load(environ={}, workspace_idle_timeout="0", workspace_idle_warning="0")
    doc = {"state": "running", "last_activity": "2000-01-01T00:00:00.000Z", "updated_at": "2000-01-01T00:00:00.000Z"}
    assert plan(doc, settings, time.time()) is None
    assert plan(doc, settings_mod.load(environ={}), time.time()).action == "stop"  # the default: 30 minutes


def test_a_short_timeout_alone_warns_halfway_instead_of_refusing_to_start():
    settings = settings_mod.load(environ={}, workspace_idle_timeout="120")  # the warning stays at its 300 s default
    start = time.time() - 1000
    doc = {"state": "running", "last_activity": iso_at(start), "updated_at": iso_at(start)}
    assert plan(doc, settings, start + 59) is None
    assert plan(doc, settings, start + 61).action == "warn"
    assert plan(doc, settings, start + 121).action == "stop"


def iso_at(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch_seconds))


def test_durations_read_as_a_student_says_them():
    assert [span(s) for s in (1, 2, 59.6, 90, 300, 1500, 1800, 5400, 7200)] == [
        "1 second", "2 seconds", "60 seconds", "2 minutes", "5 minutes", "25 minutes", "30 minutes", "2 hours",
        "2 hours"]


async def test_an_idle_workspace_is_warned_once_then_stopped_with_its_reason(quick):
    server, http = quick
    user = await register(http)
    await running(http, user)
    socket = await follow(server, user)
    started = time.monotonic()
    warning = (await socket.until(lambda m: m.get("kind") == "warning"))[-1]
    assert 0.7 < time.monotonic() - started < 2.5
    assert warning["state"] == "running" and warning["reason"] == "idle" and warning["stop_at"].endswith("Z")
    assert warning["message"] in ("Stopping in 2 seconds: no activity for 1 second",
                                  "Stopping in 2 seconds: no activity for 2 seconds")
    seen = await socket.until(lambda m: m.get("state") == "stopped")
    assert [m["state"] for m in seen] == ["stopping", "stopped"]
    assert all(m["reason"] == "idle" for m in seen) and "kind" not in seen[-1]
    assert seen[-1]["message"] == "Stopped after 3 seconds without activity. Your files are kept."
    assert time.monotonic() - started > 2.5
    body = (await http.get(WORKSPACE, headers=auth(user))).json()
    assert body["state"] == "stopped" and body["message"] == seen[-1]["message"]
    doc, backend = await server.services.workspaces.find(user["user"]["id"]), server.services.workspaces.backend
    assert doc["stop_reason"] == "idle" and doc["stopped_at"] and not backend.of(doc["_id"]).running
    assert len(backend.engine.volumes) == 1, "the files stay"
    assert [e.get("kind") for e in await logged(server, user)].count("warning") == 1
    admin = await make_admin(server, http)
    listed = (await http.get("/api/admin/workspaces/", headers=auth(admin))).json()["results"]
    mine = next(item for item in listed if item["owner"]["id"] == user["user"]["id"])
    assert mine["stop_reason"] == "idle" and mine["stopped_at"] == doc["stopped_at"] and mine["last_activity"]
    # Starting again clears the reason, and the new run is watched afresh.
    await running(http, user)
    assert "stop_reason" not in await server.services.workspaces.find(user["user"]["id"])


async def test_keep_running_clears_the_warning_and_postpones_the_stop(quick):
    server, http = quick
    user = await register(http)
    await running(http, user)
    socket = await follow(server, user)
    await socket.until(lambda m: m.get("kind") == "warning")
    kept_at = time.monotonic()
    kept = await http.post(KEEP, headers=auth(user))
    assert kept.status_code == 200, kept.text
    assert set(kept.json()) == WORKSPACE_KEYS and kept.json()["state"] == "running"
    event = (await socket.until(lambda m: m.get("kind") != "warning"))[-1]
    assert event["message"] == "Kept running" and event["kind"] == "info" and event["state"] == "running"
    snapshot = await follow(server, user)  # a reload no longer shows the warning
    stopped = await socket.until(lambda m: m.get("state") == "stopped")
    assert time.monotonic() - kept_at > 2.5, "the idle time counts from the keep-running call"
    assert [m.get("kind") for m in stopped].count("warning") == 1  # a new warning for the new idle period
    snapshot.connection.close()
    assert (await http.post(KEEP, headers=auth(user))).status_code == 409


async def test_keep_running_answers_404_403_and_works_for_an_admin(quick):
    server, http = quick
    user, other = await register(http), await register(http)
    missing = await http.post(KEEP, headers=auth(user))
    assert missing.status_code == 404 and missing.json()["error"] == "Workspace not found"
    await running(http, user)
    forbidden = await http.post(f"{KEEP}?user_id={user['user']['id']}", headers=auth(other))
    assert forbidden.status_code == 403
    admin = await make_admin(server, http)
    assert (await http.post(f"{KEEP}?user_id={user['user']['id']}", headers=auth(admin))).status_code == 200
    assert (await http.post(f"{KEEP}?user_id=abc", headers=auth(admin))).status_code == 400
    assert (await http.post(KEEP)).status_code == 401


async def test_the_lifetime_stops_a_busy_workspace_and_keep_running_does_not_extend_it(fake: Fake):
    server = await fake.start(workspace_idle_timeout="0", workspace_max_lifetime="3", workspace_idle_warning="2",
                              workspace_cull_interval="0.2")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        user = await register(http)
        await running(http, user)
        started = time.monotonic()
        socket = await follow(server, user)
        warning = (await socket.until(lambda m: m.get("kind") == "warning"))[-1]
        assert warning["reason"] == "lifetime" and warning["message"].startswith("Stopping in ")
        assert warning["message"].endswith("a workspace may run for 3 seconds at a time")
        assert (await http.post(KEEP, headers=auth(user))).status_code == 200
        seen = await socket.until(lambda m: m.get("state") == "stopped")
        assert time.monotonic() - started < 3.5
        assert seen[-1]["reason"] == "lifetime" and seen[-1]["message"] == \
            "Stopped after running for 3 seconds, the longest a workspace may run. Your files are kept."
        assert [m.get("kind") for m in seen].count("warning") == 0, "kept running: the lifetime warning is not repeated"


@contextlib.asynccontextmanager
async def proxied_workspace(fake: Fake) -> AsyncIterator[tuple[RunningServer, dict, str, str]]:
    """A running workspace behind the proxy, its endpoint a loopback echo
    server: (server, user, its host, the proxy cookie). A warning only after
    3 s without traffic: a loaded machine's pauses between requests stay
    well under it."""
    upstream, port, _ = await start_upstream()
    server = await fake.start(workspace_exposure="network", workspace_idle_timeout="4", workspace_idle_warning="1",
                              workspace_cull_interval="0.2")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            user = await register(http)
            await running(http, user)
            await server.db.workspaces.update_one({"owner_id": user["user"]["id"]},
                                                  {"$set": {"endpoint": {"host": "127.0.0.1", "port": port}}})
            _, cookie = await redeem(server, await open_url(http, user))
            yield server, user, host_of(server, user["user"]["id"]), cookie
    finally:
        upstream.stop()


async def test_proxied_http_and_websocket_traffic_is_activity(fake: Fake):
    async with proxied_workspace(fake) as (server, user, host, cookie):
        for _ in range(10):  # 5 s of HTTP, past the 4 s timeout
            assert (await workspace_get(server, host, "/x", cookie)).status_code == 200
            await asyncio.sleep(0.5)
        socket = await proxy_socket(server, host, cookie)
        for _ in range(10):  # then 5 s of WebSocket frames only (echoed: both directions)
            await socket.write_message("typing")
            assert await socket.read_message() == "typing"
            await asyncio.sleep(0.5)
        doc = await server.services.workspaces.find(user["user"]["id"])
        assert doc["state"] == "running"
        assert not [e for e in await logged(server, user) if e.get("kind") == "warning"]
        socket.close()
        watcher = await follow(server, user)
        await watcher.until(lambda m: m.get("kind") == "warning")
        await watcher.until(lambda m: m.get("state") == "stopped")


async def test_traffic_after_a_warning_logs_that_it_is_kept_running(fake: Fake):
    async with proxied_workspace(fake) as (server, user, host, cookie):
        watcher = await follow(server, user)
        await watcher.until(lambda m: m.get("kind") == "warning")
        assert (await workspace_get(server, host, "/", cookie)).status_code == 200
        kept = (await watcher.until(lambda m: m.get("kind") != "warning"))[-1]
        assert kept["kind"] == "info" and kept["message"] == "Kept running: there was activity in the IDE"


async def test_two_servers_warn_once_and_stop_once(fake: Fake):
    first = await fake.start(**QUICK)
    second = await fake.start(**QUICK)  # same database, same engine: another process's culler
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        user = await register(http)
        await running(http, user)
        socket = await follow(second, user)
        await socket.until(lambda m: m.get("state") == "stopped")
        await asyncio.sleep(1)  # several more rounds of both cullers
    events = await logged(first, user)
    assert [e.get("kind") for e in events].count("warning") == 1
    assert [e["state"] for e in events if e.get("reason") == "idle"] == ["running", "stopping", "stopped"]


async def test_only_creations_count_against_the_workspace_rate_limit(fake: Fake):
    server = await fake.start(rate_limit_workspace="10/hour")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        user = await register(http)
        headers = auth(user)
        assert (await http.post(CREATE, headers=headers, json={"wait": True})).status_code == 201
        for _ in range(12):  # stop/start cycles and repeat requests on a running one: none counts
            assert (await http.post("/api/users/workspace/stop/", headers=headers)).status_code == 200
            assert (await http.post(CREATE, headers=headers, json={"wait": True})).status_code == 200
            assert (await http.post(CREATE, headers=headers)).status_code == 200
        statuses = []
        for _ in range(10):  # delete/create cycles: each makes the workspace again (201) and counts
            assert (await http.delete(WORKSPACE, headers=headers)).status_code == 200
            statuses.append((await http.post(CREATE, headers=headers, json={"wait": True})).status_code)
        assert statuses == [201] * 9 + [429], statuses
        denied = await http.post(CREATE, headers=headers)
        assert denied.status_code == 429 and denied.headers["X-RateLimit-Remaining"] == "0"
        assert (await http.get(WORKSPACE, headers=headers)).status_code == 404, "a refused creation changes nothing"


async def test_cullers_acting_on_the_same_view_at_once_warn_once_and_stop_once(fake: Fake):
    """The race the interval rarely produces: two processes read the same
    document and act in the same instant; compare-and-set lets one through."""
    slow = {**QUICK, "workspace_cull_interval": "3600"}  # only the calls below act
    first, second = await fake.start(**slow), await fake.start(**slow)
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        user = await register(http)
        await running(http, user)
    cullers = [first.services.workspaces.culler, second.services.workspaces.culler]
    for action, after in (("warn", 1.2), ("stop", 3.2)):
        doc = await first.services.workspaces.find(user["user"]["id"])
        now = time.time() + after
        due = plan(doc, first.services.settings, now)
        assert due is not None and due.action == action
        await asyncio.gather(*(culler.act(doc, due, now) for culler in cullers))
    events = await logged(first, user)
    assert [e.get("kind") for e in events].count("warning") == 1
    assert [e["state"] for e in events if e.get("reason") == "idle"] == ["running", "stopping", "stopped"]


async def test_an_engine_away_at_the_stop_leaves_it_to_reconciliation(quick):
    server, http = quick
    user = await register(http)
    await running(http, user)
    backend = server.services.workspaces.backend
    backend.unavailable = True
    socket = await follow(server, user)
    stopping = (await socket.until(lambda m: m.get("state") == "stopping"))[-1]
    assert stopping["reason"] == "idle"
    backend.unavailable = False
    backend.end_event_streams()  # as an engine restart does: the watcher reconnects and reconciles
    await socket.until(lambda m: m.get("state") == "stopped")
    doc = await server.services.workspaces.find(user["user"]["id"])
    assert doc["stop_reason"] == "idle" and not backend.of(doc["_id"]).running
    other = await register(http)  # and the culler goes on with the next workspaces
    await running(http, other)
    await (await follow(server, other)).until(lambda m: m.get("state") == "stopped")
