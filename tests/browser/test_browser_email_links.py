"""The pages of the mailed links, in Chromium: sign up, open the verification
link from the mail (caught by a real SMTP server on loopback), then forget
the password, open the reset link and log in with the new one."""
from __future__ import annotations

import urllib.parse

import pytest

from tests.support.app import unique_email
from tests.support.fake_smtp import link_params
from tests.support.browser import fill_sign_up

pytestmark = pytest.mark.browser
NEW_PASSWORD = "Another-Battery-77"


async def test_verify_link_then_forgot_and_reset_password(start_server, smtp, open_tab) -> None:
    app = await start_server(**smtp.settings())
    tab = await open_tab(app.url)
    page = tab.page
    email = unique_email("links")
    await fill_sign_up(tab, "Grace Hopper", email)
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url("**/student/dashboard")

    key = link_params(await smtp.wait_for(email, subject="Confirm"), "/verify-email")["key"]
    await tab.goto("/verify-email?" + urllib.parse.urlencode({"key": key}))
    await page.get_by_text("Your email address is verified").wait_for()
    assert (await app.db.users.find_one({"email": email}))["email_verified"]
    await tab.goto("/verify-email?key=" + key)  # single use
    await page.get_by_text("invalid, expired or already used").wait_for()

    # Forgot password: from the login page, logged out (a fresh tab).
    tab = await open_tab(app.url)
    page = tab.page
    await tab.goto("/login")
    await page.get_by_role("link", name="Forgot your password?").click()
    await page.get_by_role("heading", name="Forgot your password?").wait_for()
    await page.get_by_label("Email").fill(email)
    await page.get_by_role("button", name="Send me a reset link").click()
    await page.get_by_text("If an account with this email exists").wait_for()
    link = link_params(await smtp.wait_for(email, subject="Reset"), "/reset-password")
    await tab.goto("/reset-password?" + urllib.parse.urlencode(link))
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("Confirm new password").fill(NEW_PASSWORD + "x")
    await page.get_by_role("button", name="Set the new password").click()
    await page.locator("#f-new_password2-error").wait_for(state="visible")
    await page.get_by_label("Confirm new password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Set the new password").click()
    await page.wait_for_url("**/login")
    await page.get_by_text("Your password has been reset").wait_for()
    await tab.shot("password-reset-done")

    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/student/dashboard")
