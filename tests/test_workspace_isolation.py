"""The Docker backend's isolation and hardening, against the real engine:
the network exposure (no published port; one workspace cannot reach
another's IDE, the server reaches both), the non-root user owning its whole
home even on an image without that directory, and a readiness probe that a
mere answer does not fool."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import tempfile
import time
import uuid

import httpx
import pytest

from services import settings as settings_mod
from tests.support.app import auth, register
from tests.support.workspaces import CREATE, create_all, docker, TEST_IMAGE

# Every request answered 403 (busybox httpd's deny-all rule): "something
# else" on the IDE's address, which must not count as a ready IDE.
FORBIDS_ALL = ("/bin/busybox sh -c 'echo D:* > /tmp/httpd.conf; "
               "exec /bin/busybox httpd -f -p 8080 -h /www -c /tmp/httpd.conf'")


def inspect(name: str) -> dict:
    return json.loads(docker("inspect", name))[0]


def reaches(name: str, host: str, port: int) -> bool:
    """From inside container `name`: does host:port answer HTTP? (busybox nc:
    its wget crashes in this static build)."""
    script = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 2 {host} {port}"
    result = subprocess.run(["docker", "exec", name, "/bin/busybox", "sh", "-c", script], capture_output=True,
                            text=True, timeout=30)
    return result.stdout.startswith("HTTP/")


@pytest.mark.docker
async def test_network_exposure_isolates_workspaces_and_publishes_no_port(servers):
    server = await servers.start(workspace_exposure="network")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        users = [await register(client) for _ in range(2)]
        bodies = [(await client.post(CREATE, headers=auth(u), json={"wait": True})).json() for u in users]
        assert [b["state"] for b in bodies] == ["running", "running"], bodies
        # No published port: the url is the workspace's own origin on this server's port (PORT here).
        assert (bodies[0]["url"].split("?ticket=")[0], bodies[0]["port"]) == (f"http://ws-{users[0]['user']['id']}.localhost:8000/", 8000)
        names = [f"{servers.instance}-ws-{u['user']['id']}" for u in users]
        network = f"{servers.instance}-workspaces"
        details = json.loads(docker("network", "inspect", network))[0]
        assert details["Options"]["com.docker.network.bridge.enable_icc"] == "false"
        assert details["Labels"]["apranova.instance"] == servers.instance  # removed by the cleanup
        workspaces = server.services.workspaces
        endpoints = [workspaces.endpoint(await workspaces.find(u["user"]["id"])) for u in users]
        for name, endpoint in zip(names, endpoints):
            info = inspect(name)
            assert not info["HostConfig"].get("PortBindings") and info["NetworkSettings"]["Ports"] == {"8080/tcp": None}
            assert endpoint.host == info["NetworkSettings"]["Networks"][network]["IPAddress"] and endpoint.port == 8080
            assert (await client.get(f"http://{endpoint.host}:{endpoint.port}/healthz")).status_code == 200  # server
        assert reaches(names[1], "127.0.0.1", 8080)  # the probe itself works...
        assert not reaches(names[0], endpoints[1].host, 8080)  # ...but A cannot reach B's IDE
        assert not reaches(names[1], endpoints[0].host, 8080)


def busybox_image(root: str, home_owner: tuple[int, int] | None, applets: tuple[str, ...]) -> str:
    """A busybox stand-in serving /www on 8080, with /home/coder owned by
    `home_owner` (None: no /home at all) and `applets` on PATH; its tag."""
    tag = f"apranova/workspace-test-home:{uuid.uuid4().hex[:8]}"
    os.chmod(root, 0o755)
    os.makedirs(f"{root}/bin")
    os.makedirs(f"{root}/www", mode=0o755)
    os.makedirs(f"{root}/tmp")
    os.chmod(f"{root}/tmp", 0o1777)
    subprocess.run(["cp", "/bin/busybox", f"{root}/bin/busybox"], check=True)
    for applet in applets:
        os.symlink("busybox", f"{root}/bin/{applet}")
    with open(f"{root}/www/healthz", "w") as handle:
        handle.write("ok\n")
    os.chmod(f"{root}/www/healthz", 0o644)
    if home_owner is not None:
        os.makedirs(f"{root}/home/coder/project")
        with open(f"{root}/home/coder/.profile", "w") as handle:
            handle.write("# from the image\n")
        for path in (f"{root}/home/coder", f"{root}/home/coder/project", f"{root}/home/coder/.profile"):
            os.chown(path, *home_owner)
    tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
    command = 'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]'
    subprocess.run(["docker", "import", "--change", command, "-", tag], stdin=tar.stdout, check=True, capture_output=True,
                   timeout=120)
    tar.wait()
    return tag


@pytest.fixture
def images():
    """`images(home_owner, applets)`: busybox stand-ins made for the test, removed after it."""
    made: list[str] = []

    def make(home_owner: tuple[int, int] | None, applets: tuple[str, ...] = ("sh", "chown")) -> str:
        with tempfile.TemporaryDirectory() as root:
            made.append(busybox_image(root, home_owner, applets))
        return made[-1]
    yield make
    for tag in made:
        # Its workspaces first (the servers fixture ends after this one): an image
        # still in use would only lose its tag, left behind untagged.
        for container in docker("ps", "-aq", "--filter", f"ancestor={tag}", check=False).split():
            docker("rm", "-f", "-v", container, check=False)
        docker("rmi", "-f", tag, check=False)


@pytest.fixture
def image_without_home(images):
    """A second stand-in with no /home at all (busybox only, serving / as its page)."""
    return images(None)


def created_since(since: float, role: str) -> list[str]:
    """The names of the containers of `role` (apranova.role) created since `since`."""
    out = docker("events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}", "--filter", "type=container",
                 "--filter", "event=create", "--filter", f"label=apranova.role={role}", "--format",
                 "{{.Actor.Attributes.name}}")
    return out.split()


@pytest.mark.docker
async def test_the_non_root_user_owns_its_home_on_an_image_without_that_directory(servers, image_without_home):
    assert docker("run", "--rm", image_without_home, "/bin/busybox", "ls", "/home", check=False) == ""
    server = await on_image(servers, image_without_home)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        assert body["state"] == "running", body
        name = f"{servers.instance}-ws-{user['user']['id']}"
        docker("exec", name, "/bin/busybox", "sh", "-c",
               "echo mine > /home/coder/x && /bin/busybox mkdir /home/coder/.ssh")
        assert docker("exec", name, "/bin/busybox", "stat", "-c", "%u:%g", "/home/coder") == "1000:1000"
        # The one-shot chown container is gone, and a second start does not need it.
        assert docker("ps", "-aq", "--filter", f"name={name}-home-setup") == ""
        await client.post("/api/users/workspace/stop/", headers=auth(user))
        again = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        assert again["state"] == "running" and docker("exec", name, "/bin/busybox", "cat", "/home/coder/x") == "mine"

        # The server died during a first chown: its one-shot container is left, the home still root's.
        await client.post("/api/users/workspace/stop/", headers=auth(user))
        volume = f"{name}-home"
        docker("run", "--rm", "--label", f"apranova.instance={servers.instance}", "-v", f"{volume}:/h",
               image_without_home, "/bin/busybox", "chown", "-R", "0:0", "/h")
        docker("create", "--name", f"{name}-home-setup", "--label", f"apranova.instance={servers.instance}",
               image_without_home)
        again = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        assert again["state"] == "running", again
        assert docker("exec", name, "/bin/busybox", "stat", "-c", "%u", "/home/coder/x") == "1000"
        assert docker("ps", "-aq", "--filter", f"name={name}-home-setup") == ""


async def on_image(servers, image: str):
    """A server whose workspaces run `image` (made by the test: never pulled)."""
    return await servers.start(workspace_image=image, workspace_pull_policy="never")


async def running_at_once(server, count: int) -> list[str]:
    """`count` new students' first Creates at once on `server`, all running:
    their containers' names."""
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        users = [await register(client) for _ in range(count)]
        bodies = await create_all(client, users)
    assert [body["state"] for body in bodies] == ["running"] * count, bodies
    return [f"{server.services.settings.instance_name}-ws-{user['user']['id']}" for user in users]


@pytest.mark.docker
async def test_a_burst_on_an_image_whose_home_is_the_users_runs_one_probe_and_no_chown(servers, images):
    """Docker copies the image's HOME, owners and all, into a fresh volume:
    no chown container is needed, and a burst of creates shares one probe."""
    image = images((1000, 1000), ("sh", "chown", "find"))
    since = time.time()
    for name in await running_at_once(await on_image(servers, image), 8):
        assert docker("exec", name, "/bin/busybox", "stat", "-c", "%u:%g", "/home/coder") == "1000:1000"
        docker("exec", name, "/bin/busybox", "sh", "-c", "echo mine > /home/coder/x && mkdir /home/coder/.ssh")
        assert docker("exec", name, "/bin/busybox", "cat", "/home/coder/.profile") == "# from the image"
    assert len(created_since(since, "home-probe")) == 1
    assert created_since(since, "home-setup") == []


@pytest.mark.docker
async def test_two_servers_of_one_deployment_probing_at_once_both_skip_the_chown(servers, images):
    """Each server's probe has a name of its own: neither removes the other's."""
    image = images((1000, 1000), ("sh", "chown", "find"))
    since = time.time()
    first, second = [await on_image(servers, image) for _ in range(2)]
    await asyncio.gather(running_at_once(first, 4), running_at_once(second, 4))
    assert 1 <= len(created_since(since, "home-probe")) <= 2
    assert created_since(since, "home-setup") == []


@pytest.mark.docker
async def test_a_burst_on_an_image_whose_home_is_roots_chowns_each_fresh_home(servers, images):
    image = images((0, 0), ("sh", "chown", "find"))
    since = time.time()
    for name in await running_at_once(await on_image(servers, image), 4):
        assert docker("exec", name, "/bin/busybox", "stat", "-c", "%u:%g", "/home/coder/.profile") == "1000:1000"
        docker("exec", name, "/bin/busybox", "sh", "-c", "echo mine > /home/coder/x")
    assert len(created_since(since, "home-probe")) == 1
    assert len(created_since(since, "home-setup")) == 4


@pytest.mark.docker
async def test_a_home_probe_left_by_a_killed_server_is_removed_at_start_up(servers):
    server = await servers.start()
    backend = server.services.workspaces.backend
    labels = [arg for key, value in {**backend.owner.labels(), "apranova.role": "home-probe"}.items()
              for arg in ("--label", f"{key}={value}")]
    docker("create", "--name", f"{servers.instance}-home-probe-left", *labels, TEST_IMAGE)
    others = docker("create", "--name", f"{servers.instance}-home-probe-others", "--label",
                    f"apranova.instance={servers.instance}", "--label", "apranova.role=home-probe",
                    "--label", "apranova.deployment=another-installation", TEST_IMAGE)
    await backend.check()  # what start-up runs
    assert docker("ps", "-aq", "--no-trunc", "--filter", f"label=apranova.instance={servers.instance}",
                  "--filter", "label=apranova.role=home-probe").split() == [others]


@pytest.mark.docker
async def test_a_403_from_something_else_is_not_ready_and_statuses_are_a_setting(servers):
    # 8 s: the 403 must be seen before the deadline even on a busy machine.
    strict = await servers.start(workspace_cmd=FORBIDS_ALL, workspace_ready_timeout="8")
    async with httpx.AsyncClient(base_url=strict.url, timeout=60) as client:
        user = await register(client)
        body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        assert body["state"] == "failed" and "its IDE did not start." in body["message"], body
        detail = (await strict.db.workspace_events.find_one({"kind": "failure"}))["detail"]
        assert "did not answer" in detail and "403" in detail, detail  # the operator's words
    await servers.stop(strict)
    lenient = await servers.start(workspace_cmd=FORBIDS_ALL, workspace_ready_statuses="200,403")
    async with httpx.AsyncClient(base_url=lenient.url, timeout=60) as client:
        user = await register(client)
        assert (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()["state"] == "running"


@pytest.mark.docker
async def test_start_up_warns_once_when_the_image_cannot_be_had(servers, caplog):
    caplog.set_level(logging.WARNING, logger="apranova.workspaces")
    await servers.start(workspace_image="apranova/no-such-image:never", workspace_pull_policy="never")
    warnings = [r.getMessage() for r in caplog.records if "apranova/no-such-image:never" in r.getMessage()]
    assert len(warnings) == 1 and "'never'" in warnings[0], warnings
    caplog.clear()
    await servers.start(workspace_image=TEST_IMAGE, workspace_pull_policy="never")
    assert not [r for r in caplog.records if "WORKSPACE_IMAGE" in r.getMessage()]


@pytest.mark.parametrize("name, value", [
    ("workspace_exposure", "public"), ("workspace_user", "0:0"), ("workspace_user", "root"),
    ("workspace_ready_path", "healthz"), ("workspace_ready_statuses", "ok"), ("workspace_ready_statuses", "200,99"),
    ("workspace_backend", "no.such.module:Backend"),
])
def test_bad_workspace_settings_are_refused(name, value, tmp_path):
    with pytest.raises(settings_mod.SettingsError):
        settings = settings_mod.load(environ={}, **{name: value, "data_dir": str(tmp_path)})
        from services.workspaces import load_backend
        load_backend(settings)
