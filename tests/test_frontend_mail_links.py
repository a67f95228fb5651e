"""Mailed links for the original frontend (issue 21 §4): its new-password
form is at /reset-password/confirm?uid=&token=, and it has no page for our
/verify-email. The links are templates (PASSWORD_RESET_URL,
EMAIL_VERIFY_URL) defaulting to our own pages; the mail goes to a loopback
SMTP server (tests/fake_smtp.py) and the links are followed over HTTP as that
frontend's pages then call the API."""
from __future__ import annotations

import re
import urllib.parse

import httpx
import pytest

from services import settings as settings_mod
from tests.support.app import register

FRONTEND = "http://localhost:3000"
NEW_PASSWORD = "Another-Horse-77"


def link_in(message, prefix: str) -> urllib.parse.SplitResult:
    match = re.search(re.escape(prefix) + r"\S*", message.get_content())
    assert match, message.get_content()
    return urllib.parse.urlsplit(match[0])


async def test_the_original_frontends_links(start_server, smtp) -> None:
    server = await start_server(**smtp.settings(
        password_reset_url=FRONTEND + "/reset-password/confirm?uid={uid}&token={token}",
        email_verify_url="https://api.apranova.test/verify-email?key={key}"))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        email = user["user"]["email"]
        verify = link_in(await smtp.wait_for(email), "https://api.apranova.test/verify-email?")
        key = urllib.parse.parse_qs(verify.query)["key"][0]
        assert (await client.post("/api/auth/registration/verify-email/", json={"key": key})).status_code == 200
        assert (await client.post("/api/auth/password/reset/", json={"email": email})).status_code == 200
        reset = link_in(await smtp.wait_for(email, subject="Reset"), FRONTEND + "/reset-password/confirm?")
        assert reset.path == "/reset-password/confirm"
        params = dict(urllib.parse.parse_qsl(reset.query))
        # What that page sends: the confirm call with the link's uid and token.
        confirmed = await client.post("/api/auth/password/reset/confirm/", json={
            "uid": params["uid"], "token": params["token"],
            "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
        assert confirmed.status_code == 200, confirmed.text
        login = await client.post("/api/users/login/", json={"email": email, "password": NEW_PASSWORD,
                                                             "role": "student"})
        assert login.status_code == 200


async def test_the_defaults_are_our_own_pages(start_server, smtp) -> None:
    server = await start_server(**smtp.settings())
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        email = user["user"]["email"]
        verify = link_in(await smtp.wait_for(email), "https://apranova.test/")
        assert verify.path == "/verify-email" and set(urllib.parse.parse_qs(verify.query)) == {"key"}
        await client.post("/api/auth/password/reset/", json={"email": email})
        reset = link_in(await smtp.wait_for(email, subject="Reset"), "https://apranova.test/")
        assert reset.path == "/reset-password" and set(urllib.parse.parse_qs(reset.query)) == {"uid", "token"}
        # Our own pages are there.
        for path in ("/verify-email", "/reset-password"):
            page = await client.get(path)
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]


@pytest.mark.parametrize("name, value", [
    ("password_reset_url", "/reset?uid={uid}"),  # the token is missing
    ("password_reset_url", "/reset?uid={uid}&token={token}&x={key}"),  # a placeholder it does not have
    ("password_reset_url", "javascript:alert({uid}{token})"),
    ("email_verify_url", "/verify?key={key!r}"),
    ("email_verify_url", "/verify?key={key"),
    ("email_verify_url", "verify?key={key}"),  # neither a path nor a URL
])
def test_bad_templates_are_refused_at_start(name, value) -> None:
    with pytest.raises(settings_mod.SettingsError):
        settings_mod.load(environ={}, **{name: value})
