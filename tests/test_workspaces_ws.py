"""The live status WebSocket: authentication (header or first message),
close codes, Origin, the snapshot, exact resume with ?after=, live events,
admins, and shutdown."""
from __future__ import annotations

import asyncio

import pytest

from tests.support.app import auth, make_admin, register
from tests.support.workspaces import CREATE, open_websockets, refused_handshake, Socket, STOP, wait_for_state

pytestmark = pytest.mark.docker
EVENT_KEYS = {"type", "seq", "state", "progress", "message", "at", "run"}
SNAPSHOT_KEYS = {"type", "state", "progress", "url", "port", "password", "seq", "message", "at", "run", "run_started",
                 "estimate_seconds", "disk_used_bytes", "disk_size_bytes"}
NOTE_KEYS = {"kind", "reason", "stop_at", "step", "internal", "disk_used", "disk_size"}  # optional, per event


def is_state(*states):
    return lambda message: message["type"] == "event" and message["state"] in states


async def running_workspace(http, user) -> dict:
    response = await http.post(CREATE, headers=auth(user), json={"wait": True})
    assert response.json()["state"] == "running", response.text
    return response.json()


async def test_snapshot_then_every_event_then_live_ones(ws_server, http):
    user = await register(http)
    created = (await http.post(CREATE, headers=auth(user))).json()
    socket = await Socket.open(ws_server, "?after=0", token=user["access"])
    snapshot = await socket.receive()
    assert SNAPSHOT_KEYS <= set(snapshot) <= SNAPSHOT_KEYS | NOTE_KEYS and snapshot["type"] == "snapshot"
    assert snapshot["password"] == created["password"] and snapshot["seq"] >= created["seq"]
    events = await socket.until(is_state("running", "failed"))
    assert all(EVENT_KEYS <= set(e) <= EVENT_KEYS | NOTE_KEYS and e["type"] == "event" for e in events)
    assert [e["seq"] for e in events] == list(range(1, events[-1]["seq"] + 1))  # nothing lost, nothing twice
    assert events[-1]["state"] == "running" and events[-1]["progress"] == 100
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and all(0 <= p <= 100 for p in progress)
    assert all(e["at"].endswith("Z") for e in events)

    # The socket stays open: a stop made elsewhere arrives live.
    assert (await http.post(STOP, headers=auth(user))).status_code == 200
    later = await socket.until(is_state("stopped"))
    assert [e["state"] for e in later] == ["stopping", "stopped"]
    assert later[0]["seq"] == events[-1]["seq"] + 1
    socket.close()


async def test_a_reconnecting_client_resumes_exactly_with_after(ws_server, http):
    user = await register(http)
    await running_workspace(http, user)
    first = await Socket.open(ws_server, token=user["access"])
    snapshot = await first.receive()
    assert snapshot["state"] == "running"
    first.close()  # the browser goes away...

    assert (await http.post(STOP, headers=auth(user))).status_code == 200
    assert (await http.post(CREATE, headers=auth(user))).status_code == 200  # ...while things happen

    resumed = await Socket.open(ws_server, f"?after={snapshot['seq']}", token=user["access"])
    again = await resumed.receive()
    assert again["type"] == "snapshot" and again["seq"] > snapshot["seq"]
    events = await resumed.until(is_state("running"))
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(snapshot["seq"] + 1, seqs[-1] + 1))
    assert [e["state"] for e in events[:3]] == ["stopping", "stopped", "provisioning"]
    resumed.close()

    # Without ?after= a late client gets the snapshot only, then live events.
    late = await Socket.open(ws_server, token=user["access"])
    assert (await late.receive())["seq"] == seqs[-1]
    with pytest.raises(asyncio.TimeoutError):
        await late.receive(timeout=0.3)
    late.close()


async def test_first_message_authentication_for_browsers(ws_server, http):
    user = await register(http)
    await http.post(CREATE, headers=auth(user))
    socket = await Socket.open(ws_server, "?after=0")
    await socket.send({"type": "auth", "token": user["access"]})
    assert (await socket.receive())["type"] == "snapshot"
    socket.close()

    for bad in ({"type": "auth", "token": "not-a-token"}, {"type": "auth", "token": {"$ne": ""}}, "not json",
                {"type": "hello"}):
        socket = await Socket.open(ws_server)
        await socket.send(bad)
        assert await socket.closed_with() == 4401, bad


async def test_close_codes_for_bad_tokens_forbidden_and_no_workspace(ws_server, http):
    owner, other = await register(http), await register(http)
    await http.post(CREATE, headers=auth(owner))
    assert await (await Socket.open(ws_server, token="garbage")).closed_with() == 4401
    assert await (await Socket.open(ws_server, token=owner["refresh"])).closed_with() == 4401
    forbidden = await Socket.open(ws_server, f"?user_id={owner['user']['id']}", token=other["access"])
    assert await forbidden.closed_with() == 4403
    assert await (await Socket.open(ws_server, token=other["access"])).closed_with() == 4404
    assert await (await Socket.open(ws_server, "?after=-1", token=owner["access"])).closed_with() == 4400


async def test_no_authentication_within_five_seconds_closes_4401(ws_server):
    socket = await Socket.open(ws_server)
    started = asyncio.get_running_loop().time()
    assert await socket.closed_with(timeout=10) == 4401
    assert 4.5 < asyncio.get_running_loop().time() - started < 8


async def test_an_admin_watches_another_users_workspace(ws_server, http):
    owner = await register(http)
    admin = await make_admin(ws_server, http)
    created = (await http.post(CREATE, headers=auth(owner))).json()
    socket = await Socket.open(ws_server, f"?user_id={owner['user']['id']}&after=0", token=admin["access"])
    snapshot = await socket.receive()
    assert snapshot["password"] == created["password"]
    await socket.until(is_state("running"))
    socket.close()


async def test_origin_is_checked(ws_server, http):
    user = await register(http)
    await http.post(CREATE, headers=auth(user))
    assert await refused_handshake(ws_server, token=user["access"], origin="https://evil.example") == 403
    for origin in ("http://localhost:3000", ws_server.url):  # an allowed origin, and same-origin
        socket = await Socket.open(ws_server, token=user["access"], origin=origin)
        assert (await socket.receive())["type"] == "snapshot"
        socket.close()


async def test_shutdown_closes_sockets_with_1001_and_counts_them(servers, http, ws_server):
    user = await register(http)
    await http.post(CREATE, headers=auth(user))
    sockets = [await Socket.open(ws_server, token=user["access"]) for _ in range(3)]
    for socket in sockets:
        assert (await socket.receive())["type"] == "snapshot"
    assert await open_websockets(http) == 3
    sockets[0].close()
    for _ in range(50):
        if await open_websockets(http) == 2:
            break
        await asyncio.sleep(0.02)
    assert await open_websockets(http) == 2
    await wait_for_state(http, auth(user), {"running"})
    await servers.stop(ws_server)
    for socket in sockets[1:]:
        assert await socket.closed_with() == 1001


async def test_events_made_by_another_process_reach_the_socket(servers, ws_server, http):
    """Two server processes on one database (behind a load balancer): a
    socket on one sees what the other does."""
    other = await servers.start(mongodb_db=ws_server.services.settings.mongodb_db)
    user = await register(http)
    created = (await http.post(CREATE, headers=auth(user))).json()  # provisioned by ws_server
    socket = await Socket.open(other, f"?after={created['seq']}", token=user["access"])
    assert (await socket.receive())["type"] == "snapshot"
    events = await socket.until(is_state("running"), timeout=30)
    assert [e["seq"] for e in events] == list(range(created["seq"] + 1, events[-1]["seq"] + 1))
    assert (await http.post(STOP, headers=auth(user))).status_code == 200
    later = await socket.until(is_state("stopped"), timeout=10)
    assert [e["state"] for e in later] == ["stopping", "stopped"]
    socket.close()
