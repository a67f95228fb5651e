"""A workspace on a disk quota in Chromium, on the real Docker engine: the
dashboard shows the home's use ("Storage: 1.2 of 2 GiB used"), and the 90%
warning, then the "full" message, as they arrive on the status socket, at
desktop and phone widths."""
from __future__ import annotations

import re

import pytest

from tests.support.browser import student_tab
from tests.support.disks import exec_in, quota_settings

pytestmark = [pytest.mark.browser, pytest.mark.docker]
PHONE = {"width": 390, "height": 844}


async def test_the_dashboard_shows_disk_use_and_warns_before_it_is_full(docker_servers, open_tab, disk_dir) -> None:
    server = await docker_servers.start(**quota_settings(disk_dir))
    tab, user = await student_tab(server, open_tab, viewport={"width": 1280, "height": 800})
    page = tab.page
    await page.get_by_role("button", name="Open my workspace").click()
    await page.locator("#workspace[data-state=running]").wait_for(timeout=30000)
    notice = page.locator("#ws-disk-notice")
    assert await notice.is_hidden()

    container = f"{docker_servers.instance}-ws-{user['user']['id']}"
    exec_in(container, "dd if=/dev/zero of=/home/coder/a bs=1M count=50")
    await notice.wait_for(state="visible", timeout=20000)
    assert "% full" in await notice.text_content() and "Delete files" in await notice.text_content()
    figure = await page.text_content("#ws-disk")
    assert re.fullmatch(r"Storage: \d+(\.\d)? of \d+(\.\d)? MiB used", figure), figure
    await tab.shot("disk-warning-desktop")

    exec_in(container, "dd if=/dev/zero of=/home/coder/b bs=1M count=20")
    await page.wait_for_function("() => /storage is full/.test(document.querySelector('#ws-disk-notice').textContent)",
                                 timeout=20000)
    assert "ask your trainer" in await notice.text_content()
    await page.set_viewport_size(PHONE)
    await tab.assert_fits_width()
    await tab.shot("disk-full-phone")
    await page.reload()  # the figure comes back with the snapshot
    await page.wait_for_function("() => /^Storage: /.test(document.querySelector('#ws-disk')?.textContent || '')",
                                 timeout=20000)


async def test_the_admin_console_shows_each_homes_disk_use(docker_servers, open_tab, disk_dir) -> None:
    import httpx

    from tests.support.app import make_admin, register
    from tests.support.browser import log_in, PASSWORD
    server = await docker_servers.start(**quota_settings(disk_dir))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        admin = await make_admin(server, client)
        student = await register(client, name="Dora Disk", password=PASSWORD)
        created = await client.post("/api/users/workspace/create/", json={"wait": True},
                                    headers={"Authorization": f"Bearer {student['access']}"})
        assert created.json()["state"] == "running", created.text
    exec_in(f"{docker_servers.instance}-ws-{student['user']['id']}", "dd if=/dev/zero of=/home/coder/a bs=1M count=8")
    for viewport, name in (({"width": 1280, "height": 800}, "wide"), (PHONE, "phone")):
        tab = await open_tab(server.url, viewport=viewport)
        await log_in(tab, admin["user"]["email"], role="admin", password=admin["password"])
        row = tab.page.locator("#workspaces tbody tr", has_text="Dora Disk")
        await row.wait_for()
        for _ in range(40):  # the first reading lands within a culling round or two
            if re.search(r"\d+(\.\d)? of \d+(\.\d)? MiB \(quota 64 MiB\)", await row.text_content()):
                break
            await tab.page.get_by_role("button", name="Refresh workspaces").click()
            await tab.page.wait_for_timeout(250)
        assert re.search(r"\d+(\.\d)? of \d+(\.\d)? MiB \(quota 64 MiB\)", await row.text_content())
        await tab.assert_fits_width()
        await tab.shot(f"console-disk-{name}")
