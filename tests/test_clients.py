"""Drop-in for the original platform's own clients (issue 12): each test sends
exactly what its Next.js/axios client sends and reads what it reads."""
from __future__ import annotations

import httpx

from tests.accounts_helpers import auth, login, register

ALLOWED = "http://localhost:3000"


# -- 1. credentialed CORS ---------------------------------------------------------------------
async def test_cors_allows_credentials_for_listed_origins(client):
    preflight = await client.options("/api/users/profile/", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    data = await register(client)
    ok = await client.get("/api/users/profile/", headers={**auth(data), "Origin": ALLOWED})
    assert ok.headers["access-control-allow-credentials"] == "true"
    failed = await login(client, "nobody@example.com", "Wrong-Password-1", Origin=ALLOWED)
    assert failed.status_code == 401 and failed.headers["access-control-allow-credentials"] == "true"
    other = await client.get("/api/users/profile/", headers={**auth(data), "Origin": "http://evil.example"})
    assert "access-control-allow-credentials" not in other.headers


async def test_cors_wildcard_never_allows_credentials(start_server):
    server = await start_server(cors_origins="*,https://app.example.org")
    async with httpx.AsyncClient(base_url=server.url) as http:
        headers = {"Access-Control-Request-Method": "POST"}
        anyone = await http.options("/api/users/login/", headers={**headers, "Origin": "http://anyone.example"})
        assert anyone.headers["access-control-allow-origin"] == "http://anyone.example"
        assert "access-control-allow-credentials" not in anyone.headers
        response = await http.post("/api/users/check-email/", json={"email": "a@example.com"},
                                   headers={"Origin": "http://anyone.example"})
        assert "access-control-allow-credentials" not in response.headers
        listed = await http.options("/api/users/login/", headers={**headers, "Origin": "https://app.example.org"})
        assert listed.headers["access-control-allow-credentials"] == "true"
