"""Contrast and focus in Chromium (issue 13, "Keyboard and screen-reader
users"): the Running pill and the focus ring measured from the real
stylesheet, and where focus lands after a failed login, a sign-up with
several bad fields, a profile save, and the workspace's Open, Stop and
Delete (real Docker)."""
from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import register, unique_email
from tests.support.browser import DESKTOP, log_in, PASSWORD, student_tab

pytestmark = pytest.mark.browser

# WCAG contrast of two computed colours ("rgb(r, g, b)"), in the page.
CONTRAST = """([fg, bg]) => {
  const channels = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => v / 255)
    .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
  const lum = (c) => { const [r, g, b] = channels(c); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
  return (hi + 0.05) / (lo + 0.05);
}"""


async def contrast(page: Any, fg: str, bg: str) -> float:
    return await page.evaluate(CONTRAST, [fg, bg])


async def focused(page: Any) -> str:
    return await page.evaluate("() => document.activeElement.id || document.activeElement.tagName")


async def test_running_pill_and_focus_ring_contrast(app, open_tab) -> None:
    tab = await open_tab(app.url)
    page = tab.page
    await tab.goto("/login")
    await page.get_by_role("heading", name="Log in").wait_for()
    pill = await page.evaluate("""() => {
        const panel = Object.assign(document.createElement('section'), {className: 'workspace'});
        panel.dataset.state = 'running';
        const pill = Object.assign(document.createElement('span'), {className: 'state-pill', textContent: 'Running'});
        panel.append(pill); document.querySelector('main').append(panel);
        const style = getComputedStyle(pill);
        return [style.color, style.backgroundColor];
    }""")
    assert await contrast(page, *pill) >= 4.5  # small bold text: AA asks 4.5:1

    await page.get_by_label("Email").focus()
    await page.keyboard.press("Tab")  # keyboard focus: the ring shows
    ring = await page.evaluate("() => getComputedStyle(document.activeElement).outlineColor")
    for background in ("rgb(255, 255, 255)", "rgb(244, 246, 249)"):  # cards, page
        assert await contrast(page, ring, background) >= 3
    header = await page.evaluate("""() => { const link = document.querySelector('#nav a'); link.focus();
        return [getComputedStyle(link).outlineColor,
                getComputedStyle(document.querySelector('.site-header')).backgroundColor]; }""")
    assert await contrast(page, *header) >= 3

    # A keyboard route change: the new page's heading takes focus and shows the ring.
    await page.locator("#nav a", has_text="Sign up").focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Create your account").wait_for()
    assert await page.evaluate("() => document.activeElement.tagName") == "H1"
    assert await page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none"


async def test_focus_after_a_failed_login_a_bad_sign_up_and_a_profile_save(app, api, open_tab) -> None:
    user = await register(api, email=unique_email("focus"), password=PASSWORD, name="Focus Person")
    tab = await open_tab(app.url)
    page = tab.page
    await tab.goto("/login")
    await page.get_by_label("Email").fill(user["user"]["email"])
    await page.get_by_label("Password", exact=True).fill("wrong-password-1")
    await page.get_by_label("Password", exact=True).press("Enter")
    banner = page.locator("form .form-error")
    await banner.wait_for(state="visible")
    assert await page.evaluate("() => document.activeElement === document.querySelector('form .form-error')")

    # Sign-up with a blank name and a bad email: the name, first on the page, takes focus.
    await tab.goto("/signup")
    await page.get_by_label("Full name").fill("   ")
    await page.get_by_label("Email").fill("not-an-address@")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Confirm password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await page.locator("#f-email-error").wait_for(state="visible")
    await page.locator("#f-name-error").wait_for(state="visible")
    assert await focused(page) == "f-name"

    await log_in(tab, user["user"]["email"])
    await tab.goto("/profile")
    await page.get_by_label("Full name").fill("Focus Renamed")
    await page.get_by_role("button", name="Save changes").focus()
    await page.keyboard.press("Enter")
    await page.get_by_text("Your details were saved.").wait_for()
    assert await page.evaluate("() => document.activeElement.textContent") == "Save changes"


@pytest.mark.docker
async def test_focus_after_open_stop_and_delete(docker_servers, open_tab) -> None:
    server = await docker_servers.start()
    tab, _ = await student_tab(server, open_tab, viewport=DESKTOP)
    page = tab.page
    page.on("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Open my workspace").focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("link", name="Open the IDE").wait_for(timeout=30000)
    assert await focused(page) == "ws-title"  # not the page body
    await page.get_by_role("button", name="Stop").focus()
    await page.keyboard.press("Enter")
    await page.locator("#workspace[data-state=stopped]").wait_for()
    assert await focused(page) in ("ws-title", "ws-open")
    await page.get_by_role("button", name="Delete").focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("button", name="Open my workspace").wait_for()
    assert await focused(page) in ("ws-title", "ws-open")
    outline = await page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # a keyboard user sees where focus went
