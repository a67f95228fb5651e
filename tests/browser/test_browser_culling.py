"""A culled workspace in Chromium, on the real Docker engine with the test
image: the dashboard shows the idle warning with its countdown and "Keep it
running", the button keeps it, and after the stop the reason stays in view."""
from __future__ import annotations

import re
import time

import pytest

from tests.support.browser import DESKTOP, student_tab
from tests.support.workspaces import docker

pytestmark = [pytest.mark.browser, pytest.mark.docker]
PHONE = {"width": 390, "height": 844}
CULLING = {"workspace_idle_timeout": "10", "workspace_idle_warning": "7", "workspace_cull_interval": "0.25"}


async def test_the_dashboard_warns_keeps_running_then_tells_why_it_stopped(docker_servers, open_tab) -> None:
    server = await docker_servers.start(**CULLING)
    tab, user = await student_tab(server, open_tab, viewport={"width": 1280, "height": 800})
    page = tab.page
    banner = page.locator("#ws-idle-warning")
    await page.get_by_role("button", name="Open my workspace").click()
    await page.locator("#workspace[data-state=running]").wait_for(timeout=30000)
    assert await banner.is_hidden()

    await banner.wait_for(state="visible", timeout=10000)
    assert re.fullmatch(r"Stopping in 7 seconds: no activity for 3 seconds", await page.text_content("#ws-idle-message"))
    first = await page.text_content("#ws-idle-countdown")
    assert re.fullmatch(r"Stops in 0:0[1-7]", first), first
    await page.wait_for_function("t => document.querySelector('#ws-idle-countdown').textContent !== t", arg=first)
    await tab.shot("culling-warning-desktop")
    await page.set_viewport_size(PHONE)
    await tab.assert_fits_width()
    await tab.shot("culling-warning-phone")
    await page.set_viewport_size(DESKTOP)

    await page.get_by_role("button", name="Keep it running").click()
    kept_at = time.monotonic()
    await banner.wait_for(state="hidden")
    assert await page.evaluate("document.activeElement.id") == "ws-title", "focus does not fall to the body"
    doc = await server.db.workspaces.find_one({"owner_id": user["user"]["id"]})
    assert doc["state"] == "running" and doc["message"] == "Kept running"

    await banner.wait_for(state="visible", timeout=10000)  # the next idle period's warning
    assert await page.get_by_role("button", name="Keep it running").is_visible()
    await page.locator("#workspace[data-state=stopped]").wait_for(timeout=15000)
    assert time.monotonic() - kept_at > 9, "kept running: the idle time counted from the click"
    reason = "Stopped after 10 seconds without activity. Your files are kept."
    await page.wait_for_function("t => document.querySelector('#ws-idle-message').textContent === t", arg=reason)
    assert await banner.is_visible() and await page.get_by_role("button", name="Keep it running").is_hidden()
    assert await page.get_by_role("button", name="Start my workspace").is_visible()
    await tab.shot("culling-stopped-desktop")
    await page.reload()  # the reason survives a reload (it is in the snapshot)
    await page.wait_for_function("t => document.querySelector('#ws-idle-message')?.textContent === t", arg=reason)
    await page.set_viewport_size(PHONE)
    await tab.assert_fits_width()
    await tab.shot("culling-stopped-phone")

    name = f"{docker_servers.instance}-ws-{user['user']['id']}"
    assert docker("inspect", "-f", "{{.State.Running}}", name) == "false"
    await page.get_by_role("button", name="Start my workspace").click()  # starting again clears the reason
    await page.locator("#workspace[data-state=running]").wait_for(timeout=30000)
    assert await banner.is_hidden()
