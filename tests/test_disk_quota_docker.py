"""Disk quotas on the real engine (issue 24): a home on a quota is an ext4
image on a loop device, so a write past the quota fails inside the
workspace with ENOSPC while the server and the other workspaces carry on;
the student hears of it on the status socket; purge and reconciliation
remove the image files. Each test's images live under its own tmp_path, and
the loop devices they hold are detached at the end."""
from __future__ import annotations

import asyncio
import subprocess

import httpx
import pytest

from tests.support.app import auth, make_admin, register
from tests.support.disks import exec_in, loops_of, MIB, quota_settings
from tests.support.workspaces import CREATE, docker, Socket, WORKSPACE

pytestmark = pytest.mark.docker


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


async def test_the_student_hears_at_90_percent_and_when_full_and_the_operator_sees_it(servers, disk_dir):
    server = await servers.start(**quota_settings(disk_dir))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        student, _ = await running_workspace(client)
        container = f"{servers.instance}-ws-{student['user']['id']}"
        socket = await Socket.open(server, token=student["access"])
        try:
            await socket.until(lambda m: m.get("type") == "snapshot")
            exec_in(container, "dd if=/dev/zero of=/home/coder/a bs=1M count=50")  # about 90% of the 56 MiB file system
            seen = await socket.until(lambda m: m.get("reason") == "disk", timeout=30)
            warning = seen[-1]
            assert warning["kind"] == "warning" and warning["state"] == "running"
            assert "% full" in warning["message"] and "Delete files" in warning["message"]
            assert warning["disk_used"] >= 0.9 * warning["disk_size"] and "detail" not in warning
            exec_in(container, "dd if=/dev/zero of=/home/coder/b bs=1M count=20")
            full = (await socket.until(lambda m: m.get("reason") == "disk_full", timeout=30))[-1]
            assert "full" in full["message"] and "ask your trainer" in full["message"]
            assert "loop" not in full["message"] and "ext4" not in full["message"]  # no operator detail
        finally:
            socket.connection.close()

        mine = (await client.get(WORKSPACE, headers=auth(student))).json()
        assert mine["disk_size_bytes"] > 40 * MIB and mine["disk_used_bytes"] > 0.95 * mine["disk_size_bytes"]

        admin = await make_admin(server, client)
        rows = (await client.get("/api/admin/workspaces/", headers=auth(admin))).json()["results"]
        row = next(r for r in rows if r["owner"]["id"] == student["user"]["id"])
        assert row["disk_quota"] == 64 * MIB and row["disk_used_bytes"] == mine["disk_used_bytes"]
        metrics = (await client.get("/metrics")).text
        assert f'apranova_workspace_disk_used_bytes{{user_id="{student["user"]["id"]}"}}' in metrics
        free = next(line for line in metrics.splitlines() if line.startswith("apranova_workspace_disk_host_free_bytes "))
        assert float(free.split()[1]) > 0


async def test_an_admin_raises_a_quota_and_the_home_grows_with_its_files(servers, disk_dir):
    server = await servers.start(**quota_settings(disk_dir))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        student, _ = await running_workspace(client)
        sid = student["user"]["id"]
        container = f"{servers.instance}-ws-{sid}"
        assert exec_in(container, "echo kept >/home/coder/notes.txt && echo ok").stdout.strip() == "ok"
        admin = await make_admin(server, client)
        url = f"/api/admin/workspaces/{sid}/disk-quota/"
        assert (await client.put(url, headers=auth(admin), json={"disk_quota": "32MiB"})).status_code == 409
        bad = await client.put(url, headers=auth(admin), json={"disk_quota": "lots"})
        assert bad.status_code == 400 and bad.json()["error"]
        assert (await client.put(url, headers=auth(student), json={"disk_quota": "1GiB"})).status_code == 403
        raised = await client.put(url, headers=auth(admin), json={"disk_quota": "128MiB"})
        assert raised.status_code == 200 and raised.json()["disk_quota"] == 128 * MIB
        assert "stop and start" in raised.json()["message"]
        assert (await client.post("/api/users/workspace/stop/", headers=auth(student))).status_code == 200
        again = (await client.post(CREATE, headers=auth(student), json={"wait": True})).json()
        assert again["state"] == "running", again
        size_kib = int(exec_in(container, "df -P -k /home/coder | tail -n 1").stdout.split()[1])
        assert size_kib * 1024 > 100 * MIB
        assert exec_in(container, "cat /home/coder/notes.txt").stdout.strip() == "kept"
        audit = (await client.get("/api/admin/audit/", params={"target_id": sid}, headers=auth(admin))).json()
        assert any(entry["action"] == "workspace.disk_quota" for entry in audit["results"])


async def test_purge_removes_the_image_and_reconciliation_removes_orphans(servers, disk_dir):
    settings = quota_settings(disk_dir)
    server = await servers.start(**settings)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        student, _ = await running_workspace(client)
        keeper, _ = await running_workspace(client)
        image = disk_dir / f"{servers.instance}-ws-{student['user']['id']}-home.ext4"
        kept = disk_dir / f"{servers.instance}-ws-{keeper['user']['id']}-home.ext4"
        assert image.exists() and loops_of(disk_dir)
        loops_before = set(loops_of(disk_dir))
        gone = await client.delete(WORKSPACE, params={"purge": "true"}, headers=auth(student))
        assert gone.status_code == 200
        assert not image.exists()
        assert len(set(loops_of(disk_dir))) == len(loops_before) - 1  # its loop device was detached
    # An image nobody owns (a purge that failed half-way, a deleted database): removed at start-up.
    orphan = disk_dir / f"{servers.instance}-ws-987654-home.ext4"
    subprocess.run(["truncate", "-s", "1M", str(orphan)], check=True)
    await servers.stop(server)
    await servers.start(**settings, mongodb_db=server.services.settings.mongodb_db)
    for _ in range(100):
        if not orphan.exists():
            break
        await asyncio.sleep(0.2)
    assert not orphan.exists() and kept.exists()


async def test_below_the_low_water_mark_new_workspaces_are_refused_and_existing_ones_run(servers, disk_dir):
    first = await servers.start(**quota_settings(disk_dir))
    async with httpx.AsyncClient(base_url=first.url, timeout=60) as client:
        existing, _ = await running_workspace(client)
    low = await servers.start(**quota_settings(disk_dir, workspace_disk_low_water="1000TiB"),
                              mongodb_db=first.services.settings.mongodb_db)
    async with httpx.AsyncClient(base_url=low.url, timeout=60) as client:
        for _ in range(100):  # the free space is read in the background (a create never waits for it)
            if "apranova_workspace_disk_host_free_bytes NaN" not in (await client.get("/metrics")).text:
                break
            await asyncio.sleep(0.2)
        newcomer = await register(client)
        refused = await client.post(CREATE, headers=auth(newcomer), json={})
        assert refused.status_code == 503
        body = refused.json()
        assert body["error"] == "Not enough disk space" and "tell your trainer" in body["message"]
        assert "WORKSPACE_DISK" not in body["message"] and "/var/lib" not in body["message"]
        assert (await client.get(WORKSPACE, headers=auth(existing))).json()["state"] == "running"
        assert (await client.post(CREATE, headers=auth(existing), json={})).status_code == 200  # its own: fine


class NoRun:
    """A provisioning run outside the provisioner: the Docker backend's
    storage step records and says nothing."""

    async def record(self, **placement) -> None:
        raise AssertionError(f"unexpected record({placement})")

    async def say(self, message: str) -> None:
        pass


async def test_many_ensures_at_once_attach_each_image_once(servers, disk_dir):
    """Several processes (or runs) preparing homes at once: one image and
    one loop device per home, never two devices on one file system."""
    from services.workspaces import spec as specs
    server = await servers.start(**quota_settings(disk_dir))
    for _ in range(200):  # start-up reconciliation first: it would take these owner-less images for orphans
        if server.services.workspaces.engine_connected:
            break
        await asyncio.sleep(0.05)
    backend = server.services.workspaces.backend
    ides = [specs.build(server.services.settings, {"_id": f"w{n}", "owner_id": 900000 + n, "disk_quota": 64 * MIB},
                        "", exposed=False) for n in range(3)]
    homes = [ide.home_volume for ide in ides]
    answers = await asyncio.gather(*(backend.disks.prepare(home, 64 * MIB, f"{home}-c", {}) for home in homes
                                     for _ in range(4)))
    by_home = [{answer["device"] for answer in answers[n * 4:(n + 1) * 4]} for n in range(3)]
    assert all(len(devices) == 1 for devices in by_home)  # every caller of one home got the same device
    assert len(set.union(*by_home)) == 3 and len(loops_of(disk_dir)) == 3
    await asyncio.gather(*(backend.ensure_storage(ide, NoRun()) for ide in ides))  # different workspaces at once
    for home, devices in zip(homes, by_home):
        assert (await backend.engine.inspect_volume(home))["Options"]["device"] in devices
    await asyncio.gather(*(backend.remove_storage(ide) for ide in ides))
    assert loops_of(disk_dir) == [] and not list(disk_dir.glob("*.ext4"))


async def test_old_homes_stay_unlimited_and_a_lost_loop_device_is_attached_again(servers, disk_dir, tmp_path):
    plain = await servers.start()  # no quota: a plain volume, as before
    async with httpx.AsyncClient(base_url=plain.url, timeout=60) as client:
        old, _ = await running_workspace(client)
    database = plain.services.settings.mongodb_db
    await servers.stop(plain)
    server = await servers.start(**quota_settings(disk_dir), mongodb_db=database)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        assert (await client.post(CREATE, headers=auth(old), json={"wait": True})).json()["state"] == "running"
        old_home = f"{servers.instance}-ws-{old['user']['id']}-home"
        assert not (disk_dir / f"{old_home}.ext4").exists()
        assert docker("volume", "inspect", "-f", "{{len .Options}}", old_home) == "0"  # still a plain volume

        student, _ = await running_workspace(client)
        container = f"{servers.instance}-ws-{student['user']['id']}"
        assert exec_in(container, "echo mine >/home/coder/keep && echo ok").stdout.strip() == "ok"
        assert (await client.post("/api/users/workspace/stop/", headers=auth(student))).status_code == 200
        # As after a reboot: the image's loop device is gone, and its number is taken by another file.
        (loop,) = loops_of(disk_dir)
        subprocess.run(["losetup", "-d", loop], check=True)
        squatter = tmp_path / "squatter.img"
        subprocess.run(["truncate", "-s", "1M", str(squatter)], check=True)
        taken = subprocess.run(["losetup", "--show", loop, str(squatter)], capture_output=True, text=True)
        try:
            again = (await client.post(CREATE, headers=auth(student), json={"wait": True})).json()
            assert again["state"] == "running", again
            device = docker("volume", "inspect", "-f", "{{.Options.device}}", f"{container}-home")
            assert device in loops_of(disk_dir) and (taken.returncode != 0 or device != loop)
            assert exec_in(container, "cat /home/coder/keep").stdout.strip() == "mine"
        finally:
            if taken.returncode == 0:
                subprocess.run(["losetup", "-d", loop], check=False)
