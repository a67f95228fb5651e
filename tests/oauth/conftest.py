"""The sign-in tests' app with the fake Google and GitHub (their fixtures,
`google` and `github`, come from tests/support/oauth.py for every test)."""
from __future__ import annotations

import httpx
import pytest

from tests.support.oauth import provider_settings


@pytest.fixture
async def app(start_server, google, github):
    return await start_server(**provider_settings(google, github))


@pytest.fixture
async def api(app):
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        yield http
