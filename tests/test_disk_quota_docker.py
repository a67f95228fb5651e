"""Disk quotas on the real engine (issue 24): a home on a quota is an ext4
image on a loop device, so a write past the quota fails inside the
workspace with ENOSPC while the server and the other workspaces carry on;
the student hears of it on the status socket; purge and reconciliation
remove the image files. Each test's images live under its own tmp_path, and
the loop devices they hold are detached at the end."""
from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import auth, register
from tests.workspaces_helpers import CREATE, WORKSPACE, Socket, docker, servers  # noqa: F401 - fixture

pytestmark = pytest.mark.docker
MIB = 1024 ** 2
TOOLS_IMAGE = os.environ.get("WORKSPACE_DISK_TOOLS_TEST_IMAGE", "apranova/disk-tools:1")
ROOT = Path(__file__).resolve().parent.parent


def loops_of(directory: Path) -> list[str]:
    """The loop devices attached to image files under `directory`."""
    found = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    names = {p.name for p in directory.glob("*.ext4")} if directory.exists() else set()
    # The kernel shows the helper's path (/disks/<name>), so match by file name and inode.
    inodes = {str(p.stat().st_ino) for p in directory.glob("*.ext4")} if directory.exists() else set()
    return [line.split(":")[0] for line in found.splitlines()
            if any(f"/{name})" in line for name in names) and any(f":{ino} " in line for ino in inodes)]


@pytest.fixture
def disk_dir(tmp_path):
    subprocess.run(["bash", str(ROOT / "workspace-image" / "build-disk-tools-image.sh"), TOOLS_IMAGE],
                   capture_output=True, timeout=180, check=False)
    directory = tmp_path / "disks"
    yield directory
    for loop in loops_of(directory):
        subprocess.run(["losetup", "-d", loop], check=False)
    subprocess.run(["rm", "-rf", str(directory)], check=False)


def quota_settings(disk_dir: Path, quota: str = "64MiB", **extra: str) -> dict[str, str]:
    return {"workspace_disk_quota": quota, "workspace_disk_dir": str(disk_dir),
            "workspace_disk_tools_image": TOOLS_IMAGE, "workspace_cull_interval": "0.5", **extra}


def exec_in(container: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", "-u", "1000:1000", container, "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


async def running_workspace(client: httpx.AsyncClient) -> tuple[dict, dict]:
    user = await register(client)
    body = (await client.post(CREATE, headers=auth(user), json={"wait": True})).json()
    assert body["state"] == "running", body
    return user, body


async def test_a_write_past_the_quota_fails_and_nothing_else_notices(servers, disk_dir):
    server = await servers.start(**quota_settings(disk_dir))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        student, _ = await running_workspace(client)
        neighbour, _ = await running_workspace(client)
        me = f"{servers.instance}-ws-{student['user']['id']}"
        other = f"{servers.instance}-ws-{neighbour['user']['id']}"

        written = exec_in(me, "dd if=/dev/zero of=/home/coder/big bs=1M count=200")
        assert written.returncode != 0
        assert "No space left on device" in written.stderr + written.stdout
        image = disk_dir / f"{me}-home.ext4"
        assert image.stat().st_blocks * 512 <= 64 * MIB  # the bytes on the host stay within the image
        kept = int(exec_in(me, "stat -c %s /home/coder/big").stdout.strip())
        assert 40 * MIB < kept < 64 * MIB

        # The server and the other workspace carry on.
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get(WORKSPACE, headers=auth(neighbour))).json()["state"] == "running"
        assert exec_in(other, "dd if=/dev/zero of=/home/coder/f bs=1M count=8 && echo ok").stdout.strip() == "ok"
        # Deleting makes room again: the student can write once more.
        assert exec_in(me, "rm /home/coder/big && echo x >/home/coder/after && cat /home/coder/after").stdout \
            .strip() == "x"
