"""The admin and trainer consoles in Chromium against the real server: what
each role is offered (and not), confirm steps driven by keyboard, the audit
log, and the workspaces table on real Docker. Screenshots at 1280x800 and
390x844 go to test-artifacts/browser-console-*.png."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.app import make_admin, register, unique_email
from tests.support.browser import log_in, PASSWORD, Tab

pytestmark = pytest.mark.browser
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


async def console_tab(open_tab: Any, server: Any, who: dict, role: str, viewport: dict = WIDE) -> Tab:
    tab = await open_tab(server.url, viewport=viewport)
    await log_in(tab, who["user"]["email"], role=role, password=who["password"])
    return tab


def users_row(tab: Tab, name: str) -> Any:
    return tab.page.locator("#users tbody tr", has_text=name)


async def test_admin_manages_a_student_and_meets_the_boundaries(app, api, open_tab) -> None:
    admin = await make_admin(app, api)
    boss = await make_admin(app, api, role="superadmin")
    await app.db.users.update_one({"_id": boss["user"]["id"]}, {"$set": {"name": "Boss Person"}})
    student = await register(api, name="Ada Student", email=unique_email("ada"))
    for index in range(11):  # two pages of users
        await register(api, name=f"Filler {index:02d}")
    tab = await console_tab(open_tab, app, admin, "admin")
    page = tab.page
    await page.get_by_role("heading", name="Users").wait_for()
    await page.locator("#users .pager-summary", has_text="Page 1 of 2 · 14 in all").wait_for()
    assert await page.get_by_text("Manage users and roles from the API").count() == 0
    unlabelled = await page.evaluate("""() => [...document.querySelectorAll('main input, main select')]
        .filter(el => !el.labels || el.labels.length === 0).map(el => el.name)""")
    assert unlabelled == []
    await page.get_by_role("button", name="Next page").first.click()
    await page.locator("#users .pager-summary", has_text="Page 2 of 2").wait_for()

    # Search (escaped on the server), then open the student's detail by keyboard.
    await page.get_by_label("Name or email").fill("ada stud")
    await page.get_by_label("Name or email").press("Enter")
    await page.locator("#users .pager-summary", has_text="1 in all").wait_for()
    await tab.shot("console-admin-users")
    await page.get_by_role("button", name="Manage Ada Student").focus()
    await page.keyboard.press("Enter")
    detail = page.locator("#users .detail")
    await detail.get_by_role("heading", name="Ada Student").wait_for()
    assert await detail.get_by_label("Role").count() == 1  # the detail's role select is labelled too
    assert await page.evaluate("() => document.activeElement.textContent") == "Ada Student"
    # An admin is offered student and trainer only.
    options = await detail.get_by_label("Role").locator("option").all_text_contents()
    assert options == ["Student", "Trainer"]
    await detail.get_by_label("Role").select_option("trainer")
    await detail.get_by_role("button", name="Change role").click()
    await detail.get_by_text("Role changed to Trainer.").wait_for()
    assert (await app.db.users.find_one({"_id": student["user"]["id"]}))["role"] == "trainer"

    # Disable: a confirm step; Escape cancels and gives focus back.
    await detail.get_by_role("button", name="Disable account").click()
    confirm = detail.get_by_role("button", name="Yes, disable account")
    await confirm.wait_for()
    assert await page.evaluate("() => document.activeElement.textContent") == "Yes, disable account"
    await tab.shot("console-admin-confirm")
    await page.keyboard.press("Escape")
    assert await confirm.count() == 0
    assert await page.evaluate("() => document.activeElement.textContent") == "Disable account"
    assert not (await app.db.users.find_one({"_id": student["user"]["id"]})).get("disabled")
    await page.keyboard.press("Enter")
    await page.keyboard.press("Enter")  # on the focused "Yes, disable account"
    await detail.get_by_text("Account disabled.").wait_for()
    assert (await app.db.users.find_one({"_id": student["user"]["id"]}))["disabled"]
    await users_row(tab, "Ada Student").get_by_text("Disabled").wait_for()
    # Delete (soft), after its own confirm step; focus goes to the Users heading.
    await detail.get_by_role("button", name="Delete account").click()
    await detail.get_by_role("button", name="Yes, delete account").click()
    await page.locator("#users").get_by_text("Ada Student's account was deleted.").wait_for()
    assert await page.evaluate("() => document.activeElement.id") == "users-title"
    assert (await app.db.users.find_one({"_id": student["user"]["id"]}))["deleted_at"]
    await page.locator("#users .pager-summary", has_text="0 in all").wait_for()

    # The audit log shows both actions, newest first.
    audit = page.locator("#audit tbody tr")
    await audit.first.get_by_text("user.deleted").wait_for()
    assert "user.disabled" in await audit.nth(1).text_content()
    assert "user.role_changed" in await audit.nth(2).text_content()

    # A superadmin's account: no role choice, no disable button for an admin.
    await page.get_by_label("Name or email").fill("Boss")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("button", name="Manage Boss Person").click()
    await detail.get_by_role("heading", name="Boss Person").wait_for()
    await detail.get_by_text("Only a superadmin can change this account's role.").wait_for()
    assert await detail.get_by_role("button", name="Disable account").count() == 0
    await detail.get_by_role("button", name="Close").click()
    assert await page.evaluate("() => document.activeElement.textContent") == "Boss Person"
    await tab.assert_fits_width()
    await tab.shot("console-admin-wide")


async def test_admin_console_on_a_phone(app, api, open_tab) -> None:
    admin = await make_admin(app, api)
    await register(api, name="Phone Student With A Rather Long Name", email=unique_email("a-long-address-here"))
    tab = await console_tab(open_tab, app, admin, "admin", NARROW)
    await tab.page.locator("#users .pager-summary", has_text="in all").wait_for()
    await tab.page.get_by_role("button", name="Manage Phone Student With A Rather Long Name").click()
    await tab.page.locator("#users .detail h3").wait_for()
    await tab.assert_fits_width()
    await tab.shot("console-admin-phone")


async def test_superadmin_grants_admin_and_disables_an_admin(app, api, open_tab) -> None:
    boss = await make_admin(app, api, role="superadmin")
    admin = await make_admin(app, api)
    await app.db.users.update_one({"_id": admin["user"]["id"]}, {"$set": {"name": "Other Admin"}})
    student = await register(api, name="Rising Star")
    tab = await console_tab(open_tab, app, boss, "superadmin")
    page = tab.page
    detail = page.locator("#users .detail")
    await page.get_by_role("button", name="Manage Rising Star").click()
    await detail.get_by_label("Role").locator("option").first.wait_for(state="attached")  # drawn after an API call
    options = await detail.get_by_label("Role").locator("option").all_text_contents()
    assert options == ["Student", "Trainer", "Admin", "Super admin"]
    await detail.get_by_label("Role").select_option("admin")
    await detail.get_by_role("button", name="Change role").click()
    await detail.get_by_text("Role changed to Admin.").wait_for()
    assert (await app.db.users.find_one({"_id": student["user"]["id"]}))["role"] == "admin"

    await page.get_by_role("button", name="Manage Other Admin").click()
    await detail.get_by_role("heading", name="Other Admin").wait_for()
    await detail.get_by_role("button", name="Disable account").click()
    await detail.get_by_role("button", name="Yes, disable account").click()
    await detail.get_by_text("Account disabled.").wait_for()
    async with httpx.AsyncClient(base_url=app.url) as client:  # their login is over
        assert (await client.get("/api/admin/users/", headers={"Authorization": f"Bearer {admin['access']}"})
                ).status_code == 401
    # Their own account: roles offered, but never a disable button.
    await page.get_by_role("button", name=f"Manage {boss['user']['name']}").first.click()
    await detail.locator("h3").wait_for()
    assert await detail.get_by_role("button", name="Disable account").count() == 0
    await tab.shot("console-superadmin-wide")


async def test_trainer_sees_their_students_read_only(app, api, open_tab) -> None:
    trainer = await register(api, role="trainer", name="Tess Trainer", track="DP")
    await register(api, name="Dana DP", track="DP")
    await register(api, name="Finn FSD", track="FSD")
    for viewport, name in ((WIDE, "wide"), (NARROW, "phone")):
        tab = await console_tab(open_tab, app, trainer, "trainer", viewport)
        page = tab.page
        await page.get_by_role("heading", name="Your students").wait_for()
        rows = page.locator("#students tbody tr")
        await rows.first.get_by_text("Dana DP").wait_for()
        assert await rows.count() == 1
        assert await page.locator("#students tbody button").count() == 0  # read-only
        assert await page.locator("#users, #workspaces, #audit").count() == 0
        await rows.first.get_by_text("No workspace").wait_for()
        await rows.first.get_by_text("Assigned", exact=True).wait_for()  # why Dana is on the list
        await tab.assert_fits_width()
        await tab.shot(f"console-trainer-{name}")
    await tab.goto("/admin/dashboard")  # not theirs
    await tab.page.wait_for_url("**/trainer/dashboard")


@pytest.mark.docker
async def test_admin_stops_and_deletes_a_workspace_with_confirm(docker_servers, open_tab) -> None:
    server = await docker_servers.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        admin = await make_admin(server, client)
        student = await register(client, name="Wendy Workspace", password=PASSWORD)
        created = await client.post("/api/users/workspace/create/", json={"wait": True},
                                    headers={"Authorization": f"Bearer {student['access']}"})
        assert created.json()["state"] == "running", created.text
    for viewport, name in ((WIDE, "wide"), (NARROW, "phone")):
        tab = await console_tab(open_tab, server, admin, "admin", viewport)
        await tab.page.locator("#workspaces tbody tr", has_text="Wendy Workspace").wait_for()
        await tab.page.locator("#workspaces tbody tr", has_text="% CPU").wait_for()  # Docker's stats now
        await tab.assert_fits_width()
        await tab.shot(f"console-workspaces-{name}")
    page = tab.page
    workspaces = page.locator("#workspaces")
    await workspaces.get_by_role("button", name="Stop Wendy Workspace's workspace").click()
    await workspaces.get_by_role("button", name="Yes, stop").click()
    await workspaces.locator("tbody tr", has_text="Stopped").wait_for(timeout=30000)
    assert await page.evaluate("() => document.activeElement.id") == "workspaces-title"
    doc = await server.db.workspaces.find_one({"owner_id": student["user"]["id"]})
    assert doc["state"] == "stopped"

    await workspaces.get_by_role("button", name="Event history of Wendy Workspace's workspace").click()
    history = workspaces.locator(".detail")
    await history.get_by_role("heading", name="Event history: Wendy Workspace").wait_for()
    await history.locator("tbody tr", has_text="Workspace stopped").first.wait_for()
    await tab.shot("console-workspace-history-phone")

    await workspaces.get_by_role("button", name="Delete Wendy Workspace's workspace").click()
    await workspaces.get_by_role("button", name="Cancel").click()
    assert (await server.db.workspaces.find_one({"owner_id": student["user"]["id"]}))["state"] == "stopped"
    await workspaces.get_by_role("button", name="Delete Wendy Workspace's workspace").click()
    await workspaces.get_by_role("button", name="Yes, delete").click()
    await workspaces.get_by_text("No workspace in this state.").wait_for(timeout=30000)
    assert (await server.db.workspaces.find_one({"owner_id": student["user"]["id"]}))["state"] == "deleted"
    await page.locator("#audit tbody tr", has_text="workspace.delete").wait_for()
    # Started again behind the console's back: Refresh shows it.
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        await client.post("/api/users/workspace/create/", json={"wait": True},
                          headers={"Authorization": f"Bearer {student['access']}"})
    await workspaces.get_by_role("button", name="Refresh workspaces").click()
    await workspaces.locator("tbody tr", has_text="Running").wait_for()
