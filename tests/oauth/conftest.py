from __future__ import annotations

import httpx
import pytest

from tests.support.fake_oauth import FakeGitHub, FakeGoogle
from tests.support.oauth import provider_settings


@pytest.fixture
async def google():
    fake = await FakeGoogle().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def github():
    fake = await FakeGitHub().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def app(start_server, google, github):
    return await start_server(**provider_settings(google, github))


@pytest.fixture
async def api(app):
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        yield http
