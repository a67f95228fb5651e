from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.app import auth
from tests.support.fake_stripe import FakeStripe, sign

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
async def pay_server(fake_stripe, start_server):
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
