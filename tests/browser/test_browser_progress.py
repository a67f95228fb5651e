"""The student's view of progress and failure (issue 13) in Chromium: a
failed start with the student's message (a reference, no operator detail)
and a visible retry as run 2, the stopping bar, Restart, the remembered
auto-open choice, no console 404 for a new student, and the one live region.

Most journeys run on the in-memory backend (tests/support/fake_backend.py, its
`fail_with` and `gate` switches) for speed; Restart and auto-open run on
real Docker and open the real IDE through the proxy. Screenshots at
1280x800 and 390x844 go to test-artifacts/progress-*.png."""
from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import httpx
import pytest

from tests.support.app import ARTIFACTS, register, unique_email
from tests.support.browser import log_in, PASSWORD, progress, shown_seqs, SLOW_START, Tab

pytestmark = pytest.mark.browser
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
FAKE = "tests.support.fake_backend:FakeBackend"
# What a student must never read: the engine's words.
OPERATOR_WORDS = ("27101", "pull policy", "apranova/", "Docker", "exit code", "port ")

# Every text the live region is given, in order (it is in the page from the start).
RECORD_ANNOUNCEMENTS = """
window.__announced = [];
window.__regionAtStart = null;
const watch = () => {
  const region = document.getElementById('ws-announce');
  if (!region) return false;
  if (window.__regionAtStart === null) window.__regionAtStart = region.textContent;
  new MutationObserver(() => window.__announced.push(region.textContent))
    .observe(region, {childList: true, characterData: true, subtree: true});
  return true;
};
const waiting = new MutationObserver(() => { if (watch()) waiting.disconnect(); });
document.addEventListener('DOMContentLoaded', () => {
  if (!watch()) waiting.observe(document.body, {childList: true, subtree: true});
});
"""
# The bar as each render leaves it while stopping.
RECORD_STOPPING = """
window.__stopping = [];
new MutationObserver(() => {
  const panel = document.getElementById('workspace');
  if (!panel || panel.dataset.state !== 'stopping') return;
  const bar = document.getElementById('ws-progress');
  window.__stopping.push({value: bar.getAttribute('aria-valuenow'),
                          text: document.getElementById('ws-percent').textContent,
                          indeterminate: bar.classList.contains('indeterminate')});
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


@pytest.fixture
async def fake_server(start_server) -> Any:
    return await start_server(workspace_backend=FAKE, instance_name=f"brp{random.randrange(16**8):08x}")


async def student(server: Any, open_tab: Any, viewport: dict = DESKTOP, **options: Any) -> tuple[Tab, dict, dict]:
    """A new student's tab; `seen` collects console errors and HTTP answers >= 400."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client, email=unique_email("prog"), password=PASSWORD, name="Rosa Student")
    tab = await open_tab(server.url, viewport=viewport, **options)
    seen: dict[str, list[str]] = {"console": [], "responses": []}
    tab.page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    tab.page.on("response", lambda r: seen["responses"].append(f"{r.status} {r.url}") if r.status >= 400 else None)
    tab.page.on("requestfailed", lambda r: seen["responses"].append(f"failed {r.url}"))
    await tab.page.add_init_script(RECORD_ANNOUNCEMENTS)
    await log_in(tab, user["user"]["email"])
    await tab.page.locator("#workspace").wait_for()
    return tab, user, seen


async def shot(tab: Tab, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await tab.page.screenshot(path=str(ARTIFACTS / f"progress-{name}.png"), full_page=True)


async def run_titles(tab: Tab) -> list[str]:
    return await tab.page.eval_on_selector_all(".run-title", "els => els.map(e => e.textContent)")


async def test_a_new_students_dashboard_asks_no_404_and_announces_each_state_once(fake_server, open_tab) -> None:
    tab, user, seen = await student(fake_server, open_tab)
    page = tab.page
    await page.get_by_role("button", name="Open my workspace").wait_for()
    # The socket said "no workspace" (4404): no GET of a missing workspace, nothing in the console.
    assert not seen["responses"] and not seen["console"], seen
    region = page.locator("#ws-announce")
    assert await region.get_attribute("role") == "status" and await region.get_attribute("aria-live") == "polite"
    assert await page.evaluate("() => window.__regionAtStart") == ""  # present, and empty, before any text

    await page.get_by_role("button", name="Open my workspace").click()
    await page.get_by_role("link", name="Open the IDE").wait_for()
    announced = await page.evaluate("() => window.__announced")
    assert announced[-1] == "Running, ready to open", announced  # network exposure: no IDE password
    assert announced[0].startswith("Starting: "), announced
    assert len(announced) == len(set(announced)), announced  # each distinct text written once
    # Steps name what happens in the student's words, with a duration each, under "Start 1 · hh:mm:ss".
    # (A fast start's snapshot may say "running" before the replayed steps are listed.)
    await page.locator(".run-title", has_text="ready in").wait_for()
    titles = await run_titles(tab)
    title = r"Start 1 · \d\d?:\d\d:\d\d( [AP]M)? · ready in [\d.]+ s"  # the clock in the browser's locale
    assert len(titles) == 1 and re.fullmatch(title, titles[0]), titles
    steps = await page.eval_on_selector_all("#ws-log li", "els => els.map(e => e.textContent)")
    assert any(s.startswith("Waiting for the IDE to answer (up to 2 min) · ") for s in steps), steps
    assert all(re.search(r" · [\d.]+ s$", s) for s in steps[:-1]), steps
    text = await page.text_content("#workspace")
    assert not any(word in text for word in OPERATOR_WORDS), text

    # The connection drops: "Reconnecting" is said once, then the state again.
    fake_server.services.workspaces.events.disconnect()
    await page.locator("#ws-live").wait_for(state="visible")
    await page.locator("#ws-live").wait_for(state="hidden")
    announced = await page.evaluate("() => window.__announced")
    assert announced[-2:] == ["Reconnecting", "Running, ready to open"], announced
    assert not seen["responses"] and not seen["console"], seen
    await shot(tab, "running-desktop")


async def test_a_failed_start_tells_the_student_what_to_do_and_try_again_is_run_2(fake_server, open_tab) -> None:
    backend = fake_server.services.workspaces.backend
    backend.fail_with = "Docker refused: port 27101 is taken; the pull policy is 'never' for apranova/x:1"
    tab, user, seen = await student(fake_server, open_tab)
    page = tab.page
    await page.get_by_role("button", name="Open my workspace").click()
    error = page.locator("#ws-error")
    await error.wait_for(state="visible")
    uid = user["user"]["id"]
    expected = ("Your workspace could not start: its container did not start. Try again; if it fails again, tell "
                f"your trainer: reference ws-{uid}-1.")
    assert (await page.text_content("#ws-error-text")) == expected
    panel = await page.text_content("#workspace")
    assert not any(word in panel for word in OPERATOR_WORDS), panel
    # The REST answer says the same; the operator's words are in the admin event history.
    async with httpx.AsyncClient(base_url=fake_server.url, timeout=10) as client:
        body = (await client.get("/api/users/workspace/", headers={"Authorization": f"Bearer {user['access']}"})).json()
    assert body["message"] == expected and body["run"] == 1
    doc = await fake_server.services.workspaces.find(uid)
    logged = await fake_server.db.workspace_events.find_one({"workspace_id": doc["_id"], "kind": "failure"})
    assert logged["detail"] == backend.fail_with
    assert await run_titles(tab) and (await run_titles(tab))[0].startswith("Start 1 · ")
    await shot(tab, "failed-desktop")
    await page.set_viewport_size(PHONE)
    await tab.assert_fits_width()
    await shot(tab, "failed-phone")
    await page.set_viewport_size(DESKTOP)

    # Try again, held at "Creating the container": run 2 under its own heading, its time so far moving.
    backend.fail_with, backend.gate = None, asyncio.Event()
    await page.get_by_role("button", name="Try again").click()
    await page.locator(".run[data-run='2'] li", has_text="Creating the container").wait_for()
    titles = await run_titles(tab)
    assert [t.split(" · ")[0] for t in titles] == ["Start 1", "Start 2"], titles
    assert await error.is_hidden()
    live = page.locator(".run[data-run='2'] .duration[data-from]")
    first = await live.text_content()
    await page.wait_for_function("(old) => document.querySelector('.run[data-run=\"2\"] .duration[data-from]')"
                                 ".textContent !== old", arg=first)
    assert (await page.text_content("#ws-time")).startswith("Elapsed ")
    await shot(tab, "retry-run-2-desktop")
    backend.gate.set()
    await page.get_by_role("link", name="Open the IDE").wait_for()
    assert await progress(tab) == 100
    run1 = await page.eval_on_selector_all(".run[data-run='1'] li", "els => els.map(e => e.textContent)")
    assert run1[-1].startswith("Your workspace could not start"), run1
    assert not seen["console"] and not seen["responses"], seen


async def test_stopping_is_indeterminate_and_the_estimate_shows_on_the_next_start(fake_server, open_tab) -> None:
    tab, user, seen = await student(fake_server, open_tab, viewport=PHONE)
    page = tab.page
    await page.add_init_script(RECORD_STOPPING)
    await page.reload()
    await page.get_by_role("button", name="Open my workspace").click()
    await page.get_by_role("link", name="Open the IDE").wait_for()
    await page.get_by_role("button", name="Stop").click()
    await page.locator("#workspace[data-state=stopped]").wait_for()
    stopping = await page.evaluate("() => window.__stopping")
    assert stopping, "the stopping state was never rendered"
    # Never "0%" with a shrinking fill: no value (ARIA's indeterminate), and it says "Stopping…".
    assert all(s == {"value": None, "text": "Stopping…", "indeterminate": True} for s in stopping), stopping
    titles = await run_titles(tab)
    steps = await page.eval_on_selector_all(".run[data-run='1'] li", "els => els.map(e => e.textContent)")
    assert steps[-1] == "Workspace stopped" and any(s.startswith("Stopping the workspace · ") for s in steps), steps

    # This server has one successful start now: the next says how long it usually takes.
    fake_server.services.workspaces.backend.gate = asyncio.Event()
    await page.get_by_role("button", name="Start my workspace").click()
    # The first start's own duration (about 1 s on the fake engine, more on a loaded machine).
    await page.locator("#ws-time", has_text=re.compile(r"usually ready in about \d+ s")).wait_for()
    assert len(await run_titles(tab)) == len(titles) + 1
    await tab.assert_fits_width()
    await shot(tab, "estimate-phone")
    fake_server.services.workspaces.backend.gate.set()
    await page.get_by_role("link", name="Open the IDE").wait_for()
    assert not seen["console"] and not seen["responses"], seen


@pytest.mark.docker
async def test_restart_and_the_remembered_auto_open_on_real_docker(docker_servers, open_tab) -> None:
    # The IDE answers after 4 s: the wait for it shows its limit and a moving "so far".
    server = await docker_servers.start(workspace_cmd=SLOW_START, workspace_ready_timeout="30")
    tab, user, seen = await student(server, open_tab)
    page = tab.page
    box = page.get_by_label("Open the IDE in a new tab when it is ready")
    assert not await box.is_checked()
    await box.check()
    await page.reload()  # remembered (localStorage: a preference, not a session)
    await page.get_by_role("button", name="Open my workspace").wait_for()
    assert await page.get_by_label("Open the IDE in a new tab when it is ready").is_checked()
    assert (await tab.storage())["local"] == {"apranova.workspace.autoOpen": "1"}

    port = server.url.rsplit(":", 1)[1]
    async with tab.context.expect_page(timeout=30000) as opened:
        await page.get_by_role("button", name="Open my workspace").click()
        waiting = page.locator("#ws-log li", has_text="Waiting for the IDE to answer (up to 30 s)")
        await waiting.locator(".duration[data-from]").wait_for()
        first = await waiting.text_content()
        await page.wait_for_function("(old) => [...document.querySelectorAll('#ws-log li')].some(li => "
                                     "li.textContent.startsWith('Waiting for the IDE') && li.textContent !== old "
                                     "&& li.textContent.endsWith('so far'))", arg=first)
        assert re.fullmatch(r"Elapsed [\d.]+ s · waited [\d.]+ s for the IDE of up to 30 s( · .*)?",
                            await page.text_content("#ws-time"))
        await shot(tab, "waiting-for-ide-desktop")
    ide = await opened.value
    await ide.wait_for_url(f"http://ws-{user['user']['id']}.localhost:{port}/")
    assert "apranova test workspace" in await ide.content()
    await ide.close()
    await page.get_by_role("link", name="Open the IDE").wait_for()
    await shot(tab, "running-real-desktop")

    # Restart: stop, then a new run under its own heading (and the IDE opens again by itself).
    await page.get_by_label("Open the IDE in a new tab when it is ready").uncheck()
    await page.get_by_role("button", name="Restart").click()
    await page.locator(".run[data-run='2'] li", has_text="Workspace is running").wait_for(timeout=30000)
    await page.get_by_role("link", name="Open the IDE").wait_for()
    titles = await run_titles(tab)
    assert [t.split(" · ")[0] for t in titles] == ["Start 1", "Start 2"], titles
    run1 = await page.eval_on_selector_all(".run[data-run='1'] li", "els => els.map(e => e.textContent)")
    assert run1[-1] == "Workspace stopped", run1
    assert len(tab.context.pages) == 1  # unchecked: nothing opened by itself
    assert (await tab.storage())["local"] == {"apranova.workspace.autoOpen": "0"}
    assert await progress(tab) == 100
    await page.set_viewport_size(PHONE)
    await tab.assert_fits_width()
    await shot(tab, "restarted-phone")
    assert not seen["console"] and not seen["responses"], seen
    assert await shown_seqs(tab)
