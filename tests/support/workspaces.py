"""Shared by the workspace tests: servers with their own INSTANCE_NAME and
host-port slice (several engineers' tests share one dockerd), cleanup of
every container and volume they made, a WebSocket client, and a unix-socket
proxy in front of the Docker engine that a test can cut and restore."""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import time
import uuid
from typing import Any, AsyncIterator

import httpx
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.support.app import app_settings, auth, docker_available, register, require_or_skip, RunningServer, serve

CREATE, WORKSPACE, STOP = "/api/users/workspace/create/", "/api/users/workspace/", "/api/users/workspace/stop/"
TEST_IMAGE = os.environ.get("WORKSPACE_TEST_IMAGE", "apranova/workspace-test:2")
DOCKER_SOCKET = "/var/run/docker.sock"
CONTRACT_503 = {"error": "Workspace feature not available",
                "message": "Docker is not accessible from the backend container.",
                "details": "Please contact your administrator to enable workspace provisioning."}
WORKSPACE_KEYS = {"url", "port", "status", "state", "progress", "seq", "password", "message", "created_at",
                  "updated_at", "estimate_seconds", "run", "run_started", "disk_used_bytes", "disk_size_bytes"}


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr}")
    return result.stdout.strip()


def containers_of(instance: str, *extra_labels: str) -> list[str]:
    filters = [arg for label in (f"apranova.instance={instance}", *extra_labels) for arg in ("--filter",
                                                                                           f"label={label}")]
    return docker("ps", "-aq", *filters).split()


def cleanup_instance(instance: str) -> None:
    """Remove what an instance's tests made: only containers and volumes
    carrying its label. A create that was in flight when its server stopped
    may still land in dockerd a moment later, hence the second look."""
    for attempt in range(2):
        ids = containers_of(instance)
        if ids:
            docker("rm", "-f", *ids, check=False)
        if attempt == 0:
            time.sleep(0.5)
    volumes = docker("volume", "ls", "-q", "--filter", f"label=apranova.instance={instance}").split()
    # and by name: a volume Docker made itself for a mount has no labels
    volumes += [v for v in docker("volume", "ls", "-q", "--filter", f"name={instance}-ws-").split()
                if v.startswith(f"{instance}-ws-") and v not in volumes]
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)
    networks = docker("network", "ls", "-q", "--filter", f"label=apranova.instance={instance}").split()
    if networks:
        docker("network", "rm", *networks, check=False)


_image_checked = False


def ensure_test_image() -> None:
    """Build (or find current) the stand-in image once per test process:
    the script is idempotent, and another checkout's older script may have
    rebuilt the shared tag meanwhile."""
    global _image_checked
    if not _image_checked:
        script = os.path.join(os.path.dirname(__file__), "..", "..", "workspace-image", "build-test-image.sh")
        subprocess.run(["bash", script, TEST_IMAGE], capture_output=True, timeout=120, check=False)
        _image_checked = True


class WorkspaceServers:
    """Start and stop app servers for one test, each with this test's
    INSTANCE_NAME and port slice unless told otherwise."""

    def __init__(self, mongo: Any, tmp_path: Any):
        self.mongo, self.tmp_path = mongo, tmp_path
        self.instance = f"wst{uuid.uuid4().hex[:8]}"
        base = random.randrange(20000, 32700, 50)  # below the ephemeral ports (32768-), which anything may hold
        self.port_range = f"{base}-{base + 49}"
        self.running: list[RunningServer] = []
        self.defaults: dict[str, Any] = {}  # a test module's own defaults (e.g. the direct exposure)

    def settings(self, **overrides: Any) -> Any:
        # One database per test: its servers are one deployment (as --workers
        # are), since another database under the same INSTANCE_NAME is another
        # installation, which refuses to start beside this one's workspaces.
        values = {"instance_name": self.instance, "mongodb_db": f"t_{self.instance}", "workspace_image": TEST_IMAGE,
                  "workspace_port_range": self.port_range, "workspace_ready_timeout": "20",
                  "workspace_wait_timeout": "30", "workspace_memory": "64m", "workspace_pids": "64",
                  "workspace_cpus": "0.5", **self.defaults, **overrides}
        return app_settings(self.mongo, self.tmp_path, **values)

    def process_env(self) -> dict[str, str]:
        """The environment of a real server process (tests/test_server_process.py's
        ServerProcess) under this test's INSTANCE_NAME, image and port slice."""
        settings = self.settings()
        return {"INSTANCE_NAME": self.instance, "WORKSPACE_IMAGE": settings.workspace_image,
                "WORKSPACE_PORT_RANGE": self.port_range, "WORKSPACE_MEMORY": "64m", "WORKSPACE_PIDS": "64",
                "WORKSPACE_CPUS": "0.5", "RATE_LIMIT_ANON": "100000/hour", "RATE_LIMIT_WORKSPACE": "100000/hour"}

    async def start(self, **overrides: Any) -> RunningServer:
        server = await serve(self.settings(**overrides))
        self.running.append(server)
        return server

    async def stop(self, server: RunningServer) -> None:
        if server in self.running:
            self.running.remove(server)
            await server.stop()

    async def close(self) -> None:
        for server in reversed(list(self.running)):
            await self.stop(server)
        cleanup_instance(self.instance)


@pytest.fixture
async def servers(mongo, tmp_path) -> AsyncIterator[WorkspaceServers]:
    require_or_skip(docker_available(), "Docker engine")
    ensure_test_image()
    require_or_skip(bool(docker("image", "ls", "-q", TEST_IMAGE, check=False)),
                    f"test image {TEST_IMAGE} (run workspace-image/build-test-image.sh)")
    manager = WorkspaceServers(mongo, tmp_path)
    try:
        yield manager
    finally:
        await manager.close()


@pytest.fixture
async def ws_server(servers) -> RunningServer:
    return await servers.start()


@pytest.fixture
async def http(ws_server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ws_server.url, timeout=60) as client:
        yield client


async def open_websockets(client: httpx.AsyncClient) -> float:
    """The server's own count of open WebSockets, as /metrics reports it."""
    text = (await client.get("/metrics")).text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("apranova_websockets_open ")))


async def create_all(client: httpx.AsyncClient, users: list[dict]) -> list[dict]:
    """Every user's Create (waiting for the outcome) at once; the answers' bodies."""
    answers = await asyncio.gather(*(client.post(CREATE, headers=auth(user), json={"wait": True})
                                     for user in users))
    return [answer.json() for answer in answers]


async def users_with_running_workspaces(client: httpx.AsyncClient, count: int) -> list[dict]:
    """`count` registered users, each with a workspace created and running."""
    users = [await register(client) for _ in range(count)]
    for user in users:
        assert (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()["state"] == "running"
    return users


async def wait_for_state(client: httpx.AsyncClient, headers: dict, states: set[str], timeout: float = 30,
                         path: str = "/api/users/workspace/") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(path, headers=headers)
        body = response.json()
        if response.status_code == 200 and body["state"] in states:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"workspace did not reach {states}: {response.status_code} {body}")
        await asyncio.sleep(0.05)


class Socket:
    """A WebSocket client that reads JSON messages and the close code."""

    def __init__(self, connection: WebSocketClientConnection):
        self.connection = connection

    @classmethod
    async def open(cls, server: RunningServer, query: str = "", token: str | None = None,
                   origin: str | None = None) -> "Socket":
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if origin:
            headers["Origin"] = origin
        url = f"{server.ws_url}/api/users/workspace/status/{query}"
        return cls(await websocket_connect(HTTPRequest(url, headers=headers, connect_timeout=10)))

    async def send(self, message: Any) -> None:
        await self.connection.write_message(message if isinstance(message, str) else json.dumps(message))

    async def receive(self, timeout: float = 10) -> dict | None:
        raw = await asyncio.wait_for(self.connection.read_message(), timeout)
        return None if raw is None else json.loads(raw)

    async def until(self, predicate: Any, timeout: float = 30) -> list[dict]:
        """Messages up to and including the first one matching predicate."""
        seen: list[dict] = []
        deadline = time.monotonic() + timeout
        while True:
            message = await self.receive(max(0.1, deadline - time.monotonic()))
            assert message is not None, f"socket closed ({self.close_code}) after {seen}"
            seen.append(message)
            if predicate(message):
                return seen

    async def closed_with(self, timeout: float = 10) -> int | None:
        while await self.receive(timeout) is not None:
            pass
        return self.close_code

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    def close(self) -> None:
        self.connection.close()


async def refused_handshake(server: RunningServer, **kwargs: Any) -> int:
    try:
        socket = await Socket.open(server, **kwargs)
    except HTTPClientError as exc:
        return exc.code
    socket.close()
    raise AssertionError("the handshake was accepted")


class DockerProxy:
    """A unix socket forwarding to the real engine. close() makes Docker
    'go away' for the app (listener and live connections, the event stream
    included) without touching the shared dockerd; open() brings it back."""

    def __init__(self, path: str, target: str = DOCKER_SOCKET):
        self.path, self.target = path, target  # `target`: another engine's socket (a swarm manager's)
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    async def open(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def close(self) -> None:
        if self.server:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()
        if os.path.exists(self.path):
            os.unlink(self.path)
