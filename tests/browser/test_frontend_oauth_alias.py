"""The original frontend's Google and GitHub buttons navigate to
django-allauth's `/accounts/<provider>/login/` (issue 21 §7): an alias into
our own OAuth start, with its state and PKCE, finished on
`/accounts/<provider>/login/callback/`. Providers are tests/fake_oauth.py."""
from __future__ import annotations

import json
import urllib.parse
from typing import Any, AsyncIterator

import httpx
import pytest

from tests.support.fake_oauth import s256
from tests.support.oauth import provider_settings


@pytest.fixture
async def alias(start_server, google, github) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:  # noqa: F811
    # The callback's address is the server's own, known once it listens: list it through PUBLIC_URL.
    server = await start_server(**provider_settings(google, github))
    callbacks = ",".join(f"{server.url}/accounts/{p}/login/callback/" for p in ("google", "github"))
    server.services.oauth.redirect_uris = frozenset(server.services.oauth.redirect_uris | set(callbacks.split(",")))
    async with httpx.AsyncClient(base_url=server.url, timeout=30, follow_redirects=False) as browser:
        yield server, browser


@pytest.mark.parametrize("provider", ["google", "github"])
async def test_the_button_signs_in_through_our_own_start(alias, provider) -> None:
    server, browser = alias
    start = await browser.get(f"/accounts/{provider}/login/")
    assert start.status_code == 302
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(start.headers["location"]).query))
    assert query["code_challenge_method"] == "S256" and query["state"]
    assert query["redirect_uri"] == f"{server.url}/accounts/{provider}/login/callback/"
    cookie = start.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and f"path=/accounts/{provider}/login/" in cookie
    verifier = browser.cookies["apranova_oauth"].split("~", 1)[1]
    assert s256(verifier) == query["code_challenge"]  # the PKCE pair the callback will prove
    async with httpx.AsyncClient(follow_redirects=False) as outside:
        back = (await outside.get(start.headers["location"])).headers["location"]
    done = await browser.get(back)
    assert done.status_code == 302, done.text
    target = urllib.parse.urlsplit(done.headers["location"])
    assert target.path == "/login" and target.query == ""  # tokens only in the fragment
    handed = dict(urllib.parse.parse_qsl(target.fragment))
    user = json.loads(handed["user"])
    profile = await browser.get("/api/users/profile/", headers={"Authorization": f"Bearer {handed['access']}"})
    assert profile.status_code == 200 and profile.json()["id"] == user["id"]
    assert "apranova_oauth" not in browser.cookies  # spent
    again = await browser.get(back)  # replayed: no cookie, and the code is spent
    assert again.status_code == 400 and again.json()["error"] == "OAuth failed"


async def test_a_state_this_browser_did_not_start_is_refused(alias) -> None:
    server, browser = alias
    victim = await browser.get("/accounts/google/login/")
    async with httpx.AsyncClient(follow_redirects=False) as outside:
        back = (await outside.get(victim.headers["location"])).headers["location"]
    # Login CSRF: the attacker's callback URL opened in a browser that started no sign-in.
    async with httpx.AsyncClient(base_url=server.url, follow_redirects=False) as other_browser:
        refused = await other_browser.get(back)
        assert refused.status_code == 400 and refused.json()["error"] == "OAuth failed"
        # Or one that started its own: states differ.
        await other_browser.get("/accounts/google/login/")
        refused = await other_browser.get(back)
        assert refused.status_code == 400


async def test_unlisted_callback_and_unconfigured_provider(start_server, google) -> None:  # noqa: F811
    server = await start_server(**provider_settings(google))  # callbacks not in OAUTH_REDIRECT_URIS; no GitHub
    async with httpx.AsyncClient(base_url=server.url, follow_redirects=False) as browser:
        unlisted = await browser.get("/accounts/google/login/")
        assert unlisted.status_code == 400 and "OAUTH_REDIRECT_URIS" in json.dumps(unlisted.json())
        assert (await browser.get("/accounts/github/login/")).status_code == 503
        assert (await browser.get("/accounts/facebook/login/")).status_code == 404


@pytest.mark.browser
async def test_our_own_pages_take_the_hand_over(alias, browser) -> None:  # noqa: F811
    """Chromium: the button's path, the (fake) provider, the callback, and
    our own client's /login reading the fragment: signed in, no tokens left
    in the address bar."""
    server, _ = alias
    context = await browser.new_context()
    context.set_default_timeout(15000)
    try:
        page = await context.new_page()
        await page.goto(f"{server.url}/accounts/github/login/")
        await page.wait_for_url(f"{server.url}/student/dashboard")
        assert "#" not in page.url
        assert await page.evaluate("Boolean(sessionStorage.getItem('apranova.refresh'))")
    finally:
        await context.close()
