"""What every test module may call: the test app on a real port (RunningServer,
serve, app_settings), users made through the API (register, make_admin,
auth), and the Docker/CI switches. Fixtures live in conftest.py files."""
from __future__ import annotations

import contextlib
import itertools
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from handlers import make_app
from proxy.server import ProxyHTTPServer
from services import settings as settings_mod
from services.container import Services
from services.db import EmbeddedMongo

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_SECRET = "test-signing-key-" + "x" * 32
_counter = itertools.count(1)
NO_DOCKER = "unix:///nonexistent/apranova-tests.sock"  # an engine that is not there
# pytest-xdist's worker (gw0, gw1...) when the fast suite runs in several
# processes; 0 in a plain run.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])


def port_range(low: int, size: int = 50) -> str:
    """A fixed host-port range for the in-memory engine's listeners (the
    fixed ones start at 28000, 28100 and 28200), one slice per xdist worker:
    two workers binding one range would take each other's ports. Below
    Linux's ephemeral range (32768-60999) for up to 16 workers: a range
    inside it can collide with any loopback client's source port, and a
    one-port range then fails at random."""
    low += 300 * WORKER
    assert low + size <= 32768, f"port range {low}-{low + size - 1} reaches the ephemeral ports: fewer workers"
    return f"{low}-{low + size - 1}"

# Defaults for a test server: fast hashing, limits out of the way (tests of
# the limits set their own), a fixed key.
TEST_DEFAULTS: dict[str, Any] = {
    "bcrypt_rounds": "4",
    "jwt_secret": TEST_SECRET,
    "rate_limit_anon": "100000/hour",
    "rate_limit_user": "100000/hour",
    "rate_limit_workspace": "100000/hour",
    "rate_limit_login_failures": "100000/hour",
    "rate_limit_mail": "100000/hour",
    "log_level": "WARNING",
}


@dataclass
class RunningServer:
    url: str
    services: Services
    app: Any
    http: HTTPServer

    @property
    def db(self):
        return self.services.db

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):]

    async def stop(self) -> None:
        """As server.py stops: no new connections, services (and their
        WebSockets) closed, then whatever connection is left."""
        self.http.stop()
        await self.services.close()
        await self.http.close_all_connections()


async def serve(settings: settings_mod.Settings, extra_routes: list[tuple] | None = None) -> RunningServer:
    """The real app for `settings` on an ephemeral loopback port."""
    services = await Services(settings).start()
    app = make_app(services, extra_routes)
    sock, port = bind_unused_port()
    http = ProxyHTTPServer(app, max_body_size=64 * 1024 * 1024)  # as server.py (with the proxy's fast lane); the app's own 1 MiB limit is what answers
    http.add_sockets([sock])
    return RunningServer(f"http://127.0.0.1:{port}", services, app, http)


def app_settings(mongo: EmbeddedMongo, tmp_path: Path, **overrides: Any) -> settings_mod.Settings:
    values = {**TEST_DEFAULTS, "mongodb_uri": mongo.uri, "mongodb_db": f"t{next(_counter)}_{uuid.uuid4().hex[:6]}",
              "data_dir": str(tmp_path / "data")}
    values.update(overrides)
    return settings_mod.load(environ={}, **values)


_emails = itertools.count(1)


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}{next(_emails)}-{uuid.uuid4().hex[:6]}@example.com"


async def register(client: httpx.AsyncClient, *, role: str = "student", email: str | None = None,
                   password: str = "Correct-Horse-42", name: str = "Test User", track: str | None = "DP") -> dict:
    """Register through the API; returns the response body (tokens + user)."""
    body = {"name": name, "email": email or unique_email(role), "password1": password, "password2": password,
            "role": role}
    if track is not None:
        body["track"] = track
    response = await client.post("/api/auth/registration/", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    data["password"] = password
    return data


async def make_admin(server: RunningServer, client: httpx.AsyncClient, role: str = "admin") -> dict:
    """A registered user promoted in the database, as `create-user` would make one."""
    data = await register(client)
    await server.db.users.update_one({"_id": data["user"]["id"]}, {"$set": {"role": role}})
    await server.services.authstate.user_changed(data["user"]["id"])  # as every writer announces its change
    data["user"]["role"] = role
    return data


def auth(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access']}"}


def docker_available() -> bool:
    path = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(path)
        return True
    except OSError:
        return False


def require_or_skip(available: bool, what: str) -> None:
    """Skip locally, fail in CI: a missing engine or browser is a broken
    install step there, never a pass."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true but is not available")
    pytest.skip(f"{what} not available")


@contextlib.asynccontextmanager
async def app_on_own_database(start_server, tmp_path):
    """A test app on a database process of its own, which the test may hang,
    stop or restart: yields that database, a client and a registered user."""
    database = EmbeddedMongo(tmp_path / "own-db")
    database.start()
    try:
        server = await start_server(mongodb_uri=database.uri, db_timeout_ms=1000)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield database, client, await register(client)
    finally:
        database.stop()


def share_default_tls_context() -> None:
    """Every httpx client of the run shares one default TLS context: httpx
    loads the CA bundle (about 60 ms of CPU) for each client it makes, and
    the tests make hundreds, nearly all for plain HTTP on loopback. Only the
    default (verify=True, no client certificate) is shared; a client given
    its own context, or verify=False, gets what it asked for."""
    from httpx._transports import default

    original = default.create_ssl_context
    shared: list = []

    def create(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None or not trust_env:
            return original(verify=verify, cert=cert, trust_env=trust_env)
        if not shared:
            shared.append(original())
        return shared[0]

    default.create_ssl_context = create
