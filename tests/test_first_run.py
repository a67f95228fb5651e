"""The first run (issue 23, part 1): a Create while ./scripts/run builds
the IDE image behind the server shows the build's progress and goes on by
itself once the image is there; and scripts/workspace-host.sh on a machine
without Docker says, one line per missing part, the command that fixes it."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.app import auth, register, ROOT
from tests.support.workspaces import CREATE, docker, TEST_IMAGE, wait_for_state, WORKSPACE

FIRST_TIME = "Preparing the IDE software on this server for the first time"


class FakeBuild:
    """What scripts/workspace-host.sh writes while a build runs: a status
    file naming a live process (here a `sleep` standing in for the build)."""

    def __init__(self, directory: Path, image: str, estimate: int = 600):
        self.directory, self.image = directory, image
        self.process = subprocess.Popen(["sleep", "300"])
        self.path = directory / "status" / (image.replace("/", "_").replace(":", "_") + ".json")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write({"image": image, "pid": self.process.pid, "started": int(time.time()) - 95,
                    "estimate_seconds": estimate, "log": str(directory / "build.log")})

    def write(self, status: dict) -> None:
        self.path.write_text(json.dumps(status))

    def finish(self, image_from: str | None) -> None:
        """The build ends: the image appears (tagged from `image_from`), or it failed."""
        if image_from:
            docker("tag", image_from, self.image)
            self.path.unlink()
        else:
            self.write({"image": self.image, "failed": True, "log": str(self.directory / "build.log")})
        self.process.kill()
        self.process.wait()


@pytest.fixture
def building_image(tmp_path):
    image = f"apranova/workspace-firstrun-{uuid.uuid4().hex[:8]}:latest"
    build = FakeBuild(tmp_path / "build", image)
    yield build
    if build.process.poll() is None:
        build.process.kill()
    docker("rmi", image, check=False)


@pytest.mark.docker
async def test_a_create_during_the_image_build_shows_its_progress_then_runs(servers, building_image):
    server = await servers.start(workspace_image=building_image.image, workspace_pull_policy="never",
                                 workspace_image_build_dir=str(building_image.directory))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        assert (await client.post(CREATE, headers=auth(user), json={})).json()["state"] == "provisioning"
        deadline = time.monotonic() + 15
        while FIRST_TIME not in (body := (await client.get(WORKSPACE, headers=auth(user))).json())["message"]:
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
        assert body["state"] == "provisioning"
        # Elapsed and an estimate, in words; the image's name stays for the operator.
        assert "so far, about" in body["message"] and "left" in body["message"], body["message"]
        assert building_image.image not in body["message"]
        await asyncio.sleep(3)  # waiting is not failing
        assert (await client.get(WORKSPACE, headers=auth(user))).json()["state"] == "provisioning"
        building_image.finish(TEST_IMAGE)
        body = await wait_for_state(client, auth(user), {"running", "failed"}, timeout=40)
    assert body["state"] == "running", body


@pytest.mark.docker
async def test_a_failed_build_fails_the_create_with_the_log_for_the_operator(servers, building_image):
    server = await servers.start(workspace_image=building_image.image, workspace_pull_policy="never",
                                 workspace_image_build_dir=str(building_image.directory))
    building_image.finish(None)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client)
        body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert body["state"] == "failed" and "its software could not be prepared" in body["message"], body
    doc = await server.services.workspaces.find(user["user"]["id"])
    event = await server.db.workspace_events.find_one({"workspace_id": doc["_id"], "seq": doc["seq"]})
    assert "build.log" in event["detail"] and "build.log" not in body["message"]


def without(tmp_path: Path, *missing: str) -> dict[str, str]:
    """An environment whose PATH has the usual tools but not `missing`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for tool in Path(directory).iterdir() if Path(directory).is_dir() else ():
            if tool.name not in missing and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKSPACE_", "DOCKER_"))}
    return {**env, "PATH": str(bin_dir), "WORKSPACE_IMAGE_BUILD_DIR": str(tmp_path / "cache")}


def test_no_docker_and_no_apt_is_one_line_with_the_fix_and_no_failure(tmp_path):
    result = subprocess.run(["bash", "scripts/workspace-host.sh", "apranova/workspace:latest"], cwd=ROOT,
                            env=without(tmp_path, "docker", "dockerd", "apt-get"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr  # the server starts anyway
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Docker engine" in lines[0] and "fix:" in lines[0], result.stderr
    assert not (tmp_path / "cache" / "status").exists()  # nothing was started


def test_run_documents_and_builds_the_same_image_as_the_default():
    from services.settings import SETTINGS

    default = next(s.default for s in SETTINGS if s.name == "WORKSPACE_IMAGE")
    readme = (ROOT / "README.md").read_text()
    build = (ROOT / "workspace-image" / "build-offline.sh").read_text()
    assert default == "apranova/workspace:latest"
    assert f'IMAGE="${{1:-{default}}}"' in build  # what the build makes by default
    assert f"`{default}`" in readme.split("## Sizing a server")[0].split("## First run")[1]


def test_not_root_is_one_line_with_the_fix_and_no_failure(tmp_path):
    """As an unprivileged user (nobody) on a host whose engine is root's."""
    if not Path("/var/run/docker.sock").exists() or os.geteuid() != 0:
        pytest.skip("needs root to become nobody, and a Docker socket")
    # A copy of the scripts nobody may read: the checkout itself may sit in a
    # directory only root enters (a CI clone under mktemp -d, pytest's tmp).
    repo = Path(tempfile.mkdtemp(prefix="apranova-nobody-"))
    try:
        os.chmod(repo, 0o755)
        for part in ("scripts", "workspace-image"):
            shutil.copytree(ROOT / part, repo / part)
        result = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "bash",
                                 "scripts/workspace-host.sh", "apranova/workspace:latest"], cwd=repo,
                                env={**os.environ, "WORKSPACE_IMAGE_BUILD_DIR": str(repo / "cache")},
                                capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    assert result.returncode == 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not let nobody in" in lines[0] and "fix: sudo" in lines[0], result.stderr
