"""Sign-in with Google and GitHub, end to end: the real server on a port,
talking over HTTP to loopback servers that play Google (OIDC, RS256
id_tokens, JWKS) and GitHub (OAuth endpoints and REST API)."""
from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse

import httpx
import jwt
import pytest

from services import settings as settings_mod
from services.settings import SettingsError
from tests.support.app import auth, register, TEST_SECRET, unique_email
from tests.support.fake_oauth import s256
from tests.support.oauth import closed_port_url, OTHER_REDIRECT, post, provider_settings, REDIRECT, VERIFIER


async def full_flow(api: httpx.AsyncClient, provider: str, redirect_uri: str = REDIRECT) -> tuple[dict, dict]:
    """What the SPA does: ask for the URL, send the browser there (the fake
    consents at once), read code and state off the redirect, post them."""
    started = await api.get(f"/api/auth/{provider}/authorize-url/", params={"redirect_uri": redirect_uri})
    assert started.status_code == 200, started.text
    start = started.json()
    async with httpx.AsyncClient(follow_redirects=False) as browser:
        consent = await browser.get(start["authorization_url"])
    assert consent.status_code == 302, consent.text
    location = consent.headers["Location"]
    assert location.startswith(redirect_uri + "?")
    back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert back["state"] == start["state"]
    response = await api.post(f"/api/auth/{provider}/", json={
        "code": back["code"], "redirect_uri": redirect_uri, "state": back["state"],
        "code_verifier": start["code_verifier"]})
    return start, response


async def assert_oauth_failed(response: httpx.Response, words: str) -> dict:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "OAuth failed"
    assert words.lower() in body["message"].lower(), body
    return body


async def user_count(app) -> int:
    return await app.db.users.count_documents({})


# -- happy paths -------------------------------------------------------------------

async def test_google_full_flow_creates_a_student_with_state_pkce_and_nonce(app, api, google):
    start, response = await full_flow(api, "google")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == {"id": body["user"]["id"], "email": "ada@gmail.com", "name": "Ada Lovelace",
                            "role": "student", "track": None}
    assert body["new_user"] is True

    # The authorization URL carries what Google needs, and PKCE S256.
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(start["authorization_url"]).query))
    assert query["client_id"] == google.client_id and query["redirect_uri"] == REDIRECT
    assert query["response_type"] == "code" and set(query["scope"].split()) == {"openid", "email", "profile"}
    assert query["code_challenge_method"] == "S256" and query["code_challenge"] == s256(start["code_verifier"])
    assert query["nonce"] and query["state"] == start["state"]
    assert start["code_challenge_method"] == "S256" and start["expires_in"] == 600
    # The verifier went to the token endpoint (the fake refuses a wrong one).
    (exchange,) = google.token_requests()
    assert exchange.params["code_verifier"] == start["code_verifier"]

    # Same token pair as a password login: the profile answers, refresh rotates.
    profile = await api.get("/api/users/profile/", headers=auth(body))
    assert profile.status_code == 200 and profile.json()["email"] == "ada@gmail.com"
    refreshed = await api.post("/api/auth/token/refresh/", json={"refresh": body["refresh"]})
    assert refreshed.status_code == 200

    identity = await app.db.oauth_identities.find_one({"provider": "google"})
    assert identity["subject"] == google.next_user["sub"] and identity["user_id"] == body["user"]["id"]
    # No usable password: a password login with anything fails.
    stored = await app.db.users.find_one({"_id": body["user"]["id"]})
    assert stored["password_hash"] is None and stored["role"] == "student"
    for password in ("", "None", "null"):
        login = await api.post("/api/users/login/", json={"email": "ada@gmail.com", "password": password,
                                                          "role": "student"})
        assert login.status_code == 401


async def test_github_full_flow_uses_the_primary_verified_email(app, api, github):
    github.next_user["emails"] = [
        {"email": "old@example.org", "primary": False, "verified": True, "visibility": None},
        {"email": "Octo.Cat@Example.com", "primary": True, "verified": True, "visibility": "private"},
        {"email": "unverified@example.net", "primary": False, "verified": False, "visibility": None}]
    start, response = await full_flow(api, "github")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["email"] == "Octo.Cat@Example.com" and body["user"]["name"] == "The Octocat"
    assert body["user"]["role"] == "student" and body["new_user"] is True
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(start["authorization_url"]).query))
    assert set(query["scope"].split()) == {"read:user", "user:email"}
    assert query["code_challenge"] == s256(start["code_verifier"]) and "nonce" not in query
    (exchange,) = github.token_requests()
    assert exchange.params["code_verifier"] == start["code_verifier"]
    assert exchange.headers["Accept"] == "application/json"
    user_call = next(r for r in github.requests if r.path == "/api/user")
    assert user_call.headers["Authorization"].startswith("Bearer gho_")
    identity = await app.db.oauth_identities.find_one({"provider": "github"})
    assert identity["subject"] == "583231" and identity["user_id"] == body["user"]["id"]
    assert (await api.get("/api/users/profile/", headers=auth(body))).status_code == 200


async def test_github_name_falls_back_to_login(api, github):
    github.next_user["name"] = None
    response = await post(api, "github", github.issue_code(REDIRECT))
    assert response.status_code == 200, response.text
    assert response.json()["user"]["name"] == "octocat"


# -- accounts: linking and new users --------------------------------------------------

async def test_verified_google_email_links_to_the_existing_account(app, api, google):
    existing = await register(api, role="trainer", email="Ada@Gmail.com", name="Ada L.")
    # An account whose email was verified (an unverified one is handed over:
    # see tests/test_account_takeover.py).
    await app.db.users.update_one({"_id": existing["user"]["id"]}, {"$set": {"email_verified": True}})
    response = await post(api, "google", google.issue_code(REDIRECT))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["id"] == existing["user"]["id"] and body["new_user"] is False
    assert body["user"]["role"] == "trainer" and body["user"]["name"] == "Ada L."  # the account as it is
    assert body["account_secured"] is False and body["notice"] is None
    assert await user_count(app) == 1
    assert await app.db.oauth_identities.count_documents({"user_id": existing["user"]["id"]}) == 1
    # The password still works: linking changes nothing else.
    login = await api.post("/api/users/login/", json={"email": "ada@gmail.com", "password": existing["password"],
                                                      "role": "trainer"})
    assert login.status_code == 200


async def test_known_identity_signs_in_even_after_the_email_changed(app, api, google, github):
    first = (await post(api, "google", google.issue_code(REDIRECT))).json()
    google.next_user = {**google.next_user, "email": "ada.new@gmail.com"}
    again = await post(api, "google", google.issue_code(REDIRECT))
    assert again.status_code == 200, again.text
    assert again.json()["user"]["id"] == first["user"]["id"] and again.json()["new_user"] is False
    assert await user_count(app) == 1
    # The same for GitHub.
    one = (await post(api, "github", github.issue_code(REDIRECT))).json()
    github.next_user = {**github.next_user, "emails": [{"email": "renamed@github.com", "primary": True,
                                                        "verified": True}]}
    two = await post(api, "github", github.issue_code(REDIRECT))
    assert two.json()["user"]["id"] == one["user"]["id"]
    assert await user_count(app) == 2


async def test_github_links_by_email_and_both_providers_reach_one_account(app, api, google, github):
    existing = await register(api, email="octocat@github.com")
    via_github = (await post(api, "github", github.issue_code(REDIRECT))).json()
    assert via_github["user"]["id"] == existing["user"]["id"]
    google.next_user = {**google.next_user, "email": "OCTOCAT@github.com"}
    via_google = (await post(api, "google", google.issue_code(REDIRECT))).json()
    assert via_google["user"]["id"] == existing["user"]["id"]
    assert await app.db.oauth_identities.count_documents({"user_id": existing["user"]["id"]}) == 2


async def test_parallel_first_sign_ins_make_one_account(app, api, google, github):
    codes = [google.issue_code(REDIRECT) for _ in range(4)]
    responses = await asyncio.gather(*(post(api, "google", code) for code in codes))
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert len({r.json()["user"]["id"] for r in responses}) == 1
    assert await user_count(app) == 1
    assert await app.db.oauth_identities.count_documents({}) == 1


@pytest.mark.parametrize("setting, value", [("google_token_url", "oauth2.googleapis.com/token"),
                                            ("github_api_base", "ftp://api.github.com"), ("oauth_timeout", "0")])
def test_unusable_oauth_settings_are_refused_at_start(setting, value):
    with pytest.raises(SettingsError, match=setting.upper()):
        settings_mod.load(environ={}, **{setting: value})


async def test_disabled_account_is_refused(app, api, google):
    existing = await register(api, email="ada@gmail.com")
    await app.db.users.update_one({"_id": existing["user"]["id"]}, {"$set": {"disabled": True}})
    response = await post(api, "google", google.issue_code(REDIRECT))
    assert response.status_code == 403, response.text
    assert await app.db.sessions.count_documents({"user_id": existing["user"]["id"]}) == 1  # registration's only


# -- id_token verification --------------------------------------------------------------

@pytest.mark.parametrize("change, words", [
    ({"aud": "someone-elses-client"}, "another application"),
    ({"iss": "https://accounts.evil.example"}, "not issued by google"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"azp": "someone-elses-client"}, "another application"),
    ({"sub": None}, "lacks required claims"),
])
async def test_id_token_claims_are_checked(app, api, google, change, words):
    google.claim_changes = change
    response = await post(api, "google", google.issue_code(REDIRECT))
    await assert_oauth_failed(response, words)
    assert await user_count(app) == 0 and await app.db.sessions.count_documents({}) == 0


async def test_a_tampered_id_token_is_refused(app, api, google):
    def tamper(token: str) -> str:
        header, payload, signature = token.split(".")
        claims = jwt.api_jws.base64url_decode(payload)
        forged = claims.replace(b"ada@gmail.com", b"eve@gmail.com")
        return ".".join([header, jwt.utils.base64url_encode(forged).decode(), signature])

    google.mangle = tamper
    await assert_oauth_failed(await post(api, "google", google.issue_code(REDIRECT)), "signature is invalid")
    google.mangle = lambda token: token.rsplit(".", 1)[0] + "."  # signature stripped
    await assert_oauth_failed(await post(api, "google", google.issue_code(REDIRECT)), "signature is invalid")
    # alg "none" and HS256 with the public key as secret are not accepted.
    google.mangle = lambda token: jwt.encode(jwt.decode(token, options={"verify_signature": False}), None,
                                             algorithm="none")
    await assert_oauth_failed(await post(api, "google", google.issue_code(REDIRECT)), "invalid")
    assert await user_count(app) == 0


async def test_unknown_kid_refetches_the_jwks_once(app, api, google):
    assert (await post(api, "google", google.issue_code(REDIRECT))).status_code == 200
    assert (await post(api, "google", google.issue_code(REDIRECT))).status_code == 200
    assert google.jwks_fetches == 1  # cached between sign-ins

    google.rotate()  # Google starts signing with a new key, published in its JWKS
    response = await post(api, "google", google.issue_code(REDIRECT))
    assert response.status_code == 200, response.text
    assert google.jwks_fetches == 2

    google.rotate(publish=False)  # a key Google never published: one refetch, then refused
    await assert_oauth_failed(await post(api, "google", google.issue_code(REDIRECT)), "key google does not publish")
    assert google.jwks_fetches == 3


async def test_unverified_email_is_refused_by_both_providers(app, api, google, github):
    existing = await register(api, email="ada@gmail.com")
    google.next_user = {**google.next_user, "email_verified": False}
    await assert_oauth_failed(await post(api, "google", google.issue_code(REDIRECT)), "not verified")
    google.claim_changes = {"email_verified": None}
    await assert_oauth_failed(await post(api, "google", google.issue_code(REDIRECT)), "not verified")

    # GitHub: the primary address is unverified; another verified one is not used instead.
    github.next_user["emails"] = [{"email": "ada@gmail.com", "primary": True, "verified": False},
                                  {"email": "other@example.com", "primary": False, "verified": True}]
    await assert_oauth_failed(await post(api, "github", github.issue_code(REDIRECT)), "no verified primary")
    assert await user_count(app) == 1
    assert await app.db.oauth_identities.count_documents({}) == 0
    assert await app.db.sessions.count_documents({"user_id": existing["user"]["id"]}) == 1


# -- codes, redirect URIs, configuration, reachability ------------------------------------

async def test_bad_expired_or_reused_code_is_400(app, api, google, github):
    for provider in ("google", "github"):
        body = await assert_oauth_failed(await post(api, provider, "not-a-code"), "did not accept")
        assert body["details"]["provider_error"] in ("invalid_grant", "bad_verification_code")
    for provider, fake in (("google", google), ("github", github)):
        code = fake.issue_code(REDIRECT)
        assert (await post(api, provider, code)).status_code == 200
        await assert_oauth_failed(await post(api, provider, code), "already used")  # single use
        # Issued for one allowed redirect URI, posted with the other.
        await assert_oauth_failed(await post(api, provider, fake.issue_code(REDIRECT), OTHER_REDIRECT),
                                  "did not accept")


async def test_unlisted_redirect_uri_is_400_and_never_reaches_the_provider(api, google, github):
    for provider in ("google", "github"):
        for uri in ("https://evil.example/cb", REDIRECT + "/", REDIRECT + "?x=1", REDIRECT.upper()):
            response = await post(api, provider, "some-code", uri)
            assert response.status_code == 400, response.text
            assert "redirect_uri" in response.json()
            started = await api.get(f"/api/auth/{provider}/authorize-url/", params={"redirect_uri": uri})
            assert started.status_code == 400 and "redirect_uri" in started.json()
        missing = await api.get(f"/api/auth/{provider}/authorize-url/")
        assert missing.status_code == 400 and missing.json()["redirect_uri"] == ["This field is required."]
    assert google.requests == [] and github.requests == []


async def test_provider_not_configured_is_503(start_server, google):
    app = await start_server(**{**provider_settings(google), "google_client_secret": ""})
    async with httpx.AsyncClient(base_url=app.url) as api:
        for provider in ("google", "github"):
            response = await post(api, provider, "a-code")
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "OAuth provider not configured"
            assert "Retry-After" in response.headers
            started = await api.get(f"/api/auth/{provider}/authorize-url/", params={"redirect_uri": REDIRECT})
            assert started.status_code == 503
    assert google.requests == []


async def test_provider_unreachable_or_failing_is_502(start_server, google, github):
    down = closed_port_url()
    app = await start_server(**{**provider_settings(google, github), "google_token_url": down + "/token",
                                "github_token_url": down + "/login/oauth/access_token", "oauth_timeout": "0.5"})
    async with httpx.AsyncClient(base_url=app.url) as api:
        for provider in ("google", "github"):
            response = await post(api, provider, "a-code")
            assert response.status_code == 502, response.text
            assert response.json()["error"] == "OAuth provider unreachable"

    app = await start_server(**{**provider_settings(google, github), "oauth_timeout": "0.5"})
    async with httpx.AsyncClient(base_url=app.url) as api:
        for provider, fake in (("google", google), ("github", github)):
            fake.fail_status = 503  # an HTML error page from the provider's edge
            response = await post(api, provider, fake.issue_code(REDIRECT))
            assert response.status_code == 502 and response.json()["error"] == "OAuth provider error"
            fake.fail_status = None
            fake.delay = 2  # slower than OAUTH_TIMEOUT
            began = time.monotonic()
            response = await post(api, provider, fake.issue_code(REDIRECT))
            assert response.status_code == 502 and time.monotonic() - began < 1.8
            fake.delay = 0
        # JWKS down after a good token exchange, and GitHub's API failing after one.
        app.services.oauth.providers["google"].jwks.url = closed_port_url() + "/certs"
        response = await post(api, "google", google.issue_code(REDIRECT))
        assert response.status_code == 502, response.text
        app.services.oauth.providers["github"].api_base = closed_port_url()
        response = await post(api, "github", github.issue_code(REDIRECT))
        assert response.status_code == 502, response.text
        assert app.services.dependency_errors["google"] >= 3 and app.services.dependency_errors["github"] >= 3
    assert await app.db.users.count_documents({}) == 0


async def test_wrong_client_secret_is_a_502_not_the_users_fault(start_server, google, github):
    app = await start_server(**{**provider_settings(google, github), "google_client_secret": "wrong",
                                "github_client_secret": "wrong"})
    async with httpx.AsyncClient(base_url=app.url) as api:
        for provider, fake in (("google", google), ("github", github)):
            response = await post(api, provider, fake.issue_code(REDIRECT))
            assert response.status_code == 502, response.text
            assert "client credentials" in response.json()["message"]


# -- state and PKCE --------------------------------------------------------------------

async def start_for(api: httpx.AsyncClient, provider: str, redirect_uri: str = REDIRECT) -> dict:
    response = await api.get(f"/api/auth/{provider}/authorize-url/", params={"redirect_uri": redirect_uri})
    assert response.status_code == 200, response.text
    return response.json()


async def test_state_is_checked(api, google, github):
    google_start = await start_for(api, "google")
    github_start = await start_for(api, "github")
    other_redirect = await start_for(api, "google", OTHER_REDIRECT)
    verifier = google_start["code_verifier"]
    nonce = jwt.decode(google_start["state"], TEST_SECRET, algorithms=["HS256"])["nonce"]
    code = google.issue_code(REDIRECT, code_challenge=s256(verifier), nonce=nonce)
    now = int(time.time())
    expired = jwt.encode({**jwt.decode(google_start["state"], TEST_SECRET, algorithms=["HS256"]),
                          "iat": now - 700, "exp": now - 100}, TEST_SECRET, algorithm="HS256")
    forged = jwt.encode(jwt.decode(google_start["state"], TEST_SECRET, algorithms=["HS256"]),
                        "another-secret-" + "y" * 32, algorithm="HS256")
    cases = [
        ({"state": google_start["state"][:-3] + "AAA", "code_verifier": verifier}, "state is invalid"),
        ({"state": forged, "code_verifier": verifier}, "state is invalid"),
        ({"state": expired, "code_verifier": verifier}, "expired"),
        ({"state": github_start["state"], "code_verifier": github_start["code_verifier"]}, "state is invalid"),
        ({"state": other_redirect["state"], "code_verifier": other_redirect["code_verifier"]}, "another redirect_uri"),
        ({"state": google_start["state"]}, "code_verifier is required"),
        ({"state": google_start["state"], "code_verifier": github_start["code_verifier"]}, "does not match"),
    ]
    for extra, words in cases:
        await assert_oauth_failed(await post(api, "google", code, **extra), words)
    # An access token is no state, and a state is no access token.
    registered = await register(api)
    await assert_oauth_failed(await post(api, "google", code, state=registered["access"], code_verifier=verifier),
                              "state is invalid")
    as_bearer = await api.get("/api/users/profile/", headers={"Authorization": f"Bearer {google_start['state']}"})
    assert as_bearer.status_code == 401
    assert google.token_requests() == []  # none of these reached Google
    # The real pair still works with that very code.
    ok = await post(api, "google", code, state=google_start["state"], code_verifier=verifier)
    assert ok.status_code == 200, ok.text


async def test_pkce_verifier_is_enforced_by_the_provider(api, google, github):
    for provider, fake in (("google", google), ("github", github)):
        start = await start_for(api, provider)
        challenge = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(start["authorization_url"]).query))[
            "code_challenge"]
        code = fake.issue_code(REDIRECT, code_challenge=challenge)
        # Without state the verifier is passed through; a wrong one fails at the provider.
        await assert_oauth_failed(await post(api, provider, code, code_verifier=VERIFIER), "did not accept")
        code = fake.issue_code(REDIRECT, code_challenge=challenge)
        ok = await post(api, provider, code, code_verifier=start["code_verifier"])
        assert ok.status_code == 200, ok.text


async def test_google_nonce_must_match_the_state(api, google):
    start = await start_for(api, "google")
    challenge = s256(start["code_verifier"])
    code = google.issue_code(REDIRECT, code_challenge=challenge, nonce="someone-elses-nonce")
    await assert_oauth_failed(await post(api, "google", code, state=start["state"],
                                         code_verifier=start["code_verifier"]), "nonce")


# -- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    ({"code": {"$gt": ""}, "redirect_uri": REDIRECT}, "code"),
    ({"code": ["a"], "redirect_uri": REDIRECT}, "code"),
    ({"code": "abc", "redirect_uri": {"$ne": None}}, "redirect_uri"),
    ({"code": "abc", "redirect_uri": REDIRECT, "state": {"a": 1}}, "state"),
    ({"code": "abc", "redirect_uri": REDIRECT, "code_verifier": 123}, "code_verifier"),
    ({"code": "abc", "redirect_uri": REDIRECT, "code_verifier": "short"}, "code_verifier"),
    ({"code": "abc", "redirect_uri": REDIRECT, "code_verifier": "x" * 42 + " "}, "code_verifier"),
    ({"redirect_uri": REDIRECT}, "code"),
    ({"code": "", "redirect_uri": REDIRECT}, "code"),
    ({"code": 5, "redirect_uri": REDIRECT}, "code"),
    ({"code": "a" * 2049, "redirect_uri": REDIRECT}, "code"),
])
async def test_type_confused_bodies_are_400(app, api, google, github, body, field):
    for provider in ("google", "github"):
        response = await api.post(f"/api/auth/{provider}/", json=body)
        assert response.status_code == 400, response.text
        assert field in response.json(), response.json()
    assert google.requests == [] and github.requests == [] and await user_count(app) == 0


async def test_non_object_bodies_and_query_params(api, google):
    for raw in (b"[]", b'"code"', b"null", b"{not json"):
        response = await api.post("/api/auth/google/", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
    response = await api.get("/api/auth/google/authorize-url/?redirect_uri=" + "x" * 5000)
    assert response.status_code == 400
    assert google.requests == []


# -- secrets stay out of the logs ----------------------------------------------------------

async def test_codes_and_tokens_are_never_logged(api, google, github, caplog):
    caplog.set_level(logging.DEBUG)
    code = google.issue_code(REDIRECT)
    body = (await post(api, "google", code)).json()
    bad_code = "secret-looking-code-" + unique_email()
    await post(api, "github", bad_code)
    github.fail_status = 502
    failing = github.issue_code(REDIRECT)
    await post(api, "github", failing)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "google sign-in: user" in text  # the logs do say what happened
    for secret in (code, bad_code, failing, body["access"], body["refresh"], google.client_secret,
                   github.client_secret, *github.access_tokens):
        assert secret not in text
