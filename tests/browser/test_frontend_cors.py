"""Preflights on paths we do not serve (issue 21 §6): the original frontend
calls endpoints of the original platform this server does not implement
(`/api/curriculum/tracks/` and others). Chromium preflights them; a preflight
answered 404 (or without CORS headers) is reported as a CORS failure instead
of the 404 the client could handle. Chromium drives it: it enforces CORS."""
from __future__ import annotations

from typing import AsyncIterator

import httpx
import pytest

from tests.support.browser import FETCH, open_page

FRONTEND = "http://localhost:3000"
PREFLIGHT = {"Origin": FRONTEND, "Access-Control-Request-Method": "GET",
             "Access-Control-Request-Headers": "authorization,content-type"}


@pytest.fixture
async def client(start_server) -> AsyncIterator[httpx.AsyncClient]:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http


@pytest.mark.parametrize("path", ["/api/curriculum/tracks/", "/api/quizzes/attempts/12/", "/api/unknown",
                                  "/api/support/tickets/?status=open"])
async def test_a_preflight_of_any_api_path_is_answered(client, path) -> None:
    answer = await client.options(path, headers=PREFLIGHT)
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == FRONTEND
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert "GET" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    # The request itself: the JSON 404, readable by that origin.
    missing = await client.get(path, headers={"Origin": FRONTEND, "Authorization": "Bearer x"})
    assert missing.status_code == 404 and missing.json()["error"] == "Not found"
    assert missing.headers["access-control-allow-origin"] == FRONTEND
    assert missing.headers["access-control-allow-credentials"] == "true"


async def test_other_origins_and_other_paths_get_no_cors(client) -> None:
    stranger = await client.options("/api/curriculum/tracks/", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers
    assert stranger.status_code in (204, 404)
    outside = await client.options("/not-api/x", headers=PREFLIGHT)
    assert outside.status_code == 404 and "access-control-allow-methods" not in outside.headers


@pytest.mark.browser
async def test_chromium_sees_the_404_not_a_cors_failure(browser, start_server, page_origin) -> None:  # noqa: F811
    server = await start_server(cors_origins=page_origin)
    page = await open_page(browser, page_origin)
    try:
        for method in ("GET", "POST"):
            answer = await page.evaluate(FETCH, [method, f"{server.url}/api/curriculum/tracks/",
                                                 None if method == "GET" else {"x": 1}, "token", "include"])
            assert answer["status"] == 404 and answer["data"]["error"] == "Not found", answer
    finally:
        await page.context.close()
