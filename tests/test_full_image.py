"""The image ./scripts/run builds, WORKSPACE_IMAGE's default (the full
code-server image: Python, Node.js, Java, gcc), provisioned through the API
by the real app and answering through the server's proxy: the path a new
operator's first student takes. scripts/test-env.sh builds it once per
machine (minutes cold, seconds once the slim image's cache is there)."""
from __future__ import annotations

import httpx
import pytest

from services.settings import SETTINGS
from tests.support.app import auth, register, require_or_skip
from tests.support.proxy import host_of, open_url, redeem, workspace_get
from tests.support.workspaces import CREATE, docker

pytestmark = pytest.mark.docker
FULL_IMAGE = next(s.default for s in SETTINGS if s.name == "WORKSPACE_IMAGE")


async def test_a_workspace_on_the_full_image_answers_through_the_proxy_with_its_tools(servers):
    require_or_skip(bool(docker("image", "ls", "-q", FULL_IMAGE, check=False)),
                    f"the full image {FULL_IMAGE} (run workspace-image/build-offline.sh)")
    server = await servers.start(workspace_image=FULL_IMAGE, workspace_memory="1g", workspace_pids="512",
                                 workspace_cpus="1", workspace_ready_timeout="120", workspace_wait_timeout="150")
    async with httpx.AsyncClient(base_url=server.url, timeout=160) as client:
        user = await register(client)
        created = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        assert created["state"] == "running", created
        _, cookie = await redeem(server, await open_url(client, user))
    host = host_of(server, user["user"]["id"])
    page = await workspace_get(server, host, "/", cookie)
    if page.is_redirect:  # code-server sends "/" to the folder it opens
        location = httpx.URL(page.headers["location"])
        assert "login" not in location.path, location  # no login of its own behind the proxy
        page = await workspace_get(server, host, location.raw_path.decode(), cookie)
    # code-server's workbench page
    assert page.status_code == 200 and "workbench" in page.text, page.text[:300]
    name = f"{servers.instance}-ws-{user['user']['id']}"
    tools = docker("exec", name, "sh", "-c", "python3 --version; node --version; java -version 2>&1 | head -1; "
                                             "gcc --version | head -1; id -un")
    for expected in ("Python 3", "v20.", "openjdk", "gcc", "coder"):
        assert expected in tools, tools
