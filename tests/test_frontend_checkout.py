"""Stripe Checkout as the original frontend uses it (issue 21 §3): its "Get
started" page POSTs /api/payments/create-simple-checkout/ {track,
success_url, cancel_url} and sends the browser to the answer's `url`; its
success page GETs /api/payments/verify-checkout-session/?session_id=.
Stripe is tests/fake_stripe.py on loopback, hosted page included."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import httpx
import pytest
from tornado import web

from tests.conftest import auth, register
from tests.fake_server import close, listen
from tests.fake_stripe import FakeStripe, sign
from tests.test_browser import browser  # noqa: F401 - fixture
from tests.test_payments import WEBHOOK_SECRET, fake_stripe, stripe_settings  # noqa: F401 - fixture

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


async def test_unauthenticated_and_unconfigured(start_server) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        body = {"track": "DP", "success_url": SUCCESS, "cancel_url": CANCEL}
        assert (await client.post(CHECKOUT, json=body)).status_code == 401
        assert (await client.get(VERIFY, params={"session_id": "cs_test_x"})).status_code == 401
        student = await register(client)
        assert (await checkout(client, student, body)).status_code == 503


async def test_verify_enrols_a_paid_session_once_and_only_its_owner(shop) -> None:
    server, client, fake = shop
    student, other = await register(client), await register(client)
    url = (await checkout(client, student, {"track": "DP", "success_url": SUCCESS, "cancel_url": CANCEL})
           ).json()["url"]
    session_id = url.rsplit("/", 1)[1]
    unpaid = await client.get(VERIFY, params={"session_id": session_id}, headers=auth(student))
    assert unpaid.status_code == 200, unpaid.text
    assert (unpaid.json()["paid"], unpaid.json()["enrolled"], unpaid.json()["enrollment_status"]) == (
        False, False, "PENDING_PAYMENT")
    assert (await client.get(VERIFY, params={"session_id": session_id}, headers=auth(other))).status_code == 404
    for bad in ("", "pi_123", "cs_" + "x" * 300, "cs_a/../b"):
        answer = await client.get(VERIFY, params={"session_id": bad}, headers=auth(student))
        assert answer.status_code == 400 and "session_id" in answer.json()["details"], answer.text
    fake.pay_session(session_id)
    answers = await asyncio.gather(*(client.get(VERIFY, params={"session_id": session_id}, headers=auth(student))
                                     for _ in range(5)))
    assert all(a.status_code == 200 and a.json()["enrolled"] for a in answers), [a.text for a in answers]
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
GET_STARTED = """<!doctype html><title>Get started</title><button id="start">Get started</button><script>
const params = new URLSearchParams(location.search);
document.getElementById("start").onclick = async () => {
  const answer = await fetch(params.get("api") + "/api/payments/create-simple-checkout/", {
    method: "POST", credentials: "include",
    headers: {"Content-Type": "application/json", Authorization: "Bearer " + localStorage.getItem("access_token")},
    body: JSON.stringify({track: "DP", success_url: location.origin + "/payment/success?session_id={CHECKOUT_SESSION_ID}",
                          cancel_url: location.origin + "/get-started"})});
  const data = await answer.json();
  localStorage.setItem("api", params.get("api"));
  window.location.href = data.url;
};
</script>"""
SUCCESS_PAGE = """<!doctype html><title>Payment success</title><p id="result">checking</p><script>
(async () => {
  const id = new URLSearchParams(location.search).get("session_id");
  const answer = await fetch(localStorage.getItem("api") + "/api/payments/verify-checkout-session/?session_id="
                             + encodeURIComponent(id), {credentials: "include",
                             headers: {Authorization: "Bearer " + localStorage.getItem("access_token")}});
  const data = await answer.json();
  document.getElementById("result").textContent = answer.status + " " + data.enrollment_status;
})();
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
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            student = await register(client)
            page = await context.new_page()
            await page.goto(f"{frontend}/get-started?api={server.url}")
            await page.evaluate("([a]) => localStorage.setItem('access_token', a)", [student["access"]])
            await page.click("#start")
            await page.wait_for_url(f"{fake_stripe.url}/pay/cs_test_*")
            assert await page.inner_text("#total") == "499.00 USD"
            await page.click("#pay")
            await page.wait_for_url(f"{frontend}/payment/success?session_id=cs_test_*")
            await page.locator("#result", has_text="200 ENROLLED").wait_for()
            me = await profile(client, student)
            assert (me["enrollment_status"], me["payment_verified"]) == ("ENROLLED", True)
            # Giving up on the Stripe page leads back to the frontend, unpaid.
            other = await register(client)
            await page.evaluate("([a]) => localStorage.setItem('access_token', a)", [other["access"]])
            await page.goto(f"{frontend}/get-started?api={server.url}")
            await page.click("#start")
            await page.wait_for_url(f"{fake_stripe.url}/pay/cs_test_*")
            await page.click("#cancel")
            await page.wait_for_url(f"{frontend}/get-started")
            assert (await profile(client, other))["enrollment_status"] == "PENDING_PAYMENT"
    finally:
        await context.close()
        await close(http)
