"""The original frontend's "Open workspace" button (issue 21 §5): it does
`window.open(url)` with the `url` of the create/GET answer and never asks
/api/users/workspace/open/ for a ticket. The owner's create/GET url carries
a one-time ticket (proxy/owner_url.py): single use, short life,
bound to the login session, never in an admin's read, never logged. The
workspace is the loopback stand-in of tests/test_proxy.py."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from tornado import web
from tornado.testing import bind_unused_port

from handlers import make_app
from proxy.server import ProxyHTTPServer
from services.container import Services

from tests.support.app import app_settings, auth, make_admin, register, RunningServer
from tests.support.fake_server import close, listen
from tests.support.proxy import NO_DOCKER, redeem, workspace_get
from tests.support.proxy import give_workspace as give_bare_workspace

WORKSPACE = "/api/users/workspace/"


@pytest.fixture
async def owner_server(start_server, upstream) -> AsyncIterator[tuple[Any, httpx.AsyncClient, int]]:  # noqa: F811
    server = await start_server(**NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield server, client, upstream[0]


async def give_workspace(server: Any, user_id: int, port: int) -> None:
    """test_proxy's running workspace document, with the times a GET shows."""
    await give_bare_workspace(server, user_id, port)
    now = "2026-01-01T00:00:00Z"
    await server.db.workspaces.update_one({"owner_id": user_id}, {"$set": {"created_at": now, "updated_at": now}})


def ticket_of(url: str) -> str | None:
    return parse_qs(urlsplit(url).query).get("ticket", [None])[0]


async def test_the_owners_get_and_create_urls_open_the_ide_once(owner_server, caplog) -> None:
    server, client, port = owner_server
    caplog.set_level(logging.DEBUG)
    student = await register(client)
    uid = student["user"]["id"]
    await give_workspace(server, uid, port)
    got = (await client.get(WORKSPACE, headers=auth(student))).json()
    url = got["url"]
    assert url.startswith(f"http://ws-{uid}.localhost:8000/?ticket=") and got["port"] == 8000
    response, cookie = await redeem(server, url)
    assert response.status_code == 302 and response.headers["location"] == "/" and cookie
    page = await workspace_get(server, urlsplit(url).netloc, "/", cookie)
    assert page.status_code == 200 and page.json()["uri"] == "/"  # the IDE, no sign-in page
    again, _ = await redeem(server, url)
    assert again.status_code == 401  # single use
    fresh = (await client.get(WORKSPACE, headers=auth(student))).json()["url"]
    assert ticket_of(fresh) and ticket_of(fresh) != ticket_of(url)  # every answer its own ticket
    assert (await redeem(server, fresh))[0].status_code == 302
    for record in caplog.records:  # the server's logs: response bodies and query strings never
        if not record.name.startswith(("apranova", "tornado")):
            continue  # the test's own HTTP client logs the URLs it fetches
        assert ticket_of(url) not in record.getMessage() and ticket_of(fresh) not in record.getMessage()


async def test_the_create_answer_carries_a_ticket_too(start_server) -> None:
    server = await start_server(workspace_backend="tests.support.fake_backend:FakeBackend",
                                instance_name=f"opn{random.randrange(16**8):08x}")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        student = await register(client)
        created = await client.post("/api/users/workspace/create/", headers=auth(student), json={})
        assert created.status_code == 201, created.text
        url = created.json()["url"]
        assert url.startswith(f"http://ws-{student['user']['id']}.localhost:8000/?ticket="), url
        ticket = await server.db.workspace_tickets.find_one({"owner_id": student["user"]["id"]})
        assert ticket["session_id"] and ticket["_id"] != ticket_of(url)  # bound to the login; only its hash
        lifetime = (ticket["expires_at"] - dt.datetime.now(dt.timezone.utc)).total_seconds()
        assert 290 < lifetime <= 300  # PROXY_URL_TICKET_SECONDS
        response, cookie = await redeem(server, url)
        assert response.status_code == 302 and cookie


async def test_no_ticket_in_an_admins_read_or_for_another_workspace(owner_server) -> None:
    server, client, port = owner_server
    student, admin = await register(client), await make_admin(server, client)
    await give_workspace(server, student["user"]["id"], port)
    read = await client.get(WORKSPACE, params={"user_id": student["user"]["id"]}, headers=auth(admin))
    assert read.status_code == 200 and read.json()["url"] == f"http://ws-{student['user']['id']}.localhost:8000/"
    other = await register(client)
    await give_workspace(server, other["user"]["id"], port)
    stolen = (await client.get(WORKSPACE, headers=auth(student))).json()["url"]
    # The student's ticket presented on another workspace's host opens nothing.
    response = await workspace_get(server, f"ws-{other['user']['id']}.localhost:8000",
                                   f"/?ticket={ticket_of(stolen)}")
    assert response.status_code == 401


async def test_the_ticket_is_bound_to_the_login_and_short_lived(start_server, upstream) -> None:  # noqa: F811
    server = await start_server(**NO_DOCKER, proxy_url_ticket_seconds="1")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        student = await register(client)
        await give_workspace(server, student["user"]["id"], upstream[0])
        url = (await client.get(WORKSPACE, headers=auth(student))).json()["url"]
        logout = await client.post("/api/users/logout/", headers=auth(student), json={"refresh": student["refresh"]})
        assert logout.status_code == 200
        _, cookie = await redeem(server, url)
        host = urlsplit(url).netloc
        assert (await workspace_get(server, host, "/", cookie)).status_code == 401  # its login is gone
        login = await client.post("/api/users/login/", json={"email": student["user"]["email"],
                                                             "password": student["password"], "role": "student"})
        url = (await client.get(WORKSPACE, headers=auth(login.json()))).json()["url"]
        await asyncio.sleep(2.1)
        assert (await redeem(server, url))[0].status_code == 401  # expired


async def test_zero_turns_the_ticket_off(start_server, upstream) -> None:  # noqa: F811
    server = await start_server(**NO_DOCKER, proxy_url_ticket_seconds="0")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        student = await register(client)
        await give_workspace(server, student["user"]["id"], upstream[0])
        got = (await client.get(WORKSPACE, headers=auth(student))).json()
        assert got["url"] == f"http://ws-{student['user']['id']}.localhost:8000/"
        assert await server.db.workspace_tickets.count_documents({}) == 0


# -- in Chromium: the Open button -----------------------------------------------------------
DASHBOARD = """<!doctype html><title>Student dashboard</title><button id="open" disabled>Open workspace</button>
<script>
const params = new URLSearchParams(location.search);
let workspace = null;
fetch(params.get("api") + "/api/users/workspace/", {headers: {Authorization: "Bearer " + params.get("token")}})
  .then((response) => response.json()).then((data) => {
    workspace = data;
    document.getElementById("open").disabled = false;
  });
document.getElementById("open").onclick = () => window.open(workspace.url, "_blank");
</script>"""


class Dashboard(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.write(DASHBOARD)


@pytest.fixture
async def on_its_port(mongo, tmp_path, upstream) -> AsyncIterator[RunningServer]:  # noqa: F811
    """The app listening on the very PORT its settings name, so that the
    contract's url (http://ws-<id>.localhost:<PORT>/) reaches it."""
    sock, port = bind_unused_port()
    settings = app_settings(mongo, tmp_path, port=str(port), cors_origins="*", **NO_DOCKER,
                             instance_name=f"opn{random.randrange(16**8):08x}")
    services = await Services(settings).start()
    http = ProxyHTTPServer(make_app(services), max_body_size=64 * 1024 * 1024)
    http.add_sockets([sock])
    server = RunningServer(f"http://127.0.0.1:{port}", services, None, http)
    yield server
    await server.stop()


@pytest.mark.browser
async def test_the_open_button_lands_in_the_workspace(browser, on_its_port, upstream) -> None:  # noqa: F811
    server = on_its_port
    http, frontend = listen(web.Application([(r"/student/dashboard", Dashboard)]))
    context = await browser.new_context()
    context.set_default_timeout(15000)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            student = await register(client)
        uid = student["user"]["id"]
        await give_workspace(server, uid, upstream[0])
        page = await context.new_page()
        await page.goto(f"{frontend.replace('127.0.0.1', 'localhost')}/student/dashboard"
                        f"?api={server.url}&token={student['access']}")
        button = page.locator("#open")
        await button.and_(page.locator(":enabled")).wait_for()
        async with context.expect_page() as opened:
            await button.click()
        ide = await opened.value
        await ide.wait_for_load_state()
        port = server.url.rsplit(":", 1)[1]
        assert ide.url == f"http://ws-{uid}.localhost:{port}/"  # the ticket spent and gone from the address
        body = await ide.inner_text("body")
        assert '"uri": "/"' in body and "Sign in" not in body, body
        cookies = await context.cookies(f"http://ws-{uid}.localhost:{port}/")
        assert [c["name"] for c in cookies if c["name"].startswith("apranova")] == ["apranova_ws"]
    finally:
        await context.close()
        await close(http)
