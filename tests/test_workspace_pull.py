"""The image-pull path for real: a local registry (Debian's docker-registry
on 127.0.0.1, which dockerd speaks plain HTTP to), images pushed to it, and
workspaces whose image must be pulled from it."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx
import pytest

from services.docker import DockerEngine
from services.workspaces import PullProgress
from tests.support.app import auth, docker_available, register, require_or_skip
from tests.support.workspaces import containers_of, docker, Socket, TEST_IMAGE

pytestmark = pytest.mark.docker
CREATE = "/api/users/workspace/create/"
REGISTRY_BINARY = "docker-registry"  # Debian's package of the distribution registry


class Registry:
    """A docker-registry process on a free loopback port, with its own
    storage; `push_image` builds and pushes images that only this test knows."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.images: list[str] = []  # local image ids and names this test made
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.host = f"127.0.0.1:{probe.getsockname()[1]}"
        config = workdir / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
                          f"http:\n  addr: {self.host}\n")
        self.log = open(workdir / "registry.log", "wb")
        self.process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"docker-registry did not start: {(workdir / 'registry.log').read_text()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"http://{self.host}/v2/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def push_image(self, repository: str, keep_local: bool = False) -> str:
        """Build an image from the test image plus a layer of fresh random
        bytes (so a pull really downloads it while the base layer already
        exists, as in real life), push it and, unless `keep_local`, remove
        it locally. Returns its name in this registry."""
        name = f"{self.host}/{repository}:t1"
        context = self.workdir / f"build-{uuid.uuid4().hex[:8]}"
        context.mkdir()
        (context / "payload").write_bytes(os.urandom(2_000_000))
        (context / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nCOPY payload /payload\n")
        # The classic builder uses the local base image; BuildKit would look it up on Docker Hub.
        built = subprocess.run(["docker", "build", "-q", "-t", name, str(context)], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "DOCKER_BUILDKIT": "0"})
        shutil.rmtree(context)
        assert built.returncode == 0, built.stderr
        self.images += [built.stdout.strip(), name]
        docker("push", name)
        if not keep_local:
            docker("rmi", name)
            assert not image_present(name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        for image in reversed(self.images):
            docker("rmi", "-f", image, check=False)
        shutil.rmtree(self.workdir / "data", ignore_errors=True)


@pytest.fixture
def registry(tmp_path) -> Iterator[Registry]:
    """Request it before `servers`, so that the workspace containers are
    gone when its images are removed."""
    require_or_skip(docker_available(), "Docker engine")
    require_or_skip(shutil.which(REGISTRY_BINARY) is not None,
                    f"{REGISTRY_BINARY} (apt-get install docker-registry; scripts/test-env.sh does)")
    started = Registry(tmp_path)
    try:
        yield started
    finally:
        started.stop()


@contextlib.asynccontextmanager
async def slow_proxy(target: str, chunk: int = 32 * 1024, pause: float = 0.02) -> AsyncIterator[str]:
    """A TCP proxy on loopback in front of `target` that hands answers back
    at about 1.5 MB/s, so that a pull of a few MB lasts long enough for the
    workspace's own progress events (at most one per 0.25 s) to show."""
    target_host, target_port = target.rsplit(":", 1)
    writers: set[asyncio.StreamWriter] = set()

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await source.read(chunk):
                sink.write(data)
                await sink.drain()
                await asyncio.sleep(delay)
        except OSError:
            pass
        finally:
            sink.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, int(target_port))
        writers.update((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer, 0), pipe(up_reader, writer, pause))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in writers:
            writer.close()


def image_present(name: str) -> bool:
    return bool(docker("image", "ls", "-q", name, check=False))


def is_settled(message: dict) -> bool:
    return message["type"] == "event" and message["state"] in ("running", "failed")


async def test_a_missing_image_is_pulled_with_progress_that_never_goes_backwards(registry, servers):
    repository = f"apranova-pull-{uuid.uuid4().hex[:8]}"
    registry.push_image(repository)
    async with slow_proxy(registry.host) as slow_host:
        image = f"{slow_host}/{repository}:t1"  # the same registry, reached through the slow proxy
        registry.images.append(image)
        server = await servers.start(workspace_image=image)  # the default pull policy: if-not-present
        assert server.services.settings.workspace_pull_policy == "if-not-present"
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            user = await register(client)
            assert (await client.post(CREATE, headers=auth(user))).status_code == 201
            socket = await Socket.open(server, "?after=0", token=user["access"])
            events = [m for m in await socket.until(is_settled) if m["type"] == "event"]
            socket.close()
    messages = [e["message"] for e in events]
    assert events[-1]["state"] == "running", messages
    assert not any(image in m or repository in m for m in messages), messages  # the student's words only
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 100
    pulling = [(e["progress"], m) for e, m in zip(events, messages)
               if m.startswith("Downloading the workspace software")]
    assert pulling[0] == (10, "Downloading the workspace software"), messages
    assert all(e["step"] == "download" for e in events if e["message"] in dict(pulling).values())
    percents = [int(message.rsplit(" ", 1)[1].rstrip("%")) for _, message in pulling[1:]]
    assert percents and percents == sorted(percents) and all(0 < p <= 100 for p in percents), messages
    assert percents[0] < 100, messages  # the existing base layer does not count as the whole download
    assert all(10 < overall <= 70 for overall, _ in pulling[1:]), pulling
    assert messages[messages.index(pulling[-1][1]) + 1] == "The workspace software is ready"
    logged = [e async for e in server.db.workspace_events.find({"step": "download"}).sort("seq", 1)]
    assert logged[0]["detail"] == f"Pulling the image {image}"  # the operator's detail names the image
    assert image_present(image)
    container = containers_of(servers.instance)
    assert docker("inspect", "-f", "{{.Config.Image}}", *container) == image


async def test_pull_policy_always_pulls_the_registry_version_over_a_local_one(registry, servers):
    repository = f"apranova-pull-{uuid.uuid4().hex[:8]}"
    image = registry.push_image(repository, keep_local=True)
    old_id = docker("image", "inspect", "-f", "{{.Id}}", image)
    registry.push_image(repository, keep_local=True)  # a newer version under the same tag
    new_id = docker("image", "inspect", "-f", "{{.Id}}", image)
    docker("tag", old_id, image)  # the local copy is the old one again
    assert old_id != new_id

    server = await servers.start(workspace_image=image, workspace_pull_policy="always")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert body["state"] == "running", body
    assert docker("image", "inspect", "-f", "{{.Id}}", image) == new_id
    container = containers_of(servers.instance)
    assert docker("inspect", "-f", "{{.Image}}", *container) == new_id


async def test_pull_policy_always_falls_back_to_the_local_copy_when_the_registry_is_away(registry, servers):
    image = registry.push_image(f"apranova-pull-{uuid.uuid4().hex[:8]}", keep_local=True)
    registry.process.terminate()
    registry.process.wait(10)
    server = await servers.start(workspace_image=image, workspace_pull_policy="always")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
        events = [e async for e in server.db.workspace_events.find({}, {"message": 1, "detail": 1}).sort("seq", 1)]
    assert body["state"] == "running", body
    messages = [e.get("detail", e["message"]) for e in events]
    assert messages.index(f"Pulling the image {image}") < messages.index("The workspace software is ready"), messages


async def test_an_image_the_registry_does_not_have_fails_with_a_message_naming_it(registry, servers):
    image = f"{registry.host}/apranova-missing-{uuid.uuid4().hex[:8]}:t1"
    server = await servers.start(workspace_image=image)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        user = await register(client)
        body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert body["state"] == "failed", body
    assert body["message"].startswith("Your workspace could not start: its software could not be prepared.")
    assert image not in body["message"]
    failures = [e async for e in server.db.workspace_events.find({"kind": "failure"})]
    assert failures and failures[-1]["detail"].startswith(f"The workspace image {image} could not be pulled: ")
    assert "not found" in failures[-1]["detail"]
    assert containers_of(servers.instance) == [] and not image_present(image)


async def test_the_percentage_of_a_real_pull_is_not_100_before_its_download(registry):
    """Docker announces every layer first ('Already exists' for a shared
    base layer, 'Pulling fs layer' for the others); only then do the
    transfers start. An existing layer announced first is not 100%."""
    image = registry.push_image(f"apranova-pull-{uuid.uuid4().hex[:8]}")
    engine = DockerEngine(os.environ.get("DOCKER_HOST", ""))
    try:
        messages = [message async for message in engine.pull(image)]
    finally:
        await engine.close()
    statuses = [m.get("status", "") for m in messages]
    assert "Already exists" in statuses and "Downloading" in statuses and "Pull complete" in statuses
    progress = PullProgress()
    seen = [progress.update(message) for message in messages]
    downloaded = statuses.index("Download complete")
    assert seen == sorted(seen) and seen[-1] == 100
    assert all(percent < 100 for percent in seen[:downloaded + 1]), list(zip(statuses, seen))
