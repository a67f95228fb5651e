from __future__ import annotations

import socket

import httpx
import pytest

from tests.support.fake_oauth import FakeGitHub, FakeGoogle

REDIRECT = "http://localhost:3000/auth/callback"


OTHER_REDIRECT = "http://localhost:8000/auth/callback"


VERIFIER = "v" * 43


# Sign-in needs no Docker; keeping the workspace watcher away from the engine
# also keeps these tests clear of its event stream (see the report on
# services/workspaces.py close() hanging while that stream is cancelled).
NO_DOCKER = "unix:///nonexistent/apranova-oauth-tests.sock"


def provider_settings(google: FakeGoogle | None = None, github: FakeGitHub | None = None) -> dict:
    settings: dict = {"oauth_redirect_uris": f"{REDIRECT},{OTHER_REDIRECT}", "oauth_timeout": "3",
                      "docker_host": NO_DOCKER}
    if google:
        settings.update(google_client_id=google.client_id, google_client_secret=google.client_secret,
                        google_authorize_url=google.url + google.authorize_path,
                        google_token_url=google.url + google.token_path, google_jwks_url=google.url + "/certs",
                        google_issuer=google.issuer)
    if github:
        settings.update(github_client_id=github.client_id, github_client_secret=github.client_secret,
                        github_authorize_url=github.url + github.authorize_path,
                        github_token_url=github.url + github.token_path, github_api_base=github.api_base)
    return settings


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def post(api: httpx.AsyncClient, provider: str, code: str, redirect_uri: str = REDIRECT, **extra) -> httpx.Response:
    return await api.post(f"/api/auth/{provider}/", json={"code": code, "redirect_uri": redirect_uri, **extra})


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
