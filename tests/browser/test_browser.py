"""The browser client (static/) end to end: Debian's Chromium driven by
Playwright against the real app, the real nx-27017 and (for the workspace
journeys) the real Docker engine with the local test image.

Every journey saves screenshots into test-artifacts/ (desktop or phone
width). A few tests stub one HTTP answer with `page.route` (a 401) to drive
the client's token handling; everything else is the real server.
"""
from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from tests.support.accounts import age_refresh_rotations
from tests.support.app import ARTIFACTS, make_admin, register, unique_email
from tests.support.workspaces import containers_of, docker
from tests.support.browser import DESKTOP, EXITS_AT_ONCE, fill_sign_up, log_in, PASSWORD, PHONE, progress, shown_seqs, shown_seqs_end_at, SLOW_START, student_tab, wait_until, wait_until_async


pytestmark = pytest.mark.browser


# -- serving static/ ------------------------------------------------------------------------
async def test_pages_assets_and_api_404(api) -> None:
    for path in ("/", "/login", "/signup", "/profile", "/student/dashboard", "/trainer/dashboard",
                 "/admin/dashboard", "/superadmin/dashboard", "/login/"):
        response = await api.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-cache"
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    page = (await api.get("/")).text
    # CSP-friendly: no inline script or style, no inline handler, no CDN.
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts and all('src="/static/v-' in tag for tag in scripts), scripts
    assert not re.search(r"<style|\son[a-z]+=|https?://", page)
    config = re.search(r'name="apranova-config" content="([^"]+)"', page)[1]
    assert json.loads(config.replace("&quot;", '"'))["tracks"] == {"DP": "Data Professional",
                                                                  "FSD": "Full-Stack Developer"}

    versioned = re.search(r'src="(/static/v-[0-9a-f]{12}/app\.js)"', page)[1]
    response = await api.get(versioned)
    assert response.status_code == 200 and "text/javascript" in response.headers["content-type"]
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    plain = await api.get("/static/js/api.js")
    assert plain.headers["cache-control"] == "no-cache" and plain.headers.get("etag")
    assert (await api.get("/static/js/api.js", headers={"If-None-Match": plain.headers["etag"]})).status_code == 304

    for path, status in (("/api/nothing-here", 404), ("/api/users/login/extra", 404), ("/static/missing.js", 404),
                         ("/nope", 404), ("/static/%2e%2e/server.py", 403), ("/static/.hidden", 404)):
        response = await api.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]
    response = await api.post("/login", json={})
    assert response.status_code == 405 and response.json()["error"] == "Method Not Allowed"
    assert (await api.get("/health")).json() == {"status": "healthy"}
    assert (await api.head("/")).status_code == 200


# -- accounts ----------------------------------------------------------------------------------
async def test_sign_up_shows_api_field_errors_then_the_dashboard(app, open_tab) -> None:
    tab = await open_tab(app.url)
    page = tab.page
    email = unique_email("signup")
    await fill_sign_up(tab, "Ada Lovelace", email, confirm=PASSWORD + "x")
    await page.get_by_label("Trainer").check()
    await page.get_by_label("Track").select_option("FSD")
    await page.get_by_role("button", name="Create account").click()

    error = page.locator("#f-password2-error")
    await error.wait_for(state="visible")
    assert await error.text_content() == "The two password fields didn't match."
    confirm = page.get_by_label("Confirm password")
    assert await confirm.get_attribute("aria-invalid") == "true"
    assert "f-password2-error" in await confirm.get_attribute("aria-describedby")
    assert await page.evaluate("() => document.activeElement.id") == "f-password2"  # focus on the first bad field
    assert await app.db.users.count_documents({"email": email}) == 0
    await tab.shot("signup-field-errors")
    await page.set_viewport_size(PHONE)
    await tab.assert_fits_width()
    await tab.shot("signup-field-errors-phone")
    await page.set_viewport_size(DESKTOP)

    await confirm.fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url("**/trainer/dashboard")
    await page.get_by_role("heading", name="Welcome, Ada Lovelace").wait_for()
    assert "Full-Stack Developer (FSD)" in await page.text_content("main")
    stored = await app.db.users.find_one({"email": email})
    assert (stored["name"], stored["role"], stored["track"]) == ("Ada Lovelace", "trainer", "FSD")
    storage = await tab.storage()
    assert storage["local"] == {}  # nothing outlives the tab
    assert set(storage["session"]) == {"apranova.refresh", "apranova.user"}  # the access token stays in memory
    await tab.shot("signup-dashboard")

    # The profile view, with an edit.
    await page.get_by_role("link", name="Profile", exact=True).click()
    await page.wait_for_url("**/profile")
    await page.locator("#profile-details").get_by_text(email).wait_for()
    await page.get_by_label("Full name").fill("Ada King")
    await page.get_by_role("button", name="Save changes").click()
    await page.get_by_text("Your details were saved.").wait_for()
    assert (await app.db.users.find_one({"email": email}))["name"] == "Ada King"
    await tab.shot("profile")


async def test_wrong_role_login_shows_the_contract_message_by_keyboard(app, api, open_tab) -> None:
    user = await register(api, email=unique_email("kbd"), password=PASSWORD, name="Grace Hopper")
    tab = await open_tab(app.url, viewport=PHONE)
    page = tab.page
    await tab.goto("/login")
    await page.get_by_role("heading", name="Log in").wait_for()
    # Every control has a label.
    unlabelled = await page.evaluate("""() => [...document.querySelectorAll('input, select')]
        .filter(el => !el.labels || el.labels.length === 0).map(el => el.name)""")
    assert unlabelled == []
    # Keyboard only: Tab to the email field, type, Tab on, pick the role with arrows, Enter.
    for _ in range(12):
        await page.keyboard.press("Tab")
        if await page.evaluate("() => document.activeElement.id") == "f-email":
            break
    else:
        raise AssertionError("Tab never reached the email field")
    outline = await page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # visible focus
    await page.keyboard.type(user["user"]["email"])
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Tab")  # the role radios (student is selected)
    await page.keyboard.press("ArrowRight")  # -> trainer
    assert await page.evaluate("() => document.activeElement.value") == "trainer"
    await page.keyboard.press("Enter")

    alert = page.locator("form .form-error")
    await alert.wait_for(state="visible")
    assert "You are registered as 'student' but tried to login as 'trainer'" in await alert.text_content()
    await tab.assert_fits_width()
    await tab.shot("login-wrong-role-phone")

    # The offered fix logs in with the real role and follows redirect_url.
    await page.get_by_role("button", name="Log in as student instead").click()
    await page.wait_for_url("**/student/dashboard")
    await page.get_by_role("heading", name="Welcome, Grace Hopper").wait_for()
    await tab.assert_fits_width()


async def test_dashboards_follow_the_role(app, api, open_tab) -> None:
    student = await register(api, email=unique_email("student"), password=PASSWORD)
    boss = await make_admin(app, api, role="superadmin")
    tab = await open_tab(app.url)
    await log_in(tab, student["user"]["email"])
    await tab.goto("/admin/dashboard")  # not theirs: back to their own
    await tab.page.wait_for_url("**/student/dashboard")
    await tab.page.get_by_role("button", name="Log out").click()
    await tab.page.wait_for_url("**/login")
    # A superadmin may log in under any role and lands on that role's dashboard.
    await log_in(tab, boss["user"]["email"], role="trainer", password=boss["password"])
    await tab.page.get_by_text("Trainer dashboard").wait_for()
    await tab.goto("/login")  # logged in: the login page leads to their own dashboard instead
    await tab.page.wait_for_url("**/superadmin/dashboard")
    await tab.page.get_by_text("Super admin dashboard").wait_for()


async def test_a_401_refreshes_once_shared_by_concurrent_requests(app, api, open_tab) -> None:
    user = await register(api, email=unique_email("refresh"), password=PASSWORD)
    tab = await open_tab(app.url)
    page = tab.page
    await log_in(tab, user["user"]["email"])
    refreshes: list[str] = []
    page.on("request", lambda request: refreshes.append(request.url) if "/token/refresh/" in request.url else None)
    refused = {"count": 0}

    async def refuse_twice(route: Any) -> None:
        if refused["count"] < 2:  # the first two profile requests: the token "expired"
            refused["count"] += 1
            await route.fulfill(status=401, content_type="application/json",
                                body=json.dumps({"error": "Invalid token", "message": "Token expired."}))
        else:
            await route.continue_()

    await page.route("**/api/users/profile/", refuse_twice)
    old_refresh = (await tab.storage())["session"]["apranova.refresh"]
    names = await page.evaluate("""async () => {
        const src = document.querySelector('script[type=module]').src.replace(/app\\.js$/, 'js/api.js');
        const { api } = await import(src);
        const answers = await Promise.all([api('/api/users/profile/'), api('/api/users/profile/')]);
        return answers.map(a => a.email);
    }""")
    assert names == [user["user"]["email"]] * 2
    assert len(refreshes) == 1  # rotation: one refresh for both, or the second would be refused
    new_refresh = (await tab.storage())["session"]["apranova.refresh"]
    assert new_refresh != old_refresh
    await page.unroute("**/api/users/profile/")

    # The old token replayed (as a thief would, after JWT_REFRESH_REUSE_SECONDS)
    # revokes the whole login on the server; the tab's next refresh is refused
    # and it goes to login.
    await age_refresh_rotations(app.db, user["user"]["id"])
    assert (await api.post("/api/auth/token/refresh/", json={"refresh": old_refresh})).status_code == 401
    assert (await api.post("/api/auth/token/refresh/", json={"refresh": new_refresh})).status_code == 401
    await page.reload()  # no access token in memory now: the client must refresh, and fails
    await page.wait_for_url("**/login")
    await page.get_by_text("Your session has ended. Please log in again.").wait_for()
    assert "apranova.refresh" not in (await tab.storage())["session"]
    await tab.shot("session-ended")


async def test_tabs_of_one_login_hand_on_rotated_tokens(app, api, open_tab) -> None:
    """A tab opened by the page starts with a copy of its sessionStorage (the
    same refresh token). Without coordination, the second tab to refresh
    would present a rotated token, and the server would revoke the login."""
    user = await register(api, email=unique_email("tabs"), password=PASSWORD)
    tab = await open_tab(app.url)
    first = tab.page
    await log_in(tab, user["user"]["email"])

    async def token(page: Any) -> str:
        return await page.evaluate("() => sessionStorage.getItem('apranova.refresh')")

    original = await token(first)
    async with tab.context.expect_page() as opened:
        await first.evaluate("() => { window.open(location.href); }")
    second = await opened.value
    errors: list[str] = []
    second.on("pageerror", lambda error: errors.append(str(error)))

    async def rotated_and_shared(before: str, other: Any) -> bool:
        current = await token(first)
        return current != before and current == await token(other)

    # Each load refreshes (no access token in memory yet), and so rotates the
    # token; the other tab must take the new one.
    await second.get_by_role("button", name="Open my workspace").wait_for()
    await wait_until_async(lambda: rotated_and_shared(original, second), what="the first tab to take the new token")
    for page in (first, second, first):
        before = await token(page)
        await page.reload()
        await page.get_by_role("button", name="Open my workspace").wait_for()
        await wait_until_async(lambda: rotated_and_shared(before, second), what="the other tab to take the new token")
    assert (await api.post("/api/auth/token/refresh/", json={"refresh": await token(first)})).status_code == 200
    await age_refresh_rotations(app.db, user["user"]["id"])  # past JWT_REFRESH_REUSE_SECONDS
    await first.reload()  # that refresh rotated it outside both tabs: a 401 now, then the login page
    await first.wait_for_url("**/login")

    # Logging out in one tab ends the login in the other as well.
    await log_in(tab, user["user"]["email"])
    original = await token(first)
    async with tab.context.expect_page() as opened:
        await first.evaluate("() => { window.open(location.href); }")
    third = await opened.value
    await third.get_by_role("button", name="Open my workspace").wait_for()
    await wait_until_async(lambda: rotated_and_shared(original, third), what="the first tab to take the new token")
    await first.get_by_role("button", name="Log out").click()
    await third.wait_for_url("**/login")
    await third.get_by_text("Your session has ended. Please log in again.").wait_for()
    assert not errors


async def test_log_out_revokes_the_refresh_token(app, api, open_tab) -> None:
    user = await register(api, email=unique_email("logout"), password=PASSWORD)
    tab = await open_tab(app.url, viewport=PHONE)
    await log_in(tab, user["user"]["email"])
    refresh = (await tab.storage())["session"]["apranova.refresh"]
    await tab.page.get_by_role("button", name="Log out").click()
    await tab.page.wait_for_url("**/login")
    await tab.page.get_by_text("You have been logged out.").wait_for()
    assert not any(key.startswith("apranova.") for key in (await tab.storage())["session"])
    assert (await api.post("/api/auth/token/refresh/", json={"refresh": refresh})).status_code == 401
    # A dashboard URL now leads to the login page.
    await tab.goto("/student/dashboard")
    await tab.page.wait_for_url("**/login")
    await tab.assert_fits_width()
    await tab.shot("logged-out-phone")


async def test_server_down_message_then_recovery(app, api, open_tab) -> None:
    user = await register(api, email=unique_email("down"), password=PASSWORD)
    tab = await open_tab(app.url)
    page = tab.page
    await tab.goto("/login")
    await page.get_by_role("heading", name="Log in").wait_for()
    port = int(app.url.rsplit(":", 1)[1])
    app.http.stop()
    await app.http.close_all_connections()

    await page.get_by_label("Email").fill(user["user"]["email"])
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    banner = page.locator("#connection-banner")
    await banner.wait_for(state="visible")
    assert "Cannot reach the ApraNova server" in await banner.text_content()
    assert "Cannot reach the ApraNova server" in await page.locator("form .form-error").text_content()
    await tab.shot("server-down")

    # The server comes back on the same port: the banner goes by itself.
    revived = HTTPServer(app.app)
    revived.add_sockets(bind_sockets(port, "127.0.0.1"))
    try:
        await banner.wait_for(state="hidden", timeout=15000)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url("**/student/dashboard")
    finally:
        revived.stop()
        await revived.close_all_connections()


# -- the workspace panel ---------------------------------------------------------------------------
RECORD_PROGRESS = """
new MutationObserver(() => {
  const bar = document.getElementById('ws-progress');
  if (!bar || !bar.isConnected || bar.closest('.progress-box').hidden) return;
  const value = bar.getAttribute('aria-valuenow');
  if (value !== window.__lastProgress) {
    window.__lastProgress = value;
    window.recordProgress(Number(value), bar.closest('[data-state]').dataset.state);
  }
}).observe(document, {subtree: true, childList: true, attributes: true,
                      attributeFilter: ['aria-valuenow', 'data-state', 'hidden']});
"""


@pytest.mark.docker
async def test_open_workspace_survives_a_dropped_socket_and_a_reload(docker_servers, open_tab) -> None:
    server = await docker_servers.start(workspace_cmd=SLOW_START, workspace_ready_timeout="30",
                                        workspace_ide_password="always")  # its password UI is checked below
    tab, user = await student_tab(server, open_tab, permissions=["clipboard-read", "clipboard-write"])
    page = tab.page
    seen: list[tuple[int, str]] = []
    await page.expose_function("recordProgress", lambda value, state: seen.append((value, state)))
    await page.add_init_script(RECORD_PROGRESS)
    await page.reload()
    await page.get_by_role("button", name="Open my workspace").click()

    # Mid-provisioning: waiting for the IDE. First the connection drops...
    await page.locator("#ws-message", has_text="Waiting for the IDE to answer").wait_for()
    assert await page.text_content("#ws-state") == "Starting"
    sockets_before = len(tab.sockets)
    server.services.workspaces.events.disconnect()  # every status socket closes (1001) mid-way
    await wait_until(lambda: len(tab.sockets) > sockets_before, what="a reconnection")
    last_seq = max(await shown_seqs(tab))
    assert tab.sockets[-1].endswith(f"/api/users/workspace/status/?after={last_seq}")

    # ...then the page is reloaded, still mid-way.
    doc = await server.db.workspaces.find_one({"owner_id": user["user"]["id"]})
    assert doc["state"] == "provisioning"
    before_reload = await progress(tab)
    last_seq = max(await shown_seqs(tab))
    await tab.shot("workspace-mid-provisioning")
    await page.reload()
    await page.locator("#workspace").wait_for()
    assert await progress(tab) >= before_reload  # the bar starts where it was
    await wait_until(lambda: any(url.endswith(f"?after={last_seq}") for url in tab.sockets[sockets_before + 1:]),
                     what="a resumed socket")

    link = page.get_by_role("link", name="Open the IDE")
    await link.wait_for(timeout=30000)
    assert await progress(tab) == 100
    assert await page.text_content("#ws-state") == "Running"
    assert await page.get_attribute("#ws-progress", "aria-valuetext") == "100%: Workspace is running"

    # The bar never went back, across the drop and the reload.
    values = [value for value, state in seen if state in ("provisioning", "running")]
    assert values and values[-1] == 100
    assert values == sorted(values), values
    # Every event shown exactly once, none missing: the server's log.
    doc = await server.db.workspaces.find_one({"owner_id": user["user"]["id"]})
    logged = [event["seq"] async for event in server.db.workspace_events.find({"workspace_id": doc["_id"]})
              .sort("seq", 1)]
    assert await shown_seqs(tab) == logged == list(range(1, doc["seq"] + 1))
    # No token in any WebSocket URL: it goes in the first message.
    assert tab.sockets and not any("token" in url or "eyJ" in url for url in tab.sockets)

    # The link and the password are the server's, and the IDE answers at
    # the endpoint the server proxies to.
    workspaces = server.services.workspaces
    url, _ = workspaces.address(doc)
    assert url == f"http://ws-{user['user']['id']}.localhost:8000/" and await link.get_attribute("href") == url
    assert await page.input_value("#ws-password") == workspaces.password(doc)
    endpoint = workspaces.endpoint(doc)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"http://{endpoint.host}:{endpoint.port}/")).status_code == 200
    await page.get_by_role("button", name="Copy").click()
    await page.get_by_text("Password copied.").wait_for()
    assert await page.evaluate("() => navigator.clipboard.readText()") == server.services.workspaces.password(doc)
    await page.get_by_role("button", name="Show").click()
    assert await page.get_attribute("#ws-password", "type") == "text"
    await tab.shot("workspace-running")


@pytest.mark.docker
async def test_stop_then_delete(docker_servers, open_tab) -> None:
    server = await docker_servers.start()
    tab, user = await student_tab(server, open_tab, viewport=PHONE)
    page = tab.page
    await page.get_by_role("button", name="Open my workspace").click()
    await page.get_by_role("link", name="Open the IDE").wait_for(timeout=30000)
    await tab.assert_fits_width()
    await tab.shot("workspace-running-phone")
    name = f"{docker_servers.instance}-ws-{user['user']['id']}"

    await page.get_by_role("button", name="Stop").click()
    await page.locator("#workspace[data-state=stopped]").wait_for()
    assert docker("inspect", "-f", "{{.State.Running}}", name) == "false"
    assert await page.get_by_role("link", name="Open the IDE").count() == 0
    await page.get_by_role("button", name="Start my workspace").wait_for()
    await tab.shot("workspace-stopped-phone")

    async def confirm(dialog: Any) -> None:
        assert dialog.type == "confirm"
        await dialog.accept()

    page.once("dialog", confirm)
    await page.get_by_role("button", name="Delete").click()
    await page.locator("#workspace[data-state=none]").wait_for()
    await page.get_by_role("button", name="Open my workspace").wait_for()
    assert "Workspace deleted; its files are kept" in await page.text_content("#ws-notice")
    assert containers_of(docker_servers.instance) == []
    doc = await server.db.workspaces.find_one({"owner_id": user["user"]["id"]})
    assert doc["state"] == "deleted"
    await tab.shot("workspace-deleted-phone")

    # Made again after the delete: a fresh run from its own first step.
    await page.get_by_role("button", name="Open my workspace").click()
    await page.get_by_role("link", name="Open the IDE").wait_for(timeout=30000)
    doc = await server.db.workspaces.find_one({"owner_id": user["user"]["id"]})
    shown = await shown_seqs(tab)
    assert shown == list(range(shown[0], doc["seq"] + 1)) and shown[0] > 1
    assert (await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": shown[0]}))["message"] \
        == "Workspace requested"


@pytest.mark.docker
async def test_server_outage_on_the_dashboard_then_the_missed_events(docker_servers, open_tab) -> None:
    server = await docker_servers.start()
    tab, user = await student_tab(server, open_tab)
    page = tab.page
    await page.get_by_role("button", name="Open my workspace").click()
    await page.get_by_role("link", name="Open the IDE").wait_for(timeout=30000)
    shown_before = await shown_seqs(tab)

    port = int(server.url.rsplit(":", 1)[1])
    server.http.stop()
    await server.http.close_all_connections()
    server.services.workspaces.events.disconnect()  # upgraded sockets are not the HTTP server's
    banner = page.locator("#connection-banner")
    await banner.wait_for(state="visible")
    await page.locator("#ws-live").wait_for(state="visible")  # "Reconnecting…"
    await tab.shot("workspace-server-down")
    # While the browser cannot reach it, the workspace is stopped (by an admin, say).
    await server.services.workspaces.stop(user["user"]["id"])

    revived = HTTPServer(server.app)
    revived.add_sockets(bind_sockets(port, "127.0.0.1"))
    try:
        await banner.wait_for(state="hidden", timeout=15000)
        await page.locator("#workspace[data-state=stopped]").wait_for(timeout=15000)
        assert tab.sockets[-1].endswith(f"?after={shown_before[-1]}")
        doc = await server.db.workspaces.find_one({"owner_id": user["user"]["id"]})
        # The snapshot may show "stopped" a moment before the replayed events are listed.
        await wait_until_async(lambda: shown_seqs_end_at(tab, doc["seq"]), what="the missed events")
        assert await shown_seqs(tab) == list(range(shown_before[0], doc["seq"] + 1))  # the missed ones, once
        assert await page.locator("#ws-live").is_hidden()
    finally:
        revived.stop()
        await revived.close_all_connections()


@pytest.mark.docker
async def test_failure_shows_the_server_message_and_retry_works(docker_servers, open_tab) -> None:
    server = await docker_servers.start(workspace_cmd=EXITS_AT_ONCE, workspace_ready_timeout="15")
    tab, user = await student_tab(server, open_tab)
    page = tab.page
    await page.get_by_role("button", name="Open my workspace").click()
    error = page.locator("#ws-error")
    await error.wait_for(state="visible", timeout=30000)
    doc = await server.db.workspaces.find_one({"owner_id": user["user"]["id"]})
    assert doc["state"] == "failed"
    assert doc["message"] in await error.text_content()
    assert doc["message"].startswith("Your workspace could not start") and "exit code" not in doc["message"]
    assert "exited while starting" in doc["note"]["detail"]  # the operator's words stay off the page
    await tab.shot("workspace-failed")

    # The operator fixes the image's command; "Try again" now succeeds.
    provisioner = server.services.workspaces.provisioner  # it builds each run's IDE spec (spec.py)
    provisioner.settings = provisioner.settings.replace(workspace_cmd="")
    await page.get_by_role("button", name="Try again").click()
    await page.get_by_role("link", name="Open the IDE").wait_for(timeout=30000)
    assert await error.is_hidden()
    assert await progress(tab) == 100


@pytest.mark.docker
async def test_open_the_ide_through_the_proxy_on_its_own_origin(docker_servers, open_tab) -> None:
    """The dashboard's "Open the IDE" asks for a one-time ticket and opens the
    workspace on its own origin (ws-<id>.localhost: Chromium resolves it to
    loopback); the ticket leaves the address bar and becomes a host cookie."""
    server = await docker_servers.start()
    tab, user = await student_tab(server, open_tab)
    await tab.page.get_by_role("button", name="Open my workspace").click()
    link = tab.page.get_by_role("link", name="Open the IDE")
    await link.wait_for(timeout=30000)
    async with tab.context.expect_page() as opened:
        await link.click()
    ide = await opened.value
    port = server.url.rsplit(":", 1)[1]
    await ide.wait_for_url(f"http://ws-{user['user']['id']}.localhost:{port}/")
    assert "apranova test workspace" in await ide.content()
    assert await ide.evaluate("() => window.opener") is None
    cookies = await tab.context.cookies(f"http://ws-{user['user']['id']}.localhost:{port}/")
    assert [c["name"] for c in cookies] == ["apranova_ws"] and cookies[0]["httpOnly"]
    assert await tab.context.cookies(server.url) == []  # host-only: the API's origin never gets it
    await ide.screenshot(path=str(ARTIFACTS / "browser-ide-through-proxy.png"))
