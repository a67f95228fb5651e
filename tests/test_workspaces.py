"""Workspaces over HTTP against the real Docker engine: the lifecycle and the
contract's shapes, the 503 path and recovery, concurrency, the watcher,
restart reconciliation, access rules."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from services.db import connect
from tests.support.app import auth, make_admin, register
from tests.support.workspaces import containers_of, CONTRACT_503, CREATE, docker, DockerProxy, STOP, users_with_running_workspaces, wait_for_state, WORKSPACE, WORKSPACE_KEYS

pytestmark = pytest.mark.docker


@pytest.fixture
def servers(servers):
    """This module proves the direct exposure (published host ports, the
    contract's literal url); tests/test_workspace_isolation.py and the proxy
    tests prove the default, network one."""
    servers.defaults["workspace_exposure"] = "direct"
    return servers


def inspect(name: str) -> dict:
    return json.loads(docker("inspect", name))[0]


async def answers_http(port: int) -> bool:
    async with httpx.AsyncClient(timeout=3) as client:
        try:
            return (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
        except httpx.HTTPError:
            return False


async def test_whole_lifecycle_with_the_contract_shapes(ws_server, http, servers):
    user = await register(http)
    uid, headers = user["user"]["id"], auth(user)
    name, volume = f"{servers.instance}-ws-{uid}", f"{servers.instance}-ws-{uid}-home"

    assert (await http.get(WORKSPACE, headers=headers)).status_code == 404
    started = time.monotonic()
    created = await http.post(CREATE, headers=headers)
    assert time.monotonic() - started < 1.0
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == WORKSPACE_KEYS | {"msg"}
    assert body["msg"] == "Workspace created successfully." and body["state"] == body["status"] == "provisioning"
    assert len(body["password"]) >= 16

    again = await http.post(CREATE, headers=headers, json={"wait": True})
    assert again.status_code == 200, again.text
    running = again.json()
    assert running["msg"] == "Workspace already exists." and running["state"] == "running"
    assert running["progress"] == 100 and running["seq"] > body["seq"]
    low, high = map(int, servers.port_range.split("-"))
    assert low <= running["port"] <= high and running["url"] == f"http://localhost:{running['port']}"
    assert running["password"] == body["password"]
    assert await answers_http(running["port"])  # running means the IDE answers

    info = inspect(name)
    labels = info["Config"]["Labels"]
    assert labels["apranova.managed"] == "true" and labels["apranova.instance"] == servers.instance
    assert labels["apranova.user_id"] == str(uid) and labels["apranova.workspace_id"]
    assert f"PASSWORD={body['password']}" in info["Config"]["Env"]
    host = info["HostConfig"]
    assert host["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(running["port"])}]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 1024 ** 2 and host["PidsLimit"] == 64
    assert [(m["Name"], m["Destination"]) for m in info["Mounts"]] == [(volume, "/home/coder")]
    # No capabilities, not root, no privilege gain (issue 14 item 4).
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd") and info["Config"]["User"] == "1000:1000"
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert docker("exec", name, "/bin/busybox", "id", "-u") == "1000"

    got = await http.get(WORKSPACE, headers=headers)
    assert got.status_code == 200 and set(got.json()) == WORKSPACE_KEYS and got.json()["state"] == "running"

    # The files volume survives stop, start and delete; purge removes it.
    docker("exec", name, "/bin/busybox", "sh", "-c", "echo kept > /home/coder/project/file.txt && "
           "/bin/busybox mkdir -p /home/coder/.config && echo '{}' > /home/coder/.config/settings.json")
    stopped = await http.post(STOP, headers=headers)
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert inspect(name)["State"]["Running"] is False
    restarted = await http.post(CREATE, headers=headers, json={"wait": True})
    assert restarted.status_code == 200 and restarted.json()["state"] == "running"
    assert restarted.json()["port"] == running["port"]
    assert docker("exec", name, "/bin/busybox", "cat", "/home/coder/project/file.txt") == "kept"
    assert docker("exec", name, "/bin/busybox", "cat", "/home/coder/.config/settings.json") == "{}"  # the whole home

    deleted = await http.delete(WORKSPACE, headers=headers)
    assert deleted.status_code == 200 and deleted.json()["state"] == "deleted" and deleted.json()["message"]
    assert docker("ps", "-aq", "--filter", f"name=^{name}$") == ""
    assert docker("volume", "ls", "-q", "--filter", f"name=^{volume}$") == volume
    missing = await http.get(WORKSPACE, headers=headers)
    assert missing.status_code == 404 and set(missing.json()) >= {"error", "message"}
    assert (await http.post(STOP, headers=headers)).status_code == 404

    recreated = await http.post(CREATE, headers=headers, json={"wait": True})
    assert recreated.status_code == 201 and recreated.json()["state"] == "running"
    assert recreated.json()["password"] != body["password"]
    assert docker("exec", name, "/bin/busybox", "cat", "/home/coder/project/file.txt") == "kept"
    purged = await http.delete(WORKSPACE + "?purge=true", headers=headers)
    assert purged.status_code == 200
    assert docker("volume", "ls", "-q", "--filter", f"name=^{volume}$") == ""


async def test_bad_input_is_a_clear_400_and_changes_nothing(ws_server, http):
    user = await register(http)
    headers = auth(user)
    for body in ({"wait": "yes"}, {"wait": 1}, {"wait": {"$ne": 1}}):
        response = await http.post(CREATE, headers=headers, json=body)
        assert response.status_code == 400 and response.json()["wait"], response.text
    assert (await http.post(CREATE, headers=headers, content=b"{not json",
                            )).status_code in (400, 415)
    assert (await http.get(WORKSPACE + "?user_id=abc", headers=headers)).status_code == 400
    assert (await http.delete(WORKSPACE + "?purge=maybe", headers=headers)).status_code == 400
    assert (await http.post(CREATE)).status_code == 401
    assert (await http.get(WORKSPACE, headers=headers)).status_code == 404  # nothing was created


async def test_docker_unreachable_answers_the_contract_503(servers, tmp_path):
    server = await servers.start(docker_host=f"unix://{tmp_path}/no-such-docker.sock")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        response = await client.post(CREATE, headers=auth(user))
        assert response.status_code == 503
        assert response.json() == CONTRACT_503
        assert (await client.post(STOP, headers=auth(user))).json() == CONTRACT_503
        assert (await client.get("/health")).status_code == 200


async def test_workspaces_come_back_when_docker_does_without_a_restart(servers, tmp_path):
    proxy = DockerProxy(str(tmp_path / "docker.sock"))
    await proxy.open()
    server = await servers.start(docker_host=proxy.url)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            user = await register(client)
            headers = auth(user)
            first = await client.post(CREATE, headers=headers, json={"wait": True})
            assert first.status_code == 201 and first.json()["state"] == "running"

            await proxy.close()
            assert (await client.post(CREATE, headers=headers)).json() == CONTRACT_503
            assert (await client.delete(WORKSPACE, headers=headers)).status_code == 503
            # The watcher lost its stream; a kill now is seen after reconnection.
            docker("kill", f"{servers.instance}-ws-{user['user']['id']}")

            await proxy.open()
            seen = await wait_for_state(client, headers, {"stopped"}, timeout=20)
            assert "stopped" in seen["message"] or "exit" in seen["message"]
            again = await client.post(CREATE, headers=headers, json={"wait": True})
            assert again.status_code == 200 and again.json()["state"] == "running", again.text
    finally:
        await servers.stop(server)
        await proxy.close()


async def test_twenty_simultaneous_creates_by_one_user_make_one_container(ws_server, http, servers):
    user = await register(http)
    responses = await asyncio.gather(*[http.post(CREATE, headers=auth(user)) for _ in range(20)])
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 19 + [201], [r.text for r in responses if r.status_code not in (200, 201)]
    await wait_for_state(http, auth(user), {"running"})
    assert len(containers_of(servers.instance, f"apranova.user_id={user['user']['id']}")) == 1
    assert await ws_server.db.workspaces.count_documents({"owner_id": user["user"]["id"]}) == 1


async def test_twenty_users_at_once_get_twenty_containers_on_distinct_ports(ws_server, http, servers):
    users = [await register(http) for _ in range(20)]
    responses = await asyncio.gather(*[http.post(CREATE, headers=auth(u), json={"wait": True}) for u in users])
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    assert [r.json()["state"] for r in responses] == ["running"] * 20, [r.json()["message"] for r in responses]
    ports = {r.json()["port"] for r in responses}
    assert len(ports) == 20
    assert len(containers_of(servers.instance)) == 20
    answers = await asyncio.gather(*[answers_http(port) for port in ports])
    assert all(answers)


def hold_a_port_before_a_free_one() -> tuple[socket.socket, int]:
    """A listening socket on port N where N+1 is free right now (on a shared
    machine anything may hold N+1; then try another N)."""
    for _ in range(50):
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", taken + 1))
                return holder, taken
            except OSError:
                holder.close()
    raise AssertionError("no port N with N+1 free")


async def test_a_host_port_taken_outside_is_skipped(servers):
    holder, taken = hold_a_port_before_a_free_one()
    try:
        server = await servers.start(workspace_port_range=f"{taken}-{taken + 1}")
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            for _ in range(3):  # the choice among free ports is random: try it a few times
                user = await register(client)
                response = await client.post(CREATE, headers=auth(user), json={"wait": True})
                assert response.json()["state"] == "running", response.text
                assert response.json()["port"] == taken + 1
                assert (await client.delete(WORKSPACE, headers=auth(user))).status_code == 200
    finally:
        holder.close()


async def note_of(server, user) -> dict:
    """The note of the user's workspace's latest change (a registration
    answer or a profile response names the user)."""
    uid = user.json()["id"] if hasattr(user, "json") else user["user"]["id"]
    return (await server.db.workspaces.find_one({"owner_id": uid})).get("note") or {}


async def test_missing_image_with_pull_policy_never_fails_with_a_message(servers):
    server = await servers.start(workspace_image="apranova/no-such-image:never", workspace_pull_policy="never")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        response = await client.post(CREATE, headers=auth(user), json={"wait": True})
        body = response.json()
        # The student reads what to do; the image and the policy are the operator's detail.
        assert body["state"] == "failed" and "its software could not be prepared" in body["message"]
        assert "no-such-image" not in body["message"]
        detail = (await note_of(server, user))["detail"]
        assert "apranova/no-such-image:never" in detail and "'never'" in detail
        assert containers_of(servers.instance) == []


async def test_an_external_docker_kill_shows_up_within_two_seconds(ws_server, http, servers):
    user = await register(http)
    headers = auth(user)
    assert (await http.post(CREATE, headers=headers, json={"wait": True})).json()["state"] == "running"
    docker("kill", f"{servers.instance}-ws-{user['user']['id']}")
    killed = time.monotonic()
    body = await wait_for_state(http, headers, {"stopped", "failed"}, timeout=2)
    assert time.monotonic() - killed < 2
    assert body["state"] == "stopped" and body["message"].startswith("Your workspace stopped unexpectedly.")
    note = await note_of(ws_server, user)
    assert (note["reason"], note["detail"]) == ("died", "The workspace container stopped (exit code 137).")
    # and it can be started again
    assert (await http.post(CREATE, headers=headers, json={"wait": True})).json()["state"] == "running"
    docker("rm", "-f", f"{servers.instance}-ws-{user['user']['id']}")
    deadline = time.monotonic() + 2
    while "removed" not in (await note_of(ws_server, user)).get("detail", ""):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (await http.get(WORKSPACE, headers=headers)).json()["state"] == "stopped"


# Serves HTTP like the test image, and on a signal (a file appearing) makes
# the main process (tini's child, so its death ends the container) fill its
# memory: busybox tail keeps /dev/zero's endless "line" in memory.
OOM_ON_SIGNAL = ("/bin/busybox sh -c '/bin/busybox httpd -f -p 8080 -h /www & "
                 "while [ ! -e /tmp/oom ]; do /bin/busybox sleep 0.1; done; exec /bin/busybox tail /dev/zero'")


async def test_an_oom_kill_marks_the_workspace_failed_with_the_memory_message(servers):
    server = await servers.start(workspace_memory="16m", workspace_cmd=OOM_ON_SIGNAL)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        headers, name = auth(user), f"{servers.instance}-ws-{user['user']['id']}"
        assert (await client.post(CREATE, headers=headers, json={"wait": True})).json()["state"] == "running"
        docker("exec", name, "/bin/busybox", "touch", "/tmp/oom")
        body = await wait_for_state(client, headers, {"stopped", "failed"}, timeout=10)
        assert inspect(name)["State"]["OOMKilled"] is True  # the kernel really killed it
        assert body["state"] == "failed", body
        assert body["message"].startswith("Your workspace ran out of memory and was stopped."), body
        doc = await server.services.workspaces.find(user["user"]["id"])
        event = await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": doc["seq"]})
        assert event["reason"] == "oom"
        assert event["detail"] == "The workspace ran out of memory (limit 16m) and was stopped."
        # Created again, it runs again (in a new container).
        again = (await client.post(CREATE, headers=headers, json={"wait": True})).json()
        assert again["state"] == "running", again
        assert inspect(name)["State"]["Running"] and await answers_http(again["port"])


async def test_restart_reconciles_documents_and_containers(servers):
    first = await servers.start()
    async with httpx.AsyncClient(base_url=first.url, timeout=60) as client:
        users = await users_with_running_workspaces(client, 3)
    db_name = first.services.settings.mongodb_db
    await servers.stop(first)
    mongo_client, db = connect(servers.mongo.uri, db_name)

    killed, interrupted, untouched = (u["user"]["id"] for u in users)
    docker("kill", f"{servers.instance}-ws-{killed}")
    # A provisioning cut short by a crash: the document says provisioning,
    # the container is gone.
    doc = await db.workspaces.find_one({"owner_id": interrupted})
    await db.workspaces.update_one({"_id": doc["_id"]}, {"$set": {"state": "provisioning", "worker": "dead",
                                                                 "progress": 80}})
    await mongo_client.close()
    docker("rm", "-f", f"{servers.instance}-ws-{interrupted}")
    # An orphan: our labels, no document.
    orphan = docker("create", "--label", "apranova.managed=true", "--label", f"apranova.instance={servers.instance}",
                    "--label", "apranova.workspace_id=orphan", "--label", "apranova.user_id=999999",
                    "apranova/workspace-test:2")

    second = await servers.start(mongodb_db=db_name)
    async with httpx.AsyncClient(base_url=second.url, timeout=60) as client:
        tokens = {u["user"]["id"]: auth(u) for u in users}
        assert (await wait_for_state(client, tokens[killed], {"stopped"}, timeout=15))["state"] == "stopped"
        resumed = await wait_for_state(client, tokens[interrupted], {"running", "failed"}, timeout=30)
        assert resumed["state"] == "running", resumed
        assert (await client.get(WORKSPACE, headers=tokens[untouched])).json()["state"] == "running"
    deadline = time.monotonic() + 10
    while docker("ps", "-aq", "--filter", f"id={orphan}") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert docker("ps", "-aq", "--filter", f"id={orphan}") == ""
    assert len(containers_of(servers.instance)) == 3


async def test_another_user_is_refused_and_an_admin_may_act(ws_server, http, servers):
    owner, other = await register(http), await register(http)
    admin = await make_admin(ws_server, http)
    owner_id = owner["user"]["id"]
    assert (await http.post(CREATE, headers=auth(owner))).status_code == 201
    for method, path in (("GET", WORKSPACE), ("POST", STOP), ("DELETE", WORKSPACE), ("POST", CREATE)):
        response = await http.request(method, f"{path}?user_id={owner_id}", headers=auth(other))
        assert response.status_code == 403, (method, path, response.text)
    assert (await http.get(WORKSPACE, headers=auth(other))).status_code == 404
    seen = await http.get(f"{WORKSPACE}?user_id={owner_id}", headers=auth(admin))
    assert seen.status_code == 200 and seen.json()["password"]
    assert (await http.get(f"{WORKSPACE}?user_id=987654", headers=auth(admin))).status_code == 404
    stopped = await http.post(f"{STOP}?user_id={owner_id}", headers=auth(admin))
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert (await http.get(WORKSPACE, headers=auth(owner))).json()["state"] == "stopped"


async def test_creation_is_rate_limited_per_user(servers):
    server = await servers.start(rate_limit_workspace="2/hour")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        # Only a new container counts: repeats on an existing workspace are free.
        codes = [(await client.post(CREATE, headers=auth(user))).status_code for _ in range(3)]
        assert codes == [201, 200, 200]
        assert (await client.delete(WORKSPACE, headers=auth(user))).status_code == 200
        assert (await client.post(CREATE, headers=auth(user))).status_code == 201  # the second creation
        assert (await client.delete(WORKSPACE, headers=auth(user))).status_code == 200
        limited = await client.post(CREATE, headers=auth(user))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
        assert limited.json()["error"] == "Rate limit exceeded"



def test_pull_progress_is_one_percentage_that_never_goes_backwards():
    """Docker's pull messages, as the engine streams them for a two-layer
    image (no registry is reachable here, so the stream is replayed)."""
    from services.workspaces import PullProgress
    messages = [
        {"status": "Pulling from library/x", "id": "latest"},
        {"status": "Pulling fs layer", "id": "a"}, {"status": "Pulling fs layer", "id": "b"},
        {"status": "Downloading", "id": "a", "progressDetail": {"current": 50, "total": 100}},
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 10, "total": 100}},
        {"status": "Download complete", "id": "a"},
        {"status": "Extracting", "id": "a", "progressDetail": {"current": 100, "total": 100}},
        {"status": "Pull complete", "id": "a"},
        {"status": "Waiting", "id": "b"},  # a late status for a started layer must not pull it back
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 100, "total": 100}},
        {"status": "Pull complete", "id": "b"},
        {"status": "Digest: sha256:0"}, {"status": "Status: Downloaded newer image for x:latest"},
    ]
    progress = PullProgress()
    seen = [progress.update(message) for message in messages]
    assert seen == sorted(seen) and seen[-1] == 100 and 0 < seen[3] < 50


async def test_stop_or_delete_in_the_middle_of_provisioning_leaves_nothing_running(ws_server, http, servers):
    deleted_user, stopped_user = await register(http), await register(http)
    for user in (deleted_user, stopped_user):
        assert (await http.post(CREATE, headers=auth(user))).status_code == 201
    deleted, stopped = await asyncio.gather(http.delete(WORKSPACE, headers=auth(deleted_user)),
                                            http.post(STOP, headers=auth(stopped_user)))
    assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    await asyncio.sleep(2.5)  # longer than an abandoned run needs to notice
    assert containers_of(servers.instance, f"apranova.user_id={deleted_user['user']['id']}") == []
    running = docker("ps", "-q", "--filter", f"label=apranova.instance={servers.instance}")
    assert running == ""
    assert (await http.get(WORKSPACE, headers=auth(deleted_user))).status_code == 404
    assert (await http.get(WORKSPACE, headers=auth(stopped_user))).json()["state"] == "stopped"
    # and both come back normally
    for user in (deleted_user, stopped_user):
        again = await http.post(CREATE, headers=auth(user), json={"wait": True})
        assert again.json()["state"] == "running", again.text


async def test_shutdown_ends_the_docker_watcher_whenever_it_comes(servers):
    """close() must end the watcher itself, not leave it to the bounded
    wait: right after start-up, while it reconciles under request traffic
    (a PyMongo query there has absorbed the cancellation before), and
    while it follows the event stream."""
    for delay in (0, 0.01, 0.03, 0.1, None):
        server = await servers.start()
        workspaces = server.services.workspaces
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            if delay is None:  # until it is streaming events
                deadline = time.monotonic() + 10
                while not workspaces.engine_connected and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert workspaces.engine_connected
            else:
                await asyncio.gather(*(client.post("/api/users/check-email/", json={"email": f"{n}@example.com"})
                                       for n in range(5)))
                await asyncio.sleep(delay)
        await servers.stop(server)
        left = [task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("workspace-")]
        assert left == [] and not workspaces.engine_connected, (delay, left)


async def test_a_full_port_range_reclaims_the_port_of_the_longest_stopped_workspace(servers):
    port = int(servers.port_range.split("-")[0])
    server = await servers.start(workspace_port_range=f"{port}-{port}")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        first, second = auth(await register(client)), auth(await register(client))
        assert (await client.post(CREATE, headers=first, json={"wait": True})).json()["port"] == port
        assert (await client.post(STOP, headers=first)).json()["state"] == "stopped"

        # The only port belongs to a stopped workspace: the new one takes it.
        taken = (await client.post(CREATE, headers=second, json={"wait": True})).json()
        assert taken["state"] == "running" and taken["port"] == port, taken
        assert await answers_http(port)
        gave_up = (await client.get(WORKSPACE, headers=first)).json()
        assert gave_up["state"] == "stopped" and gave_up["port"] is None and gave_up["url"] is None
        assert gave_up["message"] == "Workspace stopped"  # host ports are the operator's business
        assert "new one when it starts" in (await note_of(server, await client.get("/api/users/profile/",
                                                                                   headers=first)))["detail"]

        # Nothing stopped to take from: a clear failure, and the running one is untouched.
        refused = (await client.post(CREATE, headers=first, json={"wait": True})).json()
        assert refused["state"] == "failed" and "no room for another workspace" in refused["message"], refused
        assert (await client.get(WORKSPACE, headers=second)).json()["state"] == "running"

        # Once the second is stopped, the first takes the port back from it.
        assert (await client.post(STOP, headers=second)).json()["state"] == "stopped"
        again = (await client.post(CREATE, headers=first, json={"wait": True})).json()
        assert again["state"] == "running" and again["port"] == port, again
        assert await answers_http(port)
        assert (await client.get(WORKSPACE, headers=second)).json()["port"] is None
