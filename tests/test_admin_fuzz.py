"""Schemathesis over the admin and trainer endpoints with an admin's token
(the main fuzz run uses a student's, so there they only answer 403): every
answer matches its documented status and schema, no 5xx. Without Docker
the workspace actions answer their documented 503. The admin cannot lock
itself out (nobody disables, deletes or, as an admin, re-roles themselves),
which the last request checks."""
from __future__ import annotations

import httpx

from tests.support.app import auth, make_admin
from tests.support.fuzz import fuzzed_operations, NO_DOCKER, operations_of, run_schemathesis


async def test_schemathesis_on_the_admin_api_as_an_admin(start_server, tmp_path):
    server = await start_server(docker_host=NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        admin = await make_admin(server, client)
        document = (await client.get("/api/openapi.json")).json()
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.not_a_server_error]\nexpected-statuses = ["2xx", "3xx", "4xx", "503"]\n')
    tags = ("admin", "trainer")
    code, output = await run_schemathesis(
        server.url, "--header", f"Authorization: {auth(admin)['Authorization']}",
        *[arg for tag in tags for arg in ("--include-tag", tag)], report="admin", config=config)
    assert code == 0, output[-6000:]
    assert fuzzed_operations("admin") == operations_of(document, tags, tagged=True)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        me = await client.get(f"/api/admin/users/{admin['user']['id']}/", headers=auth(admin))
        assert me.status_code == 200 and me.json()["role"] == "admin" and not me.json()["disabled"]
