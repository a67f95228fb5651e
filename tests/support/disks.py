"""Disk-quota test helpers: the disk tools image, a directory for the
homes' images (removed with its loop devices after the test), and a shell
in a workspace as its user."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.app import ROOT

MIB = 1024 ** 2


TOOLS_IMAGE = os.environ.get("WORKSPACE_DISK_TOOLS_TEST_IMAGE", "apranova/disk-tools:1")


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
