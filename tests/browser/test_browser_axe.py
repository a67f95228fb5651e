"""axe-core (WCAG 2.1 A/AA, the npm package fetched by scripts/test-env.sh)
on every page of the app in Chromium, and the /api/docs page on a phone:
zero violations, printed rule by rule when there are some. Workspaces come
from the in-memory backend (tests/support/fake_backend.py): these tests look at
pages, not at Docker."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.axe import AXE_VERSION, describe, run_axe, script_path
from tests.support.app import auth, make_admin, register, require_or_skip, unique_email
from tests.support.browser import DESKTOP, log_in, PASSWORD, Tab

pytestmark = pytest.mark.browser
FAKE = "tests.support.fake_backend:FakeBackend"
PHONE = {"width": 390, "height": 844}
SMALL = {"width": 320, "height": 640}


@pytest.fixture(scope="session")
def axe_script() -> Path:
    found = script_path()
    require_or_skip(found is not None, f"axe-core {AXE_VERSION} (scripts/test-env.sh fetches it)")
    return found  # type: ignore[return-value]


@pytest.fixture
async def site(start_server) -> Any:
    return await start_server(workspace_backend=FAKE, instance_name=f"axe{random.randrange(16**8):08x}")


@pytest.fixture
async def axe_tab(open_tab, axe_script) -> Any:
    """Tabs whose pages may take the injected axe script (the app's CSP forbids inline scripts)."""
    async def make(base: str, viewport: dict = DESKTOP) -> Tab:
        tab = await open_tab(base, viewport=viewport, bypass_csp=True)
        tab.axe = axe_script  # type: ignore[attr-defined]
        return tab
    return make


async def assert_accessible(tab: Tab, where: str) -> None:
    violations = await run_axe(tab.page, tab.axe)  # type: ignore[attr-defined]
    assert not violations, f"axe-core {AXE_VERSION} on {where}:{describe(violations)}"


async def no_sideways_scroll(tab: Tab) -> tuple[int, int]:
    return await tab.page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")


async def test_axe_sign_up_log_in_student_dashboard_and_profile(site, axe_tab) -> None:
    tab = await axe_tab(site.url)
    page = tab.page
    await tab.goto("/login")
    await page.get_by_role("heading", name="Log in").wait_for()
    await assert_accessible(tab, "/login")
    # The harness sees what it should: a planted unlabelled field is a violation.
    await page.evaluate("() => document.querySelector('main')"
                        ".append(Object.assign(document.createElement('input'), {id: 'planted'}))")
    planted = await run_axe(page, tab.axe)  # type: ignore[attr-defined]
    assert [v["id"] for v in planted] == ["label"] and "#planted" in describe(planted), describe(planted)
    await tab.goto("/signup")
    await page.get_by_role("heading", name="Create your account").wait_for()
    await assert_accessible(tab, "/signup")
    await page.get_by_role("button", name="Create account").click()  # every field's error shown
    await page.locator("#f-email-error").wait_for(state="visible")
    await assert_accessible(tab, "/signup with field errors")

    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        student = await register(client, email=unique_email("axe"), password=PASSWORD, name="Axe Student")
    await log_in(tab, student["user"]["email"])
    await page.get_by_role("button", name="Open my workspace").wait_for()
    await assert_accessible(tab, "the student dashboard without a workspace")
    await page.get_by_role("button", name="Open my workspace").click()
    await page.locator("#workspace[data-state=running]").wait_for()
    await assert_accessible(tab, "the student dashboard with a running workspace")
    await page.set_viewport_size(PHONE)
    await assert_accessible(tab, "the student dashboard with a running workspace, 390 px")
    await page.set_viewport_size(DESKTOP)
    await tab.goto("/profile")
    await page.get_by_role("button", name="Save changes").wait_for()
    await assert_accessible(tab, "/profile")


async def test_axe_admin_superadmin_and_trainer_consoles(site, axe_tab) -> None:
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        admin = await make_admin(site, client)
        boss = await make_admin(site, client, role="superadmin")
        trainer = await register(client, role="trainer", name="Axe Trainer", email=unique_email("trainer"))
        student = await register(client, name="Axe Student", email=unique_email("student"))
        response = await client.post("/api/users/workspace/create/", json={"wait": True}, headers=auth(student))
        assert response.status_code == 201, response.text
    for who, role in ((admin, "admin"), (boss, "superadmin")):
        tab = await axe_tab(site.url)
        await log_in(tab, who["user"]["email"], role=role, password=who["password"])
        await tab.page.locator("#users .pager-summary", has_text="in all").wait_for()
        row = tab.page.locator("#workspaces tbody tr", has_text="Axe Student")
        await row.get_by_text("12.5% CPU · 300 MiB of 2,048 MiB").wait_for()  # the engine's stats now (fake)
        await assert_accessible(tab, f"the {role} console (users, workspaces, audit)")
        await tab.page.get_by_role("button", name="Manage Axe Student").click()
        await tab.page.locator("#users .detail h3").wait_for()
        await row.get_by_role("button", name="Event history of Axe Student's workspace").click()
        await tab.page.locator("#workspaces .detail tbody tr").first.wait_for()
        await assert_accessible(tab, f"the {role} console with a user's detail and a workspace history open")
        await tab.page.set_viewport_size(PHONE)
        await assert_accessible(tab, f"the {role} console at 390 px")
    tab = await axe_tab(site.url)
    await log_in(tab, trainer["user"]["email"], role="trainer", password=trainer["password"])
    await tab.page.get_by_text("Axe Student").first.wait_for()
    await assert_accessible(tab, "the trainer console")


async def test_api_docs_on_desktop_and_phones(site, axe_tab) -> None:
    for viewport in (DESKTOP, PHONE, SMALL):
        tab = await axe_tab(site.url, viewport)
        page = tab.page
        await tab.goto("/api/docs")
        await page.locator("section.op").first.wait_for()
        await page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
        width, inner = await no_sideways_scroll(tab)
        assert width <= inner, f"/api/docs scrolls sideways at {viewport['width']} px: {width} > {inner}"
        blocks = await page.evaluate("""() => [...document.querySelectorAll('pre')].map(pre =>
            [pre.tabIndex, pre.getAttribute('aria-label') || '', pre.scrollWidth > pre.clientWidth])""")
        assert blocks and all(index == 0 and label for index, label, _ in blocks), blocks[:3]
        if viewport is SMALL:
            assert any(scrolls for _, _, scrolls in blocks)  # what the tabindex is for
            # Tables wrap: none is wider than its section, and each row's cells stack.
            too_wide = await page.evaluate("""() => [...document.querySelectorAll('table')]
                .filter(t => t.getBoundingClientRect().right > window.innerWidth).length""")
            assert too_wide == 0
            assert await page.evaluate("() => getComputedStyle(document.querySelector('td')).display") == "block"
        await assert_accessible(tab, f"/api/docs at {viewport['width']} px")
        await tab.shot(f"api-docs-{viewport['width']}")


async def test_docs_leads_to_the_api_reference(site) -> None:
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        for path in ("/docs", "/docs/"):
            response = await client.get(path)
            assert response.status_code in (301, 302) and response.headers["location"] == "/api/docs", path
        assert (await client.head("/docs")).status_code in (301, 302)
        followed = await client.get("/docs", follow_redirects=True)
        assert followed.status_code == 200 and "ApraNova API reference" in followed.text
        refused = await client.post("/docs", json={})
        assert refused.status_code == 405 and refused.json()["error"]
