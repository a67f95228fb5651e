"""The original frontend in two tabs (issue 21 §1): its axios interceptor
refreshes on every 401 with whatever refresh token localStorage holds, with
no coordination between tabs, so one login's tokens chain within about
150 ms (R2->R3 twice, R3->R4 twice, R4->R5) and a late request presents R3.
Inside JWT_REFRESH_REUSE_SECONDS any token of that recent chain gets the
login's current pair; outside it reuse still revokes the login."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any, AsyncIterator

import httpx
import jwt
import pytest
from tornado import web

from tests.support.accounts import age_refresh_rotations, craft_token
from tests.support.app import auth, register
from tests.support.fake_server import close, listen
from tests.support.browser import XHR_REQUEST


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/users/refresh/", json={"refresh": token})


async def twice(one: httpx.AsyncClient, other: httpx.AsyncClient, token: str) -> dict:
    """The same refresh token from two tabs at once, to two server processes."""
    first, second = await asyncio.gather(refresh(one, token), refresh(other, token))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json() == second.json()  # the same bytes again
    return first.json()


@pytest.fixture
async def two_servers(start_server) -> AsyncIterator[tuple[Any, httpx.AsyncClient, httpx.AsyncClient]]:
    """Two servers on one database, each with its own caches: two processes
    behind one load balancer, as far as the session state is concerned."""
    database = f"tabs_{uuid.uuid4().hex[:8]}"
    one, other = await start_server(mongodb_db=database), await start_server(mongodb_db=database)
    async with httpx.AsyncClient(base_url=one.url, timeout=30) as a, \
            httpx.AsyncClient(base_url=other.url, timeout=30) as b:
        yield one, a, b


async def test_the_two_tab_chain_keeps_the_login(two_servers) -> None:
    server, a, b = two_servers
    data = await register(a)
    r2 = (await refresh(a, data["refresh"])).json()
    r3 = await twice(a, b, r2["refresh"])
    r4 = await twice(b, a, r3["refresh"])
    r5 = (await refresh(a, r4["refresh"])).json()
    late = await refresh(b, r3["refresh"])  # another tab's request, late
    assert late.status_code == 200, late.text
    assert late.json() == r5  # the login's current pair, not a new one
    older = await refresh(a, r2["refresh"])
    assert older.status_code == 200 and older.json() == r5
    for client in (a, b):
        assert (await client.get("/api/users/profile/", headers=auth(r5))).status_code == 200
    # The chain goes on rotating as usual.
    r6 = (await refresh(b, r5["refresh"])).json()
    assert r6 != r5 and (await a.get("/api/users/profile/", headers=auth(r6))).status_code == 200


async def test_outside_the_window_a_chain_token_still_revokes(two_servers) -> None:
    server, a, b = two_servers
    data = await register(a)
    r2 = (await refresh(a, data["refresh"])).json()
    r3 = await twice(a, b, r2["refresh"])
    r4 = (await refresh(b, r3["refresh"])).json()
    await age_refresh_rotations(server.db, data["user"]["id"], seconds=11)  # the default window is 10 s
    late = await refresh(a, r2["refresh"])
    assert late.status_code == 401 and late.json()["error"] == "Token reused", late.text
    for client in (a, b):  # every process sees the revoked login
        assert (await client.get("/api/users/profile/", headers=auth(r4))).status_code == 401
        assert (await refresh(client, r4["refresh"])).status_code == 401


async def test_a_token_never_of_the_chain_is_refused(two_servers) -> None:
    """A refresh token of another login, or a forged jti, gets no pair."""
    server, a, b = two_servers
    data = await register(a)
    (await refresh(a, data["refresh"])).json()
    session = await server.db.sessions.find_one({"user_id": data["user"]["id"]})
    forged = craft_token({"sub": str(data["user"]["id"]), "type": "refresh", "sid": session["_id"]})
    answer = await refresh(b, forged)
    assert answer.status_code == 401 and answer.json()["error"] == "Token reused"


# -- the two tabs in Chromium ---------------------------------------------------------------
# One page of the original frontend on load: its requests go out at once; the
# axios response interceptor, on a 401, reads the refresh token from
# localStorage (shared by the tabs), POSTs /api/users/refresh/, stores the
# new pair and retries; a failed refresh clears the tokens and goes to /login.
TAB_PAGE = """<!doctype html><title>dashboard</title><script>
const xhr = """ + XHR_REQUEST + """;
const api = new URLSearchParams(location.search).get("api");
async function call(path) {
  let answer = await xhr("GET", api + path, null, localStorage.getItem("access_token"));
  if (answer.status !== 401) return answer.status;
  const renewed = await xhr("POST", api + "/api/users/refresh/",
                            {refresh: localStorage.getItem("refresh_token")}, null);
  if (renewed.status !== 200) {
    localStorage.removeItem("access_token"); localStorage.removeItem("refresh_token");
    return "logged out: " + renewed.status + " " + (renewed.data ? renewed.data.error : renewed.error);
  }
  localStorage.setItem("access_token", renewed.data.access);
  localStorage.setItem("refresh_token", renewed.data.refresh);
  answer = await xhr("GET", api + path, null, renewed.data.access);
  return answer.status;
}
window.done = Promise.all(["/api/users/profile/", "/api/payments/my-payments/", "/api/users/profile/",
                           "/api/payments/my-payments/"].map((path, i) =>
  new Promise((resolve) => setTimeout(resolve, i * 20)).then(() => call(path))));
</script>"""


class TabPage(web.RequestHandler):
    def get(self, page: str) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.write(TAB_PAGE if page else "<!doctype html><title>home</title>")


@pytest.fixture
async def frontend_origin() -> AsyncIterator[str]:
    http, url = listen(web.Application([(r"/(dashboard)?", TabPage)]))
    yield url.replace("127.0.0.1", "localhost")
    await close(http)


def expired_access(user_id: int, session_id: str) -> str:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    return craft_token({"sub": str(user_id), "sid": session_id, "iat": past, "exp": past + dt.timedelta(hours=1)})


# Chromium aborts requests in flight when the machine's interfaces change
# (net::ERR_NETWORK_CHANGED): on a shared test machine other tests make and
# remove Docker networks and veth pairs. The replayed client then logs out,
# as the original would after any network error; such a trial says nothing
# about the server, so it is done again on a new login (at most MAX_VOID).
MAX_VOID = 10


async def seed(server: Any, tabs: list, email: str, password: str) -> tuple[int, str]:
    """A new login of the user, its refresh token in the tabs' localStorage."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        login = (await client.post("/api/users/login/", json={"email": email, "password": password,
                                                              "role": "student"})).json()
    await tabs[0].evaluate("([r]) => localStorage.setItem('refresh_token', r)", [login["refresh"]])
    claims = jwt.decode(login["refresh"], options={"verify_signature": False})
    return int(claims["sub"]), claims["sid"]


@pytest.mark.browser
async def test_two_tabs_stay_logged_in(browser, start_server, frontend_origin) -> None:  # noqa: F811
    server = await start_server(cors_origins=frontend_origin)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        data = await register(client)
    context = await browser.new_context()
    context.set_default_timeout(15000)
    try:
        tabs = [await context.new_page(), await context.new_page()]
        failures: list[str] = []
        for tab in tabs:
            tab.on("requestfailed", lambda r: failures.append(f"{r.method} {r.url.split('?')[0]} {r.failure}"))
        await tabs[0].goto(frontend_origin + "/")
        user_id, session_id = await seed(server, tabs, data["user"]["email"], data["password"])
        passed = voided = 0
        while passed < 20:
            failures.clear()
            await tabs[0].evaluate("([a]) => localStorage.setItem('access_token', a)",
                                   [expired_access(user_id, session_id)])
            url = f"{frontend_origin}/dashboard?api={server.url}&trial={passed}.{voided}"
            await asyncio.gather(*(tab.goto(url) for tab in tabs))
            results = await asyncio.gather(*(tab.evaluate("window.done") for tab in tabs))
            if results != [[200] * 4] * 2 and any("ERR_NETWORK_CHANGED" in f for f in failures):
                voided += 1
                assert voided <= MAX_VOID, f"the network kept changing: {failures}"
                user_id, session_id = await seed(server, tabs, data["user"]["email"], data["password"])
                continue
            assert results == [[200] * 4] * 2, f"trial {passed}: {results} {failures}"
            passed += 1
        stored = await tabs[1].evaluate("localStorage.getItem('access_token')")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {stored}"})
                    ).status_code == 200
    finally:
        await context.close()


async def test_the_chain_across_worker_processes(tmp_path, mongo) -> None:
    """`--workers 2`: two real processes on one port, every request on a new
    connection (the kernel spreads them), the session state in MongoDB."""
    from tests.support.processes import ServerProcesses
    processes = ServerProcesses(tmp_path / "data")
    try:
        server = processes(MONGODB_URI=mongo.uri, MONGODB_DB=f"workers_{uuid.uuid4().hex[:8]}", WORKERS="2")
        await asyncio.get_running_loop().run_in_executor(None, server.wait_ready)
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=fresh) as a, \
                httpx.AsyncClient(base_url=server.url, timeout=30, limits=fresh) as b:
            data = await register(a)
            r2 = (await refresh(a, data["refresh"])).json()
            r3 = await twice(a, b, r2["refresh"])
            r4 = await twice(b, a, r3["refresh"])
            r5 = (await refresh(a, r4["refresh"])).json()
            lates = await asyncio.gather(*(refresh(client, r3["refresh"]) for client in (a, b, a, b)))
            assert all(late.status_code == 200 and late.json() == r5 for late in lates), [x.text for x in lates]
            for client in (a, b, a, b):
                assert (await client.get("/api/users/profile/", headers=auth(r5))).status_code == 200
    finally:
        for started in processes.started:
            started.stop()  # SIGTERM: the parent stops its workers
        processes.kill_all()
