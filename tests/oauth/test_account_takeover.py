"""Account pre-hijacking: someone registers another person's email with a
password of their choosing; when the real owner later signs in with a
provider that vouches for that email, the owner must end up the only one
holding the account."""
from __future__ import annotations

from tests.support.accounts import login, profile
from tests.support.accounts import refresh
from tests.support.app import register
from tests.support.oauth import post, REDIRECT

__all__ = ["api", "app", "github", "google"]


async def test_provider_sign_in_takes_an_unverified_account_from_the_squatter(app, api, google):
    squatter = await register(api, email="ada@gmail.com", name="Ada L.")
    second_device = (await login(api, "ada@gmail.com", squatter["password"])).json()

    response = await post(api, "google", google.issue_code(REDIRECT))
    assert response.status_code == 200, response.text
    owner = response.json()
    assert owner["user"]["id"] == squatter["user"]["id"] and owner["new_user"] is False
    assert owner["account_secured"] is True
    assert "password has been removed" in owner["notice"]

    # The squatter's password and every one of their sessions are dead ...
    assert (await login(api, "ada@gmail.com", squatter["password"])).status_code == 401
    for tokens in (squatter, second_device):
        assert (await profile(api, tokens)).status_code == 401
        assert (await refresh(api, tokens["refresh"])).status_code == 401
    # ... and the owner's session works; the email now counts as verified.
    assert (await profile(api, owner)).status_code == 200
    stored = await app.db.users.find_one({"_id": owner["user"]["id"]})
    assert stored["email_verified"] and stored["password_hash"] is None  # nx-27017 may read a bool back as 1

    # Signing in again changes nothing more (the account is verified now).
    again = (await post(api, "google", google.issue_code(REDIRECT))).json()
    assert again["account_secured"] is False and again["notice"] is None
    assert (await profile(api, owner)).status_code == 200


async def test_github_verified_email_secures_an_unverified_account_too(app, api, github):
    squatter = await register(api, email="octocat@github.com")
    owner = (await post(api, "github", github.issue_code(REDIRECT))).json()
    assert owner["user"]["id"] == squatter["user"]["id"] and owner["account_secured"] is True
    assert (await login(api, "octocat@github.com", squatter["password"])).status_code == 401


async def test_accounts_made_by_a_provider_are_verified(app, api, google):
    created = (await post(api, "google", google.issue_code(REDIRECT))).json()
    assert created["new_user"] is True and created["account_secured"] is False
    stored = await app.db.users.find_one({"_id": created["user"]["id"]})
    assert stored["email_verified"]


async def test_a_registered_email_starts_unverified(app, api):
    data = await register(api)
    stored = await app.db.users.find_one({"_id": data["user"]["id"]})
    assert not stored["email_verified"] and "email_verified" in stored
