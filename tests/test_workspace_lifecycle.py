"""The workspace lifecycle against the in-memory backend (tests/support/fake_backend.py):
the real app over HTTP and WebSocket, the real database, no engine and no
sleeps. The Docker backend's own behaviour is proven by test_workspaces*.py."""
from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from services.db import connect
from services.workspaces import Endpoint
from tests.support.app import auth, make_admin, register, RunningServer
from tests.support.fake_backend import FakeInstance
from tests.support.workspaces import CONTRACT_503, CREATE, Socket, STOP, users_with_running_workspaces, WORKSPACE, WORKSPACE_KEYS
from tests.support.lifecycle import LOW


@pytest.fixture
async def server(fake) -> RunningServer:
    return await fake.start()


@pytest.fixture
async def http(server) -> Any:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def settled(server: RunningServer, user: dict, states: set[str]) -> dict:
    """The user's workspace once it is in one of `states`, by following its
    events (no polling)."""
    workspaces = server.services.workspaces
    doc = await workspaces.find(user["user"]["id"])
    assert doc is not None
    if doc["state"] in states:
        return doc
    async with asyncio.timeout(5):
        async for event in workspaces.subscribe(doc["_id"], doc["seq"]):
            if event["state"] in states:
                return await workspaces.find(user["user"]["id"]) or doc
    raise AssertionError("unreachable")


async def test_create_answers_201_with_the_final_url_and_port_then_runs(server, http):
    user = await register(http)
    created = await http.post(CREATE, headers=auth(user))
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == WORKSPACE_KEYS | {"msg"} and body["state"] == "provisioning"
    assert LOW <= body["port"] < LOW + 50 and body["url"] == f"http://localhost:{body['port']}"
    running = (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert running["state"] == "running" and running["progress"] == 100
    assert (running["port"], running["url"]) == (body["port"], body["url"])  # the 201's were final
    workspaces = server.services.workspaces
    doc = await workspaces.find(user["user"]["id"])
    assert workspaces.endpoint(doc) == Endpoint("127.0.0.1", body["port"])  # where the fake engine put it
    events = [e async for e in server.db.workspace_events.find({"workspace_id": doc["_id"]}).sort("seq", 1)]
    assert [e["seq"] for e in events] == list(range(1, doc["seq"] + 1))
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)


async def test_network_exposure_answers_201_with_the_proxied_url_and_its_port(fake):
    """The default exposure: no host port; the 201 names the workspace's own
    origin on the server's port (PUBLIC_URL's when set) before it runs."""
    server = await fake.start(workspace_exposure="network", public_url="https://apranova.example.edu",
                              workspace_host_template="ws-{user_id}.apranova.example.edu")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        user = await register(client)
        created = await client.post(CREATE, headers=auth(user))
        assert created.status_code == 201, created.text
        uid = user["user"]["id"]
        assert (created.json()["url"].split("?ticket=")[0], created.json()["port"]) == (
            f"https://ws-{uid}.apranova.example.edu/", 443)
        running = await settled(server, user, {"running"})
        assert running.get("port") is None and server.services.workspaces.endpoint(running) is not None


async def test_simultaneous_creates_make_one_instance_and_users_get_distinct_ports(server, http):
    user = await register(http)
    answers = await asyncio.gather(*(http.post(CREATE, headers=auth(user)) for _ in range(20)))
    assert sorted(a.status_code for a in answers) == [200] * 19 + [201]
    assert len({a.json()["port"] for a in answers}) == 1
    await settled(server, user, {"running"})
    backend = server.services.workspaces.backend
    assert backend.engine.launches == 1
    users = [await register(http) for _ in range(10)]
    bodies = await asyncio.gather(*(http.post(CREATE, headers=auth(u), json={"wait": True}) for u in users))
    assert {b.json()["state"] for b in bodies} == {"running"}
    assert len({b.json()["port"] for b in bodies} | {answers[0].json()["port"]}) == 11


async def test_stop_and_delete_during_a_slow_launch_leave_nothing_running(server, http):
    backend = server.services.workspaces.backend
    backend.gate = asyncio.Event()
    stopped_user, deleted_user = await register(http), await register(http)
    for user in (stopped_user, deleted_user):
        assert (await http.post(CREATE, headers=auth(user))).status_code == 201
    stopped, deleted = await asyncio.gather(http.post(STOP, headers=auth(stopped_user)),
                                            http.delete(WORKSPACE, headers=auth(deleted_user)))
    assert stopped.json()["state"] == "stopped" and deleted.json()["state"] == "deleted"
    backend.gate.set()  # the launches land after the stop and the delete: the runs undo them
    for task in list(server.services.workspaces.provisioner.tasks.values()):
        await task
    assert not any(i.running for i in backend.engine.instances.values())
    assert (await http.get(WORKSPACE, headers=auth(deleted_user))).status_code == 404
    assert (await http.get(WORKSPACE, headers=auth(stopped_user))).json()["state"] == "stopped"
    again = await http.post(CREATE, headers=auth(stopped_user), json={"wait": True})
    assert again.status_code == 200 and again.json()["state"] == "running"


async def test_failing_and_never_ready_workspaces_fail_with_the_message_then_retry_works(server, http):
    backend = server.services.workspaces.backend
    user = await register(http)
    backend.fail_with = "Docker refused to create the workspace: no space left"
    failed = (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()
    # Two audiences: the student reads what to do and a reference; the
    # engine's words stay in the event log (the admin API's history).
    uid = user["user"]["id"]
    assert failed["state"] == "failed" and failed["message"] == (
        "Your workspace could not start: its container did not start. Try again; if it fails again, tell your "
        f"trainer: reference ws-{uid}-1.")
    doc = await server.services.workspaces.find(uid)
    event = await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": doc["seq"]})
    assert (event["kind"], event["detail"], event["run"]) == ("failure", backend.fail_with, 1)
    socket = await Socket.open(server, token=user["access"])
    snapshot = await socket.receive()
    assert (snapshot["kind"], snapshot["step"], snapshot["message"]) == ("failure", "container", failed["message"])
    assert "detail" not in snapshot  # the operator's text never reaches a student's socket
    socket.close()
    backend.fail_with, backend.never_ready = None, True
    server.services.settings.workspace_ready_timeout = 1  # readiness is the provisioner's wait: keep it short
    failed = (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert failed["state"] == "failed" and "its IDE did not start." in failed["message"]
    assert f"reference ws-{uid}-2." in failed["message"] and "port" not in failed["message"]
    assert (await http.get(WORKSPACE, headers=auth(user))).json()["message"] == failed["message"]
    backend.never_ready = False
    assert failed["estimate_seconds"] is None  # no successful start on this server yet
    running = await http.post(CREATE, headers=auth(user), json={"wait": True})
    assert running.status_code == 201 and running.json()["state"] == "running"  # a failed one is made again
    # One success: the estimate is its duration (the median of the recent ones).
    estimate = (await http.get(WORKSPACE, headers=auth(user))).json()["estimate_seconds"]
    assert estimate == round(server.services.workspaces.provision_seconds[-1], 1)


async def test_a_port_taken_outside_moves_the_workspace_to_another(server, http):
    backend = server.services.workspaces.backend
    first = await register(http)
    port = (await http.post(CREATE, headers=auth(first))).json()["port"]
    await settled(server, first, {"running"})
    await http.post(STOP, headers=auth(first))
    backend.taken.add(port)  # while it was stopped, something else took its port
    again = (await http.post(CREATE, headers=auth(first), json={"wait": True})).json()
    assert again["state"] == "running" and again["port"] != port
    assert backend.of((await server.services.workspaces.find(first["user"]["id"]))["_id"]).port == again["port"]


@pytest.mark.parametrize("event, state, reason, message, detail", [
    ("die", "stopped", "died", "Your workspace stopped unexpectedly.",
     "The workspace container stopped (exit code 137)."),
    ("oom", "failed", "oom", "Your workspace ran out of memory and was stopped.",
     "The workspace ran out of memory (limit 2g) and was stopped."),
    ("vanish", "stopped", "died", "Your workspace stopped unexpectedly.",
     "The workspace container was removed outside ApraNova."),
])
async def test_engine_events_change_a_running_workspace(server, http, event, state, reason, message, detail):
    user = await register(http)
    assert (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()["state"] == "running"
    doc = await server.services.workspaces.find(user["user"]["id"])
    socket = await Socket.open(server, token=user["access"])
    assert (await socket.receive())["type"] == "snapshot"
    getattr(server.services.workspaces.backend, event)(doc["_id"])
    seen = await socket.until(lambda m: m["state"] != "running", timeout=5)
    last = seen[-1]
    assert (last["state"], last["kind"], last["reason"]) == (state, "failure", reason)
    assert last["message"].startswith(message) and f"reference ws-{user['user']['id']}-1." in last["message"]
    assert "detail" not in last and "exit code" not in last["message"] and "limit" not in last["message"]
    logged = await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": last["seq"]})
    assert logged["detail"] == detail  # the operator's words, in the event log only
    socket.close()
    assert (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()["state"] == "running"


async def test_a_restart_reconciles_documents_and_instances(fake):
    first = await fake.start()
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
        users = await users_with_running_workspaces(client, 4)
    backend = first.services.workspaces.backend
    await first.stop()
    client, db = connect(fake.mongo.uri, fake.db_name)
    gone, stopping, deleting, interrupted = (u["user"]["id"] for u in users)
    docs = {uid: await db.workspaces.find_one({"owner_id": uid}) for uid in (gone, stopping, deleting, interrupted)}
    removed = backend.of(docs[gone]["_id"])
    removed.halt(137)  # removed while nobody watched: its port is free again
    del backend.engine.instances[removed.ref]
    await db.workspaces.update_one({"owner_id": stopping}, {"$set": {"state": "stopping"}})
    await db.workspaces.update_one({"owner_id": deleting}, {"$set": {"state": "deleting"}})
    await db.workspaces.update_one({"owner_id": interrupted}, {"$set": {"state": "provisioning", "worker": "dead"}})
    await db.workspaces.update_one({"owner_id": interrupted}, {"$unset": {"container_id": ""}})
    backend.engine.instances["orphan"] = FakeInstance("orphan-name", "orphan", "no-such-workspace", None)
    await client.close()

    second = await fake.start()
    expected = {gone: "stopped", stopping: "stopped", deleting: "deleted", interrupted: "running"}
    for uid, state in expected.items():
        assert (await settled(second, {"user": {"id": uid}}, {state}) if state != "deleted" else
                await wait_deleted(second, docs[uid]))["state"] == state, uid
    await second.services.workspaces.reconciler.reconcile()  # idempotent: returns once orphans are gone
    assert "orphan" not in backend.engine.instances
    live = {i.workspace_id for i in backend.engine.instances.values() if i.running}
    assert live == {docs[interrupted]["_id"]}


async def wait_deleted(server: RunningServer, doc: dict) -> dict:
    current = await server.db.workspaces.find_one({"_id": doc["_id"]})
    if current["state"] != "deleted":
        async with asyncio.timeout(5):
            async for event in server.services.workspaces.subscribe(doc["_id"], current["seq"]):
                if event["state"] == "deleted":
                    break
    return await server.db.workspaces.find_one({"_id": doc["_id"]})


async def test_a_socket_resumes_exactly_after_the_seq_it_saw(server, http):
    user = await register(http)
    created = (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()
    socket = await Socket.open(server, "?after=2", token=user["access"])
    snapshot = await socket.receive()
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == created["seq"]
    replayed = await socket.until(lambda m: m.get("seq") == created["seq"])
    assert [m["seq"] for m in replayed] == list(range(3, created["seq"] + 1))
    assert (await http.post(STOP, headers=auth(user))).status_code == 200
    live = await socket.until(lambda m: m["state"] == "stopped")
    assert [m["seq"] for m in live] == [created["seq"] + 1, created["seq"] + 2]
    socket.close()


async def test_events_written_by_another_process_reach_a_socket(fake):
    one, other = await fake.start(), await fake.start()
    async with httpx.AsyncClient(base_url=one.url, timeout=10) as client:
        user = await register(client)
        created = (await client.post(CREATE, headers=auth(user))).json()  # provisioned by `one`
        socket = await Socket.open(other, f"?after={created['seq']}", token=user["access"])
        assert (await socket.receive())["type"] == "snapshot"
        events = await socket.until(lambda m: m["state"] == "running")
        assert [e["seq"] for e in events] == list(range(created["seq"] + 1, events[-1]["seq"] + 1))
        socket.close()


async def test_shutdown_ends_subscriptions_with_1001(fake):
    server = await fake.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        user = await register(client)
        await client.post(CREATE, headers=auth(user), json={"wait": True})
        socket = await Socket.open(server, token=user["access"])
        assert (await socket.receive())["type"] == "snapshot"
    await server.stop()
    assert await socket.closed_with() == 1001


async def test_an_unavailable_engine_answers_the_contract_503_and_comes_back(server, http):
    backend = server.services.workspaces.backend
    user = await register(http)
    backend.unavailable = True
    response = await http.post(CREATE, headers=auth(user))
    assert response.status_code == 503 and response.json() == CONTRACT_503
    backend.unavailable = False
    assert (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()["state"] == "running"
    backend.unavailable = True
    assert (await http.post(STOP, headers=auth(user))).json() == CONTRACT_503


async def test_a_full_port_range_takes_the_port_of_the_longest_stopped(fake):
    server = await fake.start(workspace_port_range=f"{LOW}-{LOW}")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        first, second = auth(await register(client)), auth(await register(client))
        assert (await client.post(CREATE, headers=first, json={"wait": True})).json()["port"] == LOW
        await client.post(STOP, headers=first)
        taken = (await client.post(CREATE, headers=second)).json()
        assert taken["port"] == LOW and taken["url"] == f"http://localhost:{LOW}"
        gave_up = (await client.get(WORKSPACE, headers=first)).json()
        # Host ports are the operator's business: the student's text stays, the event log says why.
        assert gave_up["port"] is None and gave_up["message"] == "Workspace stopped"
        first_id = (await client.get("/api/users/profile/", headers=first)).json()["id"]
        doc = await server.services.workspaces.find(first_id)
        event = await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": doc["seq"]})
        assert event["internal"] is True and "new one when it starts" in event["detail"]
        refused = (await client.post(CREATE, headers=first)).json()
        assert refused["state"] == "failed" and "no room for another workspace" in refused["message"]
        assert f"ws-{first_id}-" in refused["message"] and "WORKSPACE_PORT_RANGE" not in refused["message"]


@pytest.mark.parametrize("value", ["%C2%B2", "9223372036854775808", "-1", "1e3"])
async def test_bad_user_ids_are_400_field_errors_and_close_the_socket_4400(server, http, value):
    admin = await make_admin(server, http)
    for method, path in (("GET", WORKSPACE), ("POST", STOP), ("DELETE", WORKSPACE), ("POST", CREATE)):
        response = await http.request(method, f"{path}?user_id={value}", headers=auth(admin))
        assert response.status_code == 400, (method, path, response.text)
        assert "user_id" in response.json()
    socket = await Socket.open(server, f"?user_id={value}", token=admin["access"])
    assert await socket.closed_with() == 4400
    socket = await Socket.open(server, f"?after={value}", token=admin["access"])
    assert await socket.closed_with() == 4400


async def test_the_ide_password_is_derived_and_never_stored(server, http):
    """Issue 14 item 7: the database holds no usable IDE password (a salt;
    the password derives from the server's key), the owner's answers carry
    it, it stays across stop and start, and a deleted workspace made again
    gets a new one."""
    user = await register(http)
    first = (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()
    doc = await server.db.workspaces.find_one({"owner_id": user["user"]["id"]})
    assert "password" not in doc and doc["password_salt"] and first["password"] not in str(doc)
    assert len(first["password"]) == 24 and first["password"] == server.services.workspaces.password(doc)
    assert (await http.post("/api/users/workspace/stop/", headers=auth(user))).status_code == 200
    again = (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert again["state"] == "running" and again["password"] == first["password"]
    assert (await http.delete("/api/users/workspace/", headers=auth(user))).status_code == 200
    remade = (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert remade["password"] != first["password"]
