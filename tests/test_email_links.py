"""Email verification and password reset through a real SMTP server on
loopback: links are single-use, expire, are stored only as hashes, and a
reset signs out every session."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import httpx
import pytest

from tests.support.accounts import assert_envelope, assert_field_error, login, profile, registration_body
from tests.support.app import register, unique_email
from tests.support.fake_smtp import link_params
from tests.support.accounts import refresh

NEW_PASSWORD = "Another-Battery-77"


@pytest.fixture
async def mail_app(start_server, smtp):
    return await start_server(**smtp.settings())


@pytest.fixture
async def api(mail_app):
    async with httpx.AsyncClient(base_url=mail_app.url, timeout=30) as http:
        yield http


async def reset_link(api, smtp, email: str, count: int = 1) -> dict[str, str]:
    response = await api.post("/api/auth/password/reset/", json={"email": email})
    assert response.status_code == 200, response.text
    return link_params(await smtp.wait_for(email, count, subject="Reset"), "/reset-password")


def confirm_body(link: dict, password: str = NEW_PASSWORD, again: str | None = None) -> dict:
    return {"uid": link["uid"], "token": link["token"], "new_password1": password,
            "new_password2": password if again is None else again}


async def test_registration_mails_a_single_use_verification_link(mail_app, api, smtp):
    data = await register(api)
    email = data["user"]["email"]
    message = await smtp.wait_for(email)
    assert message["From"] == "ApraNova <no-reply@apranova.test>"
    key = link_params(message, "/verify-email")["key"]
    stored = await mail_app.db.email_tokens.find_one({"user_id": data["user"]["id"]})
    assert stored["_id"] == hashlib.sha256(key.encode()).hexdigest() and key not in str(stored)

    response = await api.post("/api/auth/registration/verify-email/", json={"key": key})
    assert response.status_code == 200, response.text
    assert (await mail_app.db.users.find_one({"_id": data["user"]["id"]}))["email_verified"]
    assert_field_error(await api.post("/api/auth/registration/verify-email/", json={"key": key}), "key")


async def test_reset_sets_the_password_and_signs_out_every_session(mail_app, api, smtp):
    data = await register(api)
    email = data["user"]["email"]
    other_device = (await login(api, email, data["password"])).json()
    link = await reset_link(api, smtp, email)
    assert link["uid"] and link["token"]

    response = await api.post("/api/auth/password/reset/confirm/", json=confirm_body(link))
    assert response.status_code == 200, response.text
    for tokens in (data, other_device):
        assert (await profile(api, tokens)).status_code == 401
        assert (await refresh(api, tokens["refresh"])).status_code == 401
    assert (await login(api, email, data["password"])).status_code == 401
    assert (await login(api, email, NEW_PASSWORD)).status_code == 200
    assert (await mail_app.db.users.find_one({"_id": data["user"]["id"]}))["email_verified"]
    # Single use: the same link again is refused.
    assert_field_error(await api.post("/api/auth/password/reset/confirm/", json=confirm_body(link)), "token")


async def test_reset_request_answers_the_same_for_unknown_emails(api, smtp):
    data = await register(api)
    known = await api.post("/api/auth/password/reset/", json={"email": data["user"]["email"]})
    unknown = await api.post("/api/auth/password/reset/", json={"email": unique_email("nobody")})
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json()
    await smtp.wait_for(data["user"]["email"], subject="Reset")
    await asyncio.sleep(0.3)
    assert len(smtp.inbox.messages) == 2


async def test_expired_forged_and_mismatched_links_are_refused(mail_app, api, smtp):
    alice, bob = await register(api), await register(api)
    link = await reset_link(api, smtp, alice["user"]["email"], count=1)
    bob_link = await reset_link(api, smtp, bob["user"]["email"], count=1)
    confirm = "/api/auth/password/reset/confirm/"
    # Bob's uid with Alice's token, a made-up token, garbage uids: all the same 400.
    for body in ({**confirm_body(link), "uid": bob_link["uid"]}, {**confirm_body(link), "token": "x" * 43},
                 {**confirm_body(link), "uid": "%%%"}, {**confirm_body(link), "uid": "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ"}):
        assert_field_error(await api.post(confirm, json=body), "token")
    # A weak or mismatched password is refused without spending the link.
    assert_field_error(await api.post(confirm, json=confirm_body(link, "12345678")), "new_password1")
    assert_field_error(await api.post(confirm, json=confirm_body(link, NEW_PASSWORD, "Other-99-x")), "new_password2")
    # Expired: the stored expiry moved into the past (re-inserted: nx-27017
    # stores a datetime given to $set as a string).
    for record in await mail_app.db.email_tokens.find({"user_id": alice["user"]["id"]}).to_list():
        await mail_app.db.email_tokens.delete_one({"_id": record["_id"]})
        record["expires_at"] = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        await mail_app.db.email_tokens.insert_one(record)
    assert_field_error(await api.post(confirm, json=confirm_body(link)), "token")
    assert (await api.post(confirm, json=confirm_body(bob_link))).status_code == 200


async def test_parallel_use_of_one_link_succeeds_once(api, smtp):
    data = await register(api)
    link = await reset_link(api, smtp, data["user"]["email"], count=1)
    answers = await asyncio.gather(*(api.post("/api/auth/password/reset/confirm/", json=confirm_body(link))
                                     for _ in range(5)))
    assert sorted(r.status_code for r in answers) == [200] + [400] * 4


async def test_without_smtp_registration_works_and_mail_endpoints_say_503(client):
    response = await client.post("/api/auth/registration/", json=registration_body())
    assert response.status_code == 201, response.text
    for path in ("/api/auth/password/reset/", "/api/auth/registration/resend-email/"):
        body = assert_envelope(await client.post(path, json={"email": "a@example.com"}), 503)
        assert "SMTP" in body["message"]


async def test_an_unreachable_smtp_server_does_not_fail_the_request(start_server):
    from tests.support.oauth import closed_port_url
    port = closed_port_url().rsplit(":", 1)[1]
    app = await start_server(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none", smtp_timeout="2")
    async with httpx.AsyncClient(base_url=app.url) as api:
        data = await register(api)
        response = await api.post("/api/auth/password/reset/", json={"email": data["user"]["email"]})
        assert response.status_code == 200
    await asyncio.sleep(0.5)
    assert app.services.dependency_errors["smtp"] >= 1


async def test_mails_per_account_are_limited_and_the_answer_does_not_change(start_server, smtp):
    app = await start_server(rate_limit_mail="2/hour", **smtp.settings())
    async with httpx.AsyncClient(base_url=app.url) as api:
        data = await register(api)  # mail 1: verification
        email = data["user"]["email"]
        answers = [await api.post("/api/auth/password/reset/", json={"email": email}) for _ in range(4)]
        assert {r.status_code for r in answers} == {200} and len({r.text for r in answers}) == 1
        await smtp.wait_for(email, subject="Reset")
        await asyncio.sleep(0.5)
        assert len(smtp.to(email)) == 2  # the verification and one reset; the rest were not sent
