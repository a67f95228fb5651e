"""Fixtures for every test: a real nx-27017 server, the real app on an
ephemeral port, and an HTTP client. No mocks of our own parts. Helpers that
tests call live in tests/support/ (app.py first); browser fixtures in
tests/browser/conftest.py."""
from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest

from services.db import EmbeddedMongo
from tests.support import fake_backend
from tests.support.app import NO_DOCKER, RunningServer, app_settings, serve, share_default_tls_context

# Fixtures of the support modules, for every test module: workspace servers
# (servers, ws_server, http), the SMTP catcher (smtp), the in-memory engine
# (fake), Stripe on loopback (fake_stripe, pay_server, pay), server processes
# (workers), the disk images' directory (disk_dir), the IDE's loopback
# stand-in (upstream), the fake Google and GitHub (google, github), and the
# two-node test swarm (swarm_cluster, a session fixture: registered here
# once, never imported into a test module, which would make a second swarm in
# the same run).
pytest_plugins = ["tests.support.workspaces", "tests.support.fake_smtp", "tests.support.lifecycle",
                  "tests.support.payments", "tests.support.processes", "tests.support.swarm_env",
                  "tests.support.disks", "tests.support.proxy", "tests.support.oauth"]


def pytest_configure(config) -> None:
    share_default_tls_context()


@pytest.fixture(scope="session")
def mongo(tmp_path_factory) -> EmbeddedMongo:
    """One real MongoDB-wire server (nx-27017) for the session; each test app
    gets its own database in it."""
    server = EmbeddedMongo(tmp_path_factory.mktemp("nx"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fake_engines() -> Iterator[None]:
    """The in-memory engines a test made end with it (autouse: set up first,
    so torn down after the servers that used them)."""
    yield
    fake_backend.discard_all()


@pytest.fixture
async def start_server(mongo, tmp_path) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """Factory: start the app with setting overrides; everything is stopped
    at the end of the test."""
    running: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        server = await serve(app_settings(mongo, tmp_path, **overrides))
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        await server.stop()


@pytest.fixture
async def server(start_server, request) -> RunningServer:
    """The app with default settings; under the `without_docker` marker with
    no Docker engine, so that workspace documents a test writes stay as
    written (no reconciliation against containers)."""
    if request.node.get_closest_marker("without_docker"):
        return await start_server(docker_host=NO_DOCKER)
    return await start_server()


@pytest.fixture
async def client(server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http


# The fixtures that start workspaces on the real Docker engine, and the one
# that starts Chromium. A test that uses one must carry the marker, so that
# `-m "not docker and not browser"` really is the suite without an engine or
# a browser (and CI=true fails, not skips, what needs them).
NEEDS = {"docker": {"servers", "docker_servers"}, "browser": {"browser"}}


def pytest_collection_modifyitems(config, items):
    unmarked = [f"{item.nodeid}: uses {', '.join(sorted(NEEDS[mark] & set(item.fixturenames)))} but is not "
                f"marked {mark}" for item in items for mark in NEEDS
                if NEEDS[mark] & set(item.fixturenames) and item.get_closest_marker(mark) is None]
    if unmarked:
        raise pytest.UsageError("markers missing:\n" + "\n".join(unmarked))
