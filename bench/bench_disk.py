"""Disk-quota benchmark: prints numbers (not a test).

    .venv/bin/python bench/bench_disk.py [--workspaces 10] [--rounds 5]

What a class costs the engine for disk quotas (services/workspaces/quota.py,
docker/disk.py), on the real Docker engine with the busybox stand-in image
and the disk-tools image (workspace-image/build-disk-tools-image.sh):
1. preparing N quota'd homes (64 MiB images: make, mkfs, attach; one helper
   container each), sequentially: seconds per home;
2. one measuring round over N running workspaces (one `df` exec each, 4 at
   once, as the culler's round does): the round's time, and ms per workspace;
3. one host free-space survey (a helper container).
Everything it makes (containers, volumes, loop devices, image files) is
removed at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services import settings as settings_mod  # noqa: E402
from services.docker import DockerEngine  # noqa: E402
from services.workspaces.docker.disk import DockerDisks  # noqa: E402
from services.workspaces.quota import MEASURE_LANES  # noqa: E402

TEST_IMAGE, TOOLS = "apranova/workspace-test:2", "apranova/disk-tools:1"


async def main(count: int, rounds: int) -> None:
    subprocess.run(["bash", str(ROOT / "workspace-image/build-disk-tools-image.sh"), TOOLS], check=True,
                   capture_output=True)
    directory = Path(tempfile.mkdtemp(prefix="bench-disk-"))
    instance = f"bdisk{uuid.uuid4().hex[:6]}"
    settings = settings_mod.load(environ={}, instance_name=instance, workspace_disk_quota="64MiB",
                                 workspace_disk_dir=str(directory), workspace_disk_tools_image=TOOLS,
                                 workspace_image=TEST_IMAGE)
    engine = DockerEngine("")
    disks = DockerDisks(settings, engine)
    homes = [f"{instance}-ws-{n}-home" for n in range(count)]
    try:
        started = time.monotonic()
        for home in homes:
            options = await disks.prepare(home, 64 * 1024 ** 2, f"{home}-c", {"apranova.instance": instance})
            await engine.ensure_volume(home, {"apranova.instance": instance}, options)
        prepare = (time.monotonic() - started) / count
        for n, home in enumerate(homes):
            subprocess.run(["docker", "run", "-d", "--name", f"{instance}-c{n}", "--label",
                            f"apranova.instance={instance}", "-v", f"{home}:/home/coder", TEST_IMAGE],
                           check=True, capture_output=True)
        times = []
        for _ in range(rounds):
            started = time.monotonic()
            lanes = asyncio.Semaphore(MEASURE_LANES)  # as DiskWatch.round does

            async def one(n: int) -> None:
                async with lanes:
                    assert await disks.usage(f"{instance}-c{n}") is not None
            await asyncio.gather(*(one(n) for n in range(count)))
            times.append(time.monotonic() - started)
        started = time.monotonic()
        free, _ = await disks.survey()
        survey = time.monotonic() - started
        median = statistics.median(times)
        print(f"prepare a quota'd home (helper: mkfs + losetup): {prepare:.2f} s each ({count} homes)")
        print(f"measuring round over {count} running workspaces: median {median * 1000:.0f} ms "
              f"({median * 1000 / count:.0f} ms per workspace; rounds {[round(t * 1000) for t in times]} ms)")
        print(f"host free-space survey (helper): {survey:.2f} s; free {free / 1024 ** 3:.1f} GiB")
    finally:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=apranova.instance={instance}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        for home in homes:
            subprocess.run(["docker", "volume", "rm", "-f", home], capture_output=True)
        await disks.remove(homes)
        await engine.close()
        subprocess.run(["rm", "-rf", str(directory)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.workspaces, args.rounds))
