"""Idle culling on the real Docker engine with the busybox stand-in image:
the culled workspace's container is stopped (not removed), its home volume
and the files in it are kept, and starting it again brings them back."""
from __future__ import annotations

import httpx
import pytest

from tests.support.app import auth, register
from tests.support.workspaces import docker, Socket

pytestmark = pytest.mark.docker
CREATE = "/api/users/workspace/create/"


async def test_a_real_idle_workspace_is_stopped_with_its_files_kept(servers):
    server = await servers.start(workspace_idle_timeout="3", workspace_idle_warning="2",
                                 workspace_cull_interval="0.2")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        user = await register(http)
        uid = user["user"]["id"]
        name, volume = f"{servers.instance}-ws-{uid}", f"{servers.instance}-ws-{uid}-home"
        running = await http.post(CREATE, headers=auth(user), json={"wait": True})
        assert running.json()["state"] == "running", running.text
        docker("exec", name, "/bin/busybox", "sh", "-c", "echo kept > /home/coder/notes.txt")
        socket = await Socket.open(server, token=user["access"])
        seen = await socket.until(lambda m: m.get("state") == "stopped", timeout=20)
        assert [m["kind"] for m in seen if m.get("kind") in ("warning", "info")] == ["warning"]
        assert seen[-1]["reason"] == "idle" and seen[-1]["message"] == \
            "Stopped after 3 seconds without activity. Your files are kept."
        assert docker("inspect", "-f", "{{.State.Running}}", name) == "false", "stopped, not removed"
        assert docker("volume", "inspect", "-f", "{{.Name}}", volume) == volume
        again = await http.post(CREATE, headers=auth(user), json={"wait": True})
        assert again.status_code == 200 and again.json()["state"] == "running", again.text
        assert docker("exec", name, "/bin/busybox", "cat", "/home/coder/notes.txt") == "kept"
