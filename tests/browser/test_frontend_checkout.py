"""Stripe Checkout as the original frontend uses it (issue 21 §3): its "Get
started" page POSTs /api/payments/create-simple-checkout/ {track,
success_url, cancel_url} (no token: a guest checkout, success_url a bare
`<origin>/payment/success`) and sends the browser to the answer's `url`;
its success page GETs /api/payments/verify-checkout-session/?session_id=
(no token either), retries on 202, reads `success` and stores the
`access`/`refresh` it may carry. Stripe is tests/fake_stripe.py on
loopback, hosted page included."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import httpx
import pytest
from tornado import web

from tests.support.app import auth, register
from tests.support.fake_server import close, listen
from tests.support.fake_stripe import FakeStripe, sign
from tests.support.payments import stripe_settings, WEBHOOK_SECRET

CHECKOUT = "/api/payments/create-simple-checkout/"
VERIFY = "/api/payments/verify-checkout-session/"
FRONTEND = "http://localhost:3000"
SUCCESS = FRONTEND + "/payment/success?session_id={CHECKOUT_SESSION_ID}"
CANCEL = FRONTEND + "/get-started"


@pytest.fixture
async def shop(fake_stripe, start_server) -> AsyncIterator[tuple[Any, httpx.AsyncClient, FakeStripe]]:
    server = await start_server(**stripe_settings(fake_stripe))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield server, client, fake_stripe


async def checkout(client: httpx.AsyncClient, tokens: dict, body: Any, **headers: str) -> httpx.Response:
    return await client.post(CHECKOUT, json=body, headers={**auth(tokens), **headers})


async def profile(client: httpx.AsyncClient, tokens: dict) -> dict:
    return (await client.get("/api/users/profile/", headers=auth(tokens))).json()


async def deliver(client: httpx.AsyncClient, fake: FakeStripe, session_id: str, event_id: str | None = None):
    payload = json.dumps(fake.event("checkout.session.completed", dict(fake.sessions[session_id]),
                                    event_id=event_id)).encode()
    return await client.post("/api/payments/webhook/", content=payload,
                             headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET),
                                      "Content-Type": "application/json"})


async def test_the_get_started_page_gets_a_checkout_url_for_the_tracks_price(shop) -> None:
    server, client, fake = shop
    student = await register(client, track="DP")
    answer = await checkout(client, student, {"track": "FSD", "success_url": SUCCESS, "cancel_url": CANCEL})
    assert answer.status_code == 200, answer.text
    url = answer.json()["url"]
    session = fake.sessions[url.rsplit("/", 1)[1]]
    assert session["amount_total"] == 59900 and session["currency"] == "usd"  # TRACK_PRICES FSD=599.00
    assert session["success_url"] == SUCCESS and session["cancel_url"] == CANCEL
    assert session["client_reference_id"] == str(student["user"]["id"])
    assert session["metadata"] == {"user_id": str(student["user"]["id"]), "track": "FSD"}
    payments = (await client.get("/api/payments/my-payments/", headers=auth(student))).json()["payments"]
    assert [(p["status"], p["checkoutSessionId"], p["amount"], p["track"]) for p in payments] == [
        ("created", session["id"], 59900, "FSD")]
    assert (await profile(client, student))["enrollment_status"] == "PENDING_PAYMENT"


@pytest.mark.parametrize("body, field", [
    ({"track": "XX", "success_url": SUCCESS, "cancel_url": CANCEL}, "track"),
    ({"track": "DP", "success_url": "https://evil.example/steal", "cancel_url": CANCEL}, "success_url"),
    ({"track": "DP", "success_url": SUCCESS, "cancel_url": "javascript:alert(1)"}, "cancel_url"),
    ({"track": "DP", "success_url": "http://localhost:3000.evil.example/", "cancel_url": CANCEL}, "success_url"),
    ({"track": "DP", "success_url": "http://user@localhost:3000/", "cancel_url": CANCEL}, "success_url"),
    ({"track": "DP", "success_url": SUCCESS, "cancel_url": CANCEL, "amount": 1}, "amount"),
    ({"track": "DP", "cancel_url": CANCEL}, "success_url"),
])
async def test_bad_checkout_requests_are_400_and_reach_no_stripe(shop, body, field) -> None:
    server, client, fake = shop
    student = await register(client)
    answer = await checkout(client, student, body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["details"], answer.json()
    assert fake.sessions == {}


async def test_return_origins_come_from_the_setting(fake_stripe, start_server) -> None:  # noqa: F811
    server = await start_server(**stripe_settings(fake_stripe, checkout_return_origins="https://app.example.edu"))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        student = await register(client)
        body = {"track": "DP", "success_url": "https://app.example.edu/ok?s={CHECKOUT_SESSION_ID}",
                "cancel_url": "https://app.example.edu/"}
        assert (await checkout(client, student, body)).status_code == 200
        assert (await checkout(client, student, {**body, "cancel_url": CANCEL})).status_code == 400


async def test_unconfigured_and_bad_tokens(start_server) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        body = {"track": "DP", "success_url": SUCCESS, "cancel_url": CANCEL}
        assert (await client.post(CHECKOUT, json=body)).status_code == 503
        assert (await client.get(VERIFY, params={"session_id": "cs_test_x"})).status_code == 503
        student = await register(client)
        assert (await checkout(client, student, body)).status_code == 503
        bad = {"Authorization": "Bearer not-a-token"}
        assert (await client.post(CHECKOUT, json=body, headers=bad)).status_code == 401


async def test_the_original_guest_checkout_makes_the_account_and_logs_in_once(shop) -> None:
    server, client, fake = shop
    # Exactly the original page's call: no token, a bare success URL.
    body = {"track": "FSD", "success_url": FRONTEND + "/payment/success", "cancel_url": CANCEL}
    answer = await client.post(CHECKOUT, json=body)
    assert answer.status_code == 200, answer.text
    session_id = answer.json()["url"].rsplit("/", 1)[1]
    session = fake.sessions[session_id]
    assert session["success_url"] == FRONTEND + "/payment/success?session_id={CHECKOUT_SESSION_ID}"
    assert session["amount_total"] == 59900 and session.get("customer_email") is None
    open_ = await client.get(VERIFY, params={"session_id": session_id})
    assert open_.status_code == 200 and open_.json()["success"] is False
    session["status"] = "complete"  # ordered, the money not there yet (a delayed method): the page retries
    assert (await client.get(VERIFY, params={"session_id": session_id})).status_code == 202
    email = "guest-" + session_id[-8:] + "@example.com"
    fake.pay_session(session_id, email, "Guest Payer")
    answers = await asyncio.gather(*(client.get(VERIFY, params={"session_id": session_id}) for _ in range(4)))
    assert all(a.status_code == 200 and a.json()["success"] for a in answers), [a.text for a in answers]
    with_tokens = [a.json() for a in answers if "access" in a.json()]
    assert len(with_tokens) == 1  # the session id in the URL is worth one login
    login = with_tokens[0]
    assert login["user"]["email"] == email and login["user"]["track"] == "FSD"
    me = await profile(client, login)
    assert (me["enrollment_status"], me["name"], me["track"]) == ("ENROLLED", "Guest Payer", "FSD")
    later = await client.get(VERIFY, params={"session_id": session_id})
    assert later.json()["success"] is True and "access" not in later.json()


async def test_a_guest_paying_with_an_existing_accounts_email_gets_no_login(shop) -> None:
    server, client, fake = shop
    owner = await register(client, track="DP")
    answer = await client.post(CHECKOUT, json={"track": "DP", "success_url": SUCCESS, "cancel_url": CANCEL})
    session_id = answer.json()["url"].rsplit("/", 1)[1]
    fake.pay_session(session_id, owner["user"]["email"])
    # The webhook comes first this time; then the success page.
    assert (await deliver(client, fake, session_id)).status_code == 200
    verified = (await client.get(VERIFY, params={"session_id": session_id})).json()
    assert verified["success"] is True and "access" not in verified and "user" not in verified
    assert (await profile(client, owner))["enrollment_status"] == "ENROLLED"  # enrolled, at worst a gift


async def test_verify_enrols_a_paid_session_once_and_only_its_owner(shop) -> None:
    server, client, fake = shop
    student, other = await register(client), await register(client)
    url = (await checkout(client, student, {"track": "DP", "success_url": SUCCESS, "cancel_url": CANCEL})
           ).json()["url"]
    session_id = url.rsplit("/", 1)[1]
    unpaid = await client.get(VERIFY, params={"session_id": session_id}, headers=auth(student))
    assert unpaid.status_code == 200, unpaid.text
    assert (unpaid.json()["success"], unpaid.json()["paid"], unpaid.json()["enrollment_status"]) == (
        False, False, "PENDING_PAYMENT")
    assert (await client.get(VERIFY, params={"session_id": session_id}, headers=auth(other))).status_code == 404
    for bad in ("", "pi_123", "cs_" + "x" * 300, "cs_a/../b"):
        answer = await client.get(VERIFY, params={"session_id": bad}, headers=auth(student))
        assert answer.status_code == 400 and "session_id" in answer.json()["details"], answer.text
    fake.pay_session(session_id)
    answers = await asyncio.gather(*(client.get(VERIFY, params={"session_id": session_id}, headers=auth(student))
                                     for _ in range(5)))
    assert all(a.status_code == 200 and a.json()["success"] for a in answers), [a.text for a in answers]
    assert not any("access" in a.json() for a in answers)  # an existing account: never tokens
    me = await profile(client, student)
    assert (me["enrollment_status"], me["payment_verified"], me["track"]) == ("ENROLLED", True, "DP")
    assert me["enrolled_at"]
    payments = (await client.get("/api/payments/my-payments/", headers=auth(student))).json()["payments"]
    assert [(p["status"], p["paymentIntentId"]) for p in payments] == [
        ("succeeded", fake.sessions[session_id]["payment_intent"])]
    # The webhook arriving afterwards changes nothing more.
    assert (await deliver(client, fake, session_id)).status_code == 200
    assert (await profile(client, student))["enrolled_at"] == me["enrolled_at"]


async def test_the_webhook_enrols_idempotently(shop) -> None:
    server, client, fake = shop
    student = await register(client, track="DP")
    url = (await checkout(client, student, {"track": "FSD", "success_url": SUCCESS, "cancel_url": CANCEL})
           ).json()["url"]
    session_id = url.rsplit("/", 1)[1]
    # Completed but not paid yet (a delayed payment method): no enrolment.
    assert (await deliver(client, fake, session_id)).json() == {"received": True}  # applied, not ignored
    assert (await profile(client, student))["enrollment_status"] == "PENDING_PAYMENT"
    fake.pay_session(session_id)
    answers = await asyncio.gather(*(deliver(client, fake, session_id, event_id="evt_same") for _ in range(4)))
    assert sorted(a.json().get("duplicate", False) for a in answers) == [False, True, True, True]
    assert (await deliver(client, fake, session_id)).status_code == 200  # another event id, same session
    me = await profile(client, student)
    assert (me["enrollment_status"], me["track"]) == ("ENROLLED", "FSD")
    payments = (await client.get("/api/payments/my-payments/", headers=auth(student))).json()["payments"]
    assert [p["status"] for p in payments] == ["succeeded"]
    # A session this server never made is ignored.
    fake.sessions["cs_test_foreign"] = {**fake.sessions[session_id], "id": "cs_test_foreign"}
    assert (await deliver(client, fake, "cs_test_foreign")).status_code == 200


async def test_an_idempotency_key_gives_the_same_session(shop) -> None:
    server, client, fake = shop
    student = await register(client)
    body = {"track": "DP", "success_url": SUCCESS, "cancel_url": CANCEL}
    first, again = await asyncio.gather(*(checkout(client, student, body, **{"Idempotency-Key": "k-1"})
                                          for _ in range(2)))
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert len(fake.sessions) == 1
    assert len((await client.get("/api/payments/my-payments/", headers=auth(student))).json()["payments"]) == 1


# -- in Chromium: the redirect to the (fake) Stripe page and back -----------------------------
# The original pages' calls, as they make them: plain fetch, no token, the
# API on the page's own origin (setup A) or NEXT_PUBLIC_API_URL (B).
GET_STARTED = """<!doctype html><title>Get started</title><button id="start">Enroll</button><script>
const api = new URLSearchParams(location.search).get("api");
localStorage.setItem("api", api);
document.getElementById("start").onclick = async () => {
  const response = await fetch(api + "/api/payments/create-simple-checkout/", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({track: "DP", success_url: `${window.location.origin}/payment/success`,
                          cancel_url: `${window.location.origin}/get-started`})});
  const data = await response.json();
  window.location.href = data.url;
};
</script>"""
SUCCESS_PAGE = """<!doctype html><title>Payment success</title><p id="result">verifying</p><script>
const verify = async (sessionId) => {
  const response = await fetch(localStorage.getItem("api")
                               + `/api/payments/verify-checkout-session/?session_id=${sessionId}`);
  if (response.status === 202) { setTimeout(() => verify(sessionId), 300); return; }
  const data = await response.json();
  if (data.success) {
    if (data.access) localStorage.setItem("access_token", data.access);
    if (data.refresh) localStorage.setItem("refresh_token", data.refresh);
    document.getElementById("result").textContent = "success";
  } else {
    document.getElementById("result").textContent = "failed " + response.status;
  }
};
verify(new URLSearchParams(location.search).get("session_id"));
</script>"""


class Page(web.RequestHandler):
    def initialize(self, body: str) -> None:
        self.body = body

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.write(self.body)


@pytest.mark.browser
async def test_checkout_in_chromium_redirects_to_stripe_and_back(browser, fake_stripe, start_server) -> None:  # noqa: F811
    http, url = listen(web.Application([(r"/get-started", Page, {"body": GET_STARTED}),
                                        (r"/payment/success", Page, {"body": SUCCESS_PAGE})]))
    frontend = url.replace("127.0.0.1", "localhost")
    server = await start_server(**stripe_settings(fake_stripe, cors_origins=frontend))
    fake_stripe.webhook_url, fake_stripe.webhook_secret = server.url + "/api/payments/webhook/", WEBHOOK_SECRET
    context = await browser.new_context()
    context.set_default_timeout(15000)
    try:
        page = await context.new_page()
        await page.goto(f"{frontend}/get-started?api={server.url}")
        await page.click("#start")
        await page.wait_for_url(f"{fake_stripe.url}/pay/cs_test_*")
        assert await page.inner_text("#total") == "499.00 USD"
        email = f"browser-{id(page)}@example.com"
        await page.fill("#email", email)
        await page.fill("#name", "Browser Payer")
        await page.click("#pay")
        await page.wait_for_url(f"{frontend}/payment/success?session_id=cs_test_*")
        await page.locator("#result", has_text="success").wait_for()
        access = await page.evaluate("localStorage.getItem('access_token')")
        assert access, "the success page got no login"
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            me = await profile(client, {"access": access})
            assert (me["email"], me["enrollment_status"], me["payment_verified"]) == (email, "ENROLLED", True)
        # Giving up on the Stripe page leads back to the frontend, nothing paid.
        await page.goto(f"{frontend}/get-started?api={server.url}")
        await page.click("#start")
        await page.wait_for_url(f"{fake_stripe.url}/pay/cs_test_*")
        await page.click("#cancel")
        await page.wait_for_url(f"{frontend}/get-started")
        assert sum(s["payment_status"] == "paid" for s in fake_stripe.sessions.values()) == 1
    finally:
        await context.close()
        await close(http)


async def test_a_new_guest_account_is_mailed_a_set_password_link(fake_stripe, start_server, smtp) -> None:  # noqa: F811
    server = await start_server(**stripe_settings(fake_stripe), **smtp.settings())
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        answer = await client.post(CHECKOUT, json={"track": "DP", "success_url": SUCCESS, "cancel_url": CANCEL})
        session_id = answer.json()["url"].rsplit("/", 1)[1]
        email = f"mailed-{session_id[-8:]}@example.com"
        fake_stripe.pay_session(session_id, email)
        assert (await deliver(client, fake_stripe, session_id)).status_code == 200  # the webhook makes it
        message = await smtp.wait_for(email, subject="Reset")
        assert "https://apranova.test/reset-password?uid=" in message.get_content()
