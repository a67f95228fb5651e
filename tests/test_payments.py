"""Payments over HTTP against a Stripe played by tests/fake_stripe.py on
loopback (the server talks to it with the official `stripe` package through
STRIPE_API_BASE), with webhooks signed by Stripe's real scheme."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from tests.support.app import auth, register
from tests.support.fake_stripe import sign
from tests.support.payments import CREATE, create, deliver, MINE, PUBLISHABLE_KEY, SECRET_KEY, stripe_settings, WEBHOOK, WEBHOOK_SECRET


def assert_envelope(response: httpx.Response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str), body
    if error is not None:
        assert body["error"] == error, body
    assert "Traceback" not in response.text
    return body


# -- create-payment: happy paths ---------------------------------------------------------------

async def test_create_payment_returns_client_secret_and_records_a_created_payment(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    response = await create(pay, tokens, {"amount": 999.00, "currency": "usd"})
    assert response.status_code == 200, response.text
    body = response.json()
    intent = fake_stripe.intents[body["paymentIntentId"]]
    assert body == {"clientSecret": intent["client_secret"], "publishableKey": PUBLISHABLE_KEY,
                    "paymentIntentId": intent["id"], "amount": 99900, "currency": "usd"}
    # What Stripe was asked: minor units, the user id in the metadata, our key.
    sent = fake_stripe.creates[-1]
    assert sent.params["amount"] == "99900" and sent.params["currency"] == "usd"
    assert sent.params["metadata"]["user_id"] == str(tokens["user"]["id"])
    assert sent.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.headers.get("Idempotency-Key")  # one is always sent
    stored = await pay_server.db.payments.find_one({"payment_intent_id": intent["id"]})
    assert stored["status"] == "created" and stored["amount"] == 99900 and isinstance(stored["amount"], int)
    assert stored["user_id"] == tokens["user"]["id"] and stored["currency"] == "usd"
    # The secret key never reaches the client.
    assert SECRET_KEY not in response.text


@pytest.mark.parametrize("raw, currency, minor", [
    (b"999.00", "usd", 99900), (b"500", "jpy", 500), (b"0.5", "usd", 50), (b"19.99", "usd", 1999),
    (b"1e2", "usd", 10000), (b"1.25", "kwd", 1250), (b"4.35", "usd", 435), (b"1.15", "usd", 115), (b"10000", "usd", 1000000),
    (b"1.10", "eur", 110),
])
async def test_amounts_convert_exactly_to_minor_units(pay, fake_stripe, raw, currency, minor):
    tokens = await register(pay)
    body = b'{"amount": ' + raw + b', "currency": "' + currency.encode() + b'"}'
    response = await create(pay, tokens, raw=body)
    assert response.status_code == 200, response.text
    assert response.json()["amount"] == minor and response.json()["currency"] == currency
    assert fake_stripe.creates[-1].params["amount"] == str(minor)


async def test_currency_defaults_to_the_first_allowed_and_ignores_case(pay, fake_stripe):
    tokens = await register(pay)
    assert (await create(pay, tokens, {"amount": 10})).json()["currency"] == "usd"
    response = await create(pay, tokens, {"amount": 600, "currency": "JPY"})
    assert response.status_code == 200, response.text
    assert response.json()["currency"] == "jpy" and response.json()["amount"] == 600


async def test_a_track_is_priced_from_settings_and_carried_in_the_metadata(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    response = await create(pay, tokens, {"track": "FSD"})
    assert response.status_code == 200, response.text
    assert response.json()["amount"] == 59900 and response.json()["currency"] == "usd"
    assert fake_stripe.creates[-1].params["metadata"] == {"user_id": str(tokens["user"]["id"]), "track": "FSD"}
    stored = await pay_server.db.payments.find_one({"payment_intent_id": response.json()["paymentIntentId"]})
    assert stored["track"] == "FSD"


async def test_track_prices_and_the_maximum_come_from_settings(fake_stripe, start_server):
    server = await start_server(**stripe_settings(fake_stripe, track_prices="DP=10.50", payment_max_amount="100"))
    async with httpx.AsyncClient(base_url=server.url) as client:
        tokens = await register(client)
        assert (await create(client, tokens, {"track": "DP"})).json()["amount"] == 1050
        assert (await create(client, tokens, {"amount": 100})).status_code == 200
        over = assert_envelope(await create(client, tokens, {"amount": 100.01}), 400)
        assert over["amount"] == ["Must be at most 100 USD."]
        assert_envelope(await create(client, tokens, {"track": "FSD"}), 400)  # no price for it now


# -- create-payment: the amount and currency rules ------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"0.30000000000000004",  # 0.1 + 0.2 as a float writes it: refused, never rounded to 0.30
    b"19.999", b"999.001", b"1e-400", b"0.1000000000000000000000000000000000000001",
    b"0", b"-0", b"0.00", b"-5", b"-999.00", b"10000.01", b"1e400", b"99999999999999999999999",
    b"true", b"false", b'"999.00"', b'"abc"', b'{"$gt": 0}', b"[999]", b"null",
])
async def test_bad_amounts_are_400_and_nothing_is_sent_to_stripe(pay, pay_server, fake_stripe, raw):
    tokens = await register(pay)
    response = await create(pay, tokens, raw=b'{"amount": ' + raw + b', "currency": "usd"}')
    body = assert_envelope(response, 400)
    assert isinstance(body["amount"], list) and body["amount"], body
    assert fake_stripe.creates == []
    assert await pay_server.db.payments.count_documents({}) == 0


@pytest.mark.parametrize("raw, currency", [(b"500.5", "jpy"), (b"1.255", "kwd"), (b"1.005", "eur")])
async def test_amounts_finer_than_the_currency_are_refused(pay, fake_stripe, raw, currency):
    tokens = await register(pay)
    response = await create(pay, tokens, raw=b'{"amount": ' + raw + b', "currency": "' + currency.encode() + b'"}')
    assert "decimal" in assert_envelope(response, 400)["amount"][0] or "whole" in response.json()["amount"][0]
    assert fake_stripe.creates == []


@pytest.mark.parametrize("raw", [b'{"amount": NaN}', b'{"amount": Infinity}', b'{"amount": -Infinity}',
                                 b'{"amount": 999.00', b"[1, 2]", b'"999"'])
async def test_non_json_numbers_and_non_objects_are_400(pay, fake_stripe, raw):
    tokens = await register(pay)
    assert_envelope(await create(pay, tokens, raw=raw), 400)
    assert fake_stripe.creates == []


@pytest.mark.parametrize("currency", ["gbp", "US", "usdollar", "", {"$ne": "usd"}, ["usd"], 840, True])
async def test_currencies_outside_the_allow_list_are_400(pay, fake_stripe, currency):
    tokens = await register(pay)
    body = assert_envelope(await create(pay, tokens, {"amount": 10, "currency": currency}), 400)
    assert body["currency"], body
    assert fake_stripe.creates == []


@pytest.mark.parametrize("body, field", [
    ({"track": "DP", "amount": 10}, "amount"), ({"track": "NOPE"}, "track"), ({"track": "DP", "currency": "jpy"},
                                                                                "currency"),
    ({"track": {"$ne": ""}}, "track"), ({}, "amount"), ({"currency": "usd"}, "amount"),
])
async def test_track_requests_are_checked(pay, fake_stripe, body, field):
    tokens = await register(pay)
    assert assert_envelope(await create(pay, tokens, body), 400)[field]
    assert fake_stripe.creates == []


# -- create-payment: Stripe failures, configuration, auth -----------------------------------------

@pytest.mark.parametrize("mode, status, error", [
    ("card_declined", 402, "Payment declined"), ("invalid_request", 400, "Payment rejected"),
    ("api_error", 502, "Payment provider error"), ("rate_limit", 503, "Payment provider busy"),
])
async def test_stripe_errors_map_to_4xx_or_5xx_envelopes_and_record_nothing(pay, pay_server, fake_stripe,
                                                                             mode, status, error):
    tokens = await register(pay)
    fake_stripe.fail_next.append(mode)
    response = await create(pay, tokens, {"amount": 20})
    body = assert_envelope(response, status, error)
    assert await pay_server.db.payments.count_documents({}) == 0
    if mode == "card_declined":
        assert body["details"]["decline_code"] == "insufficient_funds"
        assert body["message"] == "Your card has insufficient funds."
    if mode == "rate_limit":
        assert int(response.headers["Retry-After"]) > 0
    # The next request goes through.
    assert (await create(pay, tokens, {"amount": 20})).status_code == 200


async def test_stripe_refusing_our_key_is_a_502_without_the_key(fake_stripe, start_server):
    server = await start_server(**stripe_settings(fake_stripe, stripe_secret_key="sk_test_wrong_" + "z" * 20))
    async with httpx.AsyncClient(base_url=server.url) as client:
        tokens = await register(client)
        response = await create(client, tokens, {"amount": 20})
        assert_envelope(response, 502, "Payment provider error")
        assert "sk_test" not in response.text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_stripe_is_a_502(fake_stripe, start_server):
    server = await start_server(**stripe_settings(fake_stripe, stripe_api_base=f"http://127.0.0.1:{closed_port()}"))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        tokens = await register(client)
        started = time.monotonic()
        body = assert_envelope(await create(client, tokens, {"amount": 20}), 502, "Payment provider unreachable")
        assert time.monotonic() - started < 20, "retries are bounded"
        assert "127.0.0.1" not in json.dumps(body)
        assert await server.db.payments.count_documents({}) == 0


async def test_payments_without_stripe_configured_answer_503(start_server):
    server = await start_server()  # no STRIPE_* keys
    async with httpx.AsyncClient(base_url=server.url) as client:
        tokens = await register(client)
        body = assert_envelope(await create(client, tokens, {"amount": 20}), 503, "Payments not available")
        assert "Retry-After" in (await create(client, tokens, {"amount": 20})).headers
        assert "STRIPE_SECRET_KEY" in body["details"]
        payload = b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {}}}'
        webhook = await client.post(WEBHOOK, content=payload, headers={
            "Content-Type": "application/json", "Stripe-Signature": sign(payload, WEBHOOK_SECRET)})
        assert_envelope(webhook, 503)
        # Listing works without Stripe.
        assert (await client.get(MINE, headers=auth(tokens))).json() == {"payments": []}


async def test_create_payment_needs_authentication(pay, fake_stripe):
    assert_envelope(await pay.post(CREATE, json={"amount": 10}), 401)
    assert_envelope(await pay.post(CREATE, json={"amount": 10}, headers={"Authorization": "Bearer nonsense"}), 401)
    assert_envelope(await pay.get(MINE), 401)
    assert fake_stripe.creates == []


# -- idempotency ---------------------------------------------------------------------------------------

async def test_the_clients_idempotency_key_is_forwarded_and_a_retry_gives_the_same_payment(pay, pay_server,
                                                                                          fake_stripe):
    tokens = await register(pay)
    key = "order-42-" + tokens["user"]["email"]
    first = await create(pay, tokens, {"amount": 25}, **{"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    assert fake_stripe.creates[-1].headers["Idempotency-Key"] == key
    retries = await asyncio.gather(*(create(pay, tokens, {"amount": 25}, **{"Idempotency-Key": key})
                                     for _ in range(3)))
    assert [r.status_code for r in retries] == [200] * 3
    assert all(r.json() == first.json() for r in retries)
    assert len(fake_stripe.intents) == 1
    assert await pay_server.db.payments.count_documents({}) == 1
    # Without a key every request is a new payment (the server sends its own, distinct keys).
    await create(pay, tokens, {"amount": 25})
    await create(pay, tokens, {"amount": 25})
    keys = [r.headers["Idempotency-Key"] for r in fake_stripe.creates]
    assert len(set(keys)) == 3 and len(fake_stripe.intents) == 3


async def test_an_idempotency_key_reused_for_another_payment_or_user_is_409(pay, pay_server, fake_stripe):
    alice, bob = await register(pay), await register(pay)
    key = "shared-key-1"
    first = await create(pay, alice, {"amount": 25}, **{"Idempotency-Key": key})
    assert first.status_code == 200
    assert_envelope(await create(pay, alice, {"amount": 26}, **{"Idempotency-Key": key}), 409)
    other = await create(pay, bob, {"amount": 25}, **{"Idempotency-Key": key})
    assert_envelope(other, 409)
    assert first.json()["clientSecret"] not in other.text
    assert await pay_server.db.payments.count_documents({"user_id": bob["user"]["id"]}) == 0


@pytest.mark.parametrize("key", ["x" * 256, "has space", "caf\u00e9"])
async def test_a_malformed_idempotency_key_is_400(pay, fake_stripe, key):
    tokens = await register(pay)
    response = await pay.post(CREATE, json={"amount": 10},
                              headers={**auth(tokens), "Idempotency-Key": key.encode("utf-8")})
    assert_envelope(response, 400, "Invalid Idempotency-Key")
    assert fake_stripe.creates == []


# -- webhook -------------------------------------------------------------------------------------------

async def new_payment(client: httpx.AsyncClient, tokens: dict, body: dict | None = None) -> str:
    response = await create(client, tokens, body or {"amount": 499})
    assert response.status_code == 200, response.text
    return response.json()["paymentIntentId"]


async def status_of(server, intent_id: str) -> str:
    return (await server.db.payments.find_one({"payment_intent_id": intent_id}))["status"]


async def me(client: httpx.AsyncClient, tokens: dict) -> dict:
    response = await client.get("/api/users/profile/", headers=auth(tokens))
    assert response.status_code == 200, response.text
    return response.json()


async def test_payment_succeeded_enrolls_the_user_in_the_paid_track(pay, pay_server, fake_stripe):
    tokens = await register(pay, track="DP")
    before = await me(pay, tokens)
    assert before["payment_verified"] is False and before["enrollment_status"] == "PENDING_PAYMENT"
    intent_id = await new_payment(pay, tokens, {"track": "FSD"})
    response = await deliver(pay, fake_stripe.intent_event("payment_intent.succeeded", intent_id))
    assert response.status_code == 200 and response.json()["received"] is True
    assert await status_of(pay_server, intent_id) == "succeeded"
    after = await me(pay, tokens)
    assert after["payment_verified"] is True and after["enrollment_status"] == "ENROLLED"
    assert after["track"] == "FSD"
    user = await pay_server.db.users.find_one({"_id": tokens["user"]["id"]})
    assert abs((user["enrolled_at"] - user["created_at"]).total_seconds()) < 60  # a real datetime
    payment = await pay_server.db.payments.find_one({"payment_intent_id": intent_id})
    assert payment["succeeded_at"] >= payment["created_at"]


async def test_payment_failed_marks_it_failed_and_a_later_success_still_counts(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    intent_id = await new_payment(pay, tokens)
    assert (await deliver(pay, fake_stripe.intent_event("payment_intent.payment_failed", intent_id))).status_code == 200
    payment = await pay_server.db.payments.find_one({"payment_intent_id": intent_id})
    assert payment["status"] == "failed" and payment["failure_message"] == "Your card was declined."
    assert (await me(pay, tokens))["payment_verified"] is False
    # The customer retries with another card: the same intent succeeds.
    await deliver(pay, fake_stripe.intent_event("payment_intent.succeeded", intent_id))
    assert await status_of(pay_server, intent_id) == "succeeded"
    assert (await me(pay, tokens))["enrollment_status"] == "ENROLLED"


async def test_refunds_full_and_partial(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    intent_id = await new_payment(pay, tokens, {"amount": 100})
    await deliver(pay, fake_stripe.intent_event("payment_intent.succeeded", intent_id))
    assert (await deliver(pay, fake_stripe.refund_event(intent_id, amount_refunded=2500))).status_code == 200
    payment = await pay_server.db.payments.find_one({"payment_intent_id": intent_id})
    assert payment["status"] == "succeeded" and payment["amount_refunded"] == 2500  # partial: still paid
    assert (await deliver(pay, fake_stripe.refund_event(intent_id))).status_code == 200
    payment = await pay_server.db.payments.find_one({"payment_intent_id": intent_id})
    assert payment["status"] == "refunded" and payment["amount_refunded"] == 10000
    listed = (await pay.get(MINE, headers=auth(tokens))).json()["payments"][0]
    assert listed["status"] == "refunded" and listed["amount_refunded"] == 10000


async def test_out_of_order_events_never_move_a_payment_backwards(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    intent_id = await new_payment(pay, tokens)
    succeeded = fake_stripe.intent_event("payment_intent.succeeded", intent_id)
    failed_earlier = fake_stripe.intent_event("payment_intent.payment_failed", intent_id,)
    failed_earlier["created"] = succeeded["created"] - 30
    await deliver(pay, succeeded)
    response = await deliver(pay, failed_earlier)  # arrives late
    assert response.status_code == 200
    assert await status_of(pay_server, intent_id) == "succeeded"
    assert (await me(pay, tokens))["payment_verified"] is True
    # A refund then a late success: stays refunded.
    other = await new_payment(pay, tokens)
    await deliver(pay, fake_stripe.refund_event(other))
    await deliver(pay, fake_stripe.intent_event("payment_intent.succeeded", other))
    assert await status_of(pay_server, other) == "refunded"


async def test_a_refund_arriving_before_the_success_does_not_enroll(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    intent_id = await new_payment(pay, tokens)
    await deliver(pay, fake_stripe.refund_event(intent_id))
    await deliver(pay, fake_stripe.intent_event("payment_intent.succeeded", intent_id))
    assert await status_of(pay_server, intent_id) == "refunded"
    assert (await me(pay, tokens))["payment_verified"] is False


async def test_a_replayed_event_is_processed_once(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    intent_id = await new_payment(pay, tokens)
    failed = fake_stripe.intent_event("payment_intent.payment_failed", intent_id)
    assert (await deliver(pay, failed)).json() == {"received": True}
    await deliver(pay, fake_stripe.intent_event("payment_intent.succeeded", intent_id))
    # Stripe retries the failure event (same id): recognised, not applied again.
    replays = await asyncio.gather(*(deliver(pay, failed) for _ in range(3)))
    assert [r.json() for r in replays] == [{"received": True, "duplicate": True}] * 3
    assert await pay_server.db.stripe_events.count_documents({"event_id": failed["id"]}) == 1
    assert await status_of(pay_server, intent_id) == "succeeded"


async def test_concurrent_deliveries_of_one_event_apply_it_once(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    intent_id = await new_payment(pay, tokens)
    event = fake_stripe.intent_event("payment_intent.succeeded", intent_id)
    responses = await asyncio.gather(*(deliver(pay, event) for _ in range(5)))
    assert sorted(r.json().get("duplicate", False) for r in responses) == [False] + [True] * 4
    assert await status_of(pay_server, intent_id) == "succeeded"


async def signed_garbage(client, fake, intent_id) -> list[httpx.Response]:
    event = fake.intent_event("payment_intent.succeeded", intent_id)
    payload = json.dumps(event).encode()
    now = int(time.time())
    good = sign(payload, WEBHOOK_SECRET, now)
    tampered = json.dumps({**event, "id": "evt_tampered"}).encode()
    headers = {"Content-Type": "application/json"}
    return [
        await deliver(client, event, secret="whsec_someone_else"),  # bad signature
        await deliver(client, event, signature=""),  # missing header
        await deliver(client, event, timestamp=now - 3600),  # stale (a replay of an old capture)
        await deliver(client, event, signature="t=abc,v1=zz"),  # malformed header
        await deliver(client, event, signature=f"t={now},v0={good.split('v1=')[1]}"),  # wrong scheme
        await client.post(WEBHOOK, content=tampered, headers={**headers, "Stripe-Signature": good}),
        await client.post(WEBHOOK, content=b"\xff\xfe" + payload, headers={**headers, "Stripe-Signature": good}),
    ]


async def test_bad_missing_or_stale_signatures_are_400_and_change_nothing(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    intent_id = await new_payment(pay, tokens)
    for response in await signed_garbage(pay, fake_stripe, intent_id):
        assert_envelope(response, 400)
    assert await status_of(pay_server, intent_id) == "created"
    assert await pay_server.db.stripe_events.count_documents({}) == 0
    assert (await me(pay, tokens))["payment_verified"] is False


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"type": "payment_intent.succeeded"}',
                                     b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": []}',
                                     b'{"id": 5, "type": "payment_intent.succeeded", "data": {"object": {}}}',
                                     b'{"id": "evt_1", "type": ["x"], "data": {"object": {}}}'])
async def test_signed_but_malformed_events_are_400(pay, pay_server, payload):
    response = await pay.post(WEBHOOK, content=payload, headers={
        "Content-Type": "application/json", "Stripe-Signature": sign(payload, WEBHOOK_SECRET)})
    assert_envelope(response, 400, "Malformed event")
    assert await pay_server.db.stripe_events.count_documents({}) == 0


async def test_unknown_events_and_unknown_intents_get_200_and_are_ignored(pay, pay_server, fake_stripe):
    tokens = await register(pay)
    intent_id = await new_payment(pay, tokens)
    response = await deliver(pay, fake_stripe.event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert response.status_code == 200 and response.json() == {"received": True, "ignored": True}
    foreign = fake_stripe.event("payment_intent.succeeded", {"id": "pi_not_ours", "object": "payment_intent",
                                                              "metadata": {"user_id": str(tokens["user"]["id"])}})
    assert (await deliver(pay, foreign)).status_code == 200
    assert await pay_server.db.payments.count_documents({"payment_intent_id": "pi_not_ours"}) == 0
    assert (await me(pay, tokens))["payment_verified"] is False
    assert await status_of(pay_server, intent_id) == "created"


async def test_the_webhook_needs_no_auth_and_is_not_rate_limited(fake_stripe, start_server):
    server = await start_server(**stripe_settings(fake_stripe, rate_limit_anon="3/hour"))
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(6):
            event = fake_stripe.event("customer.created", {"id": "cus_1", "object": "customer"})
            response = await deliver(client, event)
            assert response.status_code == 200, response.text
            assert "X-RateLimit-Limit" not in response.headers


# -- my-payments ---------------------------------------------------------------------------------------

async def test_my_payments_lists_only_the_callers_payments_newest_first(pay, pay_server, fake_stripe):
    alice, bob = await register(pay), await register(pay)
    first = await new_payment(pay, alice, {"amount": 10})
    second = await new_payment(pay, alice, {"track": "DP"})
    bobs = await new_payment(pay, bob, {"amount": 30})
    await deliver(pay, fake_stripe.intent_event("payment_intent.succeeded", first))
    listed = (await pay.get(MINE, headers=auth(alice))).json()["payments"]
    assert [p["paymentIntentId"] for p in listed] == [second, first]
    assert listed[0]["track"] == "DP" and listed[0]["amount"] == 49900 and listed[0]["status"] == "created"
    assert listed[1]["status"] == "succeeded" and listed[1]["amount"] == 1000 and listed[1]["currency"] == "usd"
    assert set(listed[0]) == {"id", "paymentIntentId", "amount", "currency", "status", "track", "amount_refunded",
                              "created_at", "updated_at"}
    text = (await pay.get(MINE, headers=auth(alice))).text
    assert bobs not in text and "secret" not in text
    assert [p["paymentIntentId"] for p in (await pay.get(MINE, headers=auth(bob))).json()["payments"]] == [bobs]
    limited = await pay.get(MINE, params={"limit": "1"}, headers=auth(alice))
    assert [p["paymentIntentId"] for p in limited.json()["payments"]] == [second]
    for bad in ("0", "101", "abc", "-1", "1.5"):
        assert_envelope(await pay.get(MINE, params={"limit": bad}, headers=auth(alice)), 400)
