"""Payments over HTTP against a Stripe played by tests/fake_stripe.py on
loopback (the server talks to it with the official `stripe` package through
STRIPE_API_BASE), with webhooks signed by Stripe's real scheme."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest

from tests.conftest import auth, register
from tests.fake_stripe import FakeStripe, sign

SECRET_KEY = "sk_test_" + "k" * 24
PUBLISHABLE_KEY = "pk_test_" + "p" * 24
WEBHOOK_SECRET = "whsec_" + "w" * 32
CREATE = "/api/payments/create-payment/"
WEBHOOK = "/api/payments/webhook/"
MINE = "/api/payments/my-payments/"


@pytest.fixture
async def fake_stripe():
    fake = await FakeStripe(SECRET_KEY).start()
    yield fake
    await fake.stop()


def stripe_settings(fake: FakeStripe, **overrides: Any) -> dict[str, Any]:
    values = {"stripe_secret_key": SECRET_KEY, "stripe_publishable_key": PUBLISHABLE_KEY,
              "stripe_webhook_secret": WEBHOOK_SECRET, "stripe_api_base": fake.url,
              "payment_currencies": "usd,jpy,kwd,eur"}
    values.update(overrides)
    return values


@pytest.fixture
async def pay_server(start_server, fake_stripe):
    return await start_server(**stripe_settings(fake_stripe))


@pytest.fixture
async def pay(pay_server):
    async with httpx.AsyncClient(base_url=pay_server.url, timeout=30) as http:
        yield http


async def create(client: httpx.AsyncClient, tokens: dict, body: Any = None, *, raw: bytes | None = None,
                 **headers: str) -> httpx.Response:
    headers = {**auth(tokens), **headers}
    if raw is not None:
        return await client.post(CREATE, content=raw, headers={**headers, "Content-Type": "application/json"})
    return await client.post(CREATE, json=body, headers=headers)


async def deliver(client: httpx.AsyncClient, event: dict, *, secret: str = WEBHOOK_SECRET,
                  timestamp: int | None = None, signature: str | None = None) -> httpx.Response:
    payload = json.dumps(event).encode()
    header = signature if signature is not None else sign(payload, secret, timestamp)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if header:
        headers["Stripe-Signature"] = header
    return await client.post(WEBHOOK, content=payload, headers=headers)


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
