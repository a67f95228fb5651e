"""Disk quotas without Docker (issue 24): the settings' sizes, the wording
the student reads, and the admin's quota endpoint's refusals over HTTP
against the real app and nx-27017 (the engine-side behaviour is in
test_disk_quota_docker.py)."""
from __future__ import annotations

import pytest

from services import settings as settings_mod
from services.workspaces.quota import amount, level, student_message
from tests.support.accounts import assert_envelope
from tests.support.app import auth, make_admin, register

NO_DOCKER = "unix:///nonexistent/apranova-disk-tests.sock"
MIB, GIB = 1024 ** 2, 1024 ** 3


@pytest.mark.parametrize("raw, expected", [("", 0), ("0", 0), ("2GiB", 2 * GIB), ("512m", 512 * MIB),
                                           ("1.5g", int(1.5 * GIB)), ("67108864", 64 * MIB), (" 4 gb ", 4 * GIB)])
def test_sizes_read_as_docker_reads_them(raw, expected):
    assert settings_mod.load(environ={"WORKSPACE_DISK_QUOTA": raw}).workspace_disk_quota == expected
    assert settings_mod.load(environ={"WORKSPACE_DISK_LOW_WATER": raw}).workspace_disk_low_water == expected


@pytest.mark.parametrize("raw", ["lots", "2 GiBs", "-1g", "1e9"])
def test_a_bad_size_names_the_setting(raw):
    with pytest.raises(settings_mod.SettingsError, match="WORKSPACE_DISK_LOW_WATER"):
        settings_mod.load(environ={"WORKSPACE_DISK_LOW_WATER": raw})


@pytest.mark.parametrize("values, named", [({"WORKSPACE_DISK_QUOTA": "1MiB"}, "WORKSPACE_DISK_QUOTA"),
                                           ({"WORKSPACE_DISK_DIR": "disks"}, "WORKSPACE_DISK_DIR")])
def test_unusable_quota_settings_refuse_to_start(values, named):
    with pytest.raises(settings_mod.SettingsError, match=named):
        settings_mod.load(environ=values)


def test_the_student_reads_figures_and_what_to_do_not_how_it_works():
    assert amount(int(1.2 * GIB), 2 * GIB) == "1.2 of 2 GiB" and amount(30 * MIB, 64 * MIB) == "30 of 64 MiB"
    assert [level(u, 100 * MIB) for u in (50 * MIB, 90 * MIB, 99.5 * MIB)] == ["ok", "warning", "full"]
    warning = student_message(int(1.86 * GIB), 2 * GIB, "warning")
    assert warning.startswith("Your workspace storage is 93% full (1.9 of 2 GiB)") and "Delete files" in warning
    full = student_message(2 * GIB - MIB, 2 * GIB, "full")
    assert "saving files fails" in full and "ask your trainer" in full
    for text in (warning, full):
        assert not any(word in text for word in ("loop", "ext4", "quota", "WORKSPACE_", "/var/lib", "docker"))


async def test_the_quota_endpoint_refuses_bad_requests_with_the_envelope(start_server):
    import httpx
    server = await start_server(docker_host=NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        admin = await make_admin(server, client)
        student = await register(client)
        url = f"/api/admin/workspaces/{student['user']['id']}/disk-quota/"
        assert_envelope(await client.put(url, headers=auth(student), json={"disk_quota": "1GiB"}), 403)
        assert_envelope(await client.put(url, json={"disk_quota": "1GiB"}), 401)
        for body in ({"disk_quota": "lots"}, {"disk_quota": 10}, {"disk_quota": "99TiB"}, {"disk_quota": True},
                     {"disk_quota": ["1GiB"]}, {}):
            assert_envelope(await client.put(url, headers=auth(admin), json=body), 400)
        no_workspace = await client.put(url, headers=auth(admin), json={"disk_quota": "1GiB"})
        assert assert_envelope(no_workspace, 404)["error"] == "Workspace not found"
        assert_envelope(await client.put("/api/admin/workspaces/999999/disk-quota/", headers=auth(admin),
                                         json={"disk_quota": "1GiB"}), 404)
        await server.db.workspaces.insert_one({"_id": "w1", "owner_id": student["user"]["id"], "state": "stopped",
                                               "disk_quota": 2 * GIB})
        assert_envelope(await client.put(url, headers=auth(admin), json={"disk_quota": "1GiB"}), 409)
        raised = await client.put(url, headers=auth(admin), json={"disk_quota": 3 * GIB})
        assert raised.status_code == 200 and raised.json() == {
            "disk_quota": 3 * GIB, "message": "The new quota applies the next time the workspace starts."}
