"""The trainers' student lists over HTTP against the real app and nx-27017:
GET /api/trainer/students/ (paginated, with workspace state) and
GET /api/users/my-students/ (the contract's shape) list the same people, by
the one rule in services/students.py."""
from __future__ import annotations

import pytest

from tests.support.app import auth, make_admin, register
from tests.support.admin import insert_workspace, user_path

# No Docker engine: the workspace documents these tests write stay as written.
pytestmark = pytest.mark.without_docker


async def test_trainers_see_their_tracks_students_read_only(server, client):
    trainer = await register(client, role="trainer", track="DP")
    mine = await register(client, name="Mine", track="DP")
    await register(client, name="Other track", track="FSD")
    await register(client, role="trainer", name="Colleague", track="DP")
    await insert_workspace(server, mine["user"]["id"], "running", "2026-01-02T00:00:00Z")

    listed = (await client.get("/api/trainer/students/", headers=auth(trainer))).json()
    assert listed["count"] == 1
    student = listed["results"][0]
    assert (student["id"], student["name"], student["track"], student["workspace_state"],
            student["workspace_since"]) == (mine["user"]["id"], "Mine", "DP", "running", "2026-01-02T00:00:00Z")
    # A trainer cannot widen the view to another track.
    other = (await client.get("/api/trainer/students/", params={"track": "FSD"}, headers=auth(trainer))).json()
    assert [s["id"] for s in other["results"]] == [mine["user"]["id"]]
    # Admins see any track.
    admin = await make_admin(server, client)
    fsd = (await client.get("/api/trainer/students/", params={"track": "FSD"}, headers=auth(admin))).json()
    assert [s["name"] for s in fsd["results"]] == ["Other track"]
    everyone = (await client.get("/api/trainer/students/", headers=auth(admin))).json()
    assert sorted(s["name"] for s in everyone["results"]) == ["Mine", "Other track"]
    # A trainer without a track has no students yet (not the track-less ones).
    await register(client, name="No track", track=None)
    loner = await register(client, role="trainer", track=None)
    assert (await client.get("/api/trainer/students/", headers=auth(loner))).json()["count"] == 0


async def test_both_trainer_lists_follow_one_rule(server, client):
    """A trainer's students are those assigned to them, plus their track's
    students without a trainer; GET /api/users/my-students/ (the contract's
    shape) and GET /api/trainer/students/ (paginated, with trainer_id saying
    which) list the same people."""
    early = await register(client, name="Early Bird", track="DP")  # before the track had a trainer
    first = await register(client, role="trainer", name="First Trainer", track="DP")
    a = await register(client, name="Assigned First", track="DP")
    second = await register(client, role="trainer", name="Second Trainer", track="DP")
    b = await register(client, name="Assigned Second", track="DP")  # the less loaded trainer
    await register(client, name="Other Track", track="FSD")
    gone = await register(client, name="Gone Student", track="DP")  # the first trainer's again, then deleted
    admin = await make_admin(server, client)
    assert (await client.delete(user_path(gone["user"]["id"]), headers=auth(admin))).status_code == 204
    # Moving an assigned student to another track keeps them with their trainer.
    await client.put(user_path(a["user"]["id"]), json={"track": "FSD"}, headers=auth(admin))

    async def both(trainer: dict, **params) -> tuple[list[dict], list[dict]]:
        mine = (await client.get("/api/users/my-students/", headers=auth(trainer))).json()["students"]
        paged = (await client.get("/api/trainer/students/", params=params, headers=auth(trainer))).json()
        return mine, paged["results"]

    mine, paged = await both(first)
    assert [s["id"] for s in mine] == [early["user"]["id"], a["user"]["id"]]
    assert sorted(s["id"] for s in paged) == [s["id"] for s in mine]
    assert all(set(s) == {"id", "name", "email", "track", "enrollment_status"} for s in mine)
    why = {s["name"]: s["trainer_id"] for s in paged}
    assert why == {"Early Bird": None, "Assigned First": first["user"]["id"]}
    mine, paged = await both(second)
    assert [s["id"] for s in mine] == [early["user"]["id"], b["user"]["id"]]
    assert sorted(s["id"] for s in paged) == [s["id"] for s in mine]
    # A search narrows within the rule, never beyond it.
    _, found = await both(first, q="assigned")
    assert [s["name"] for s in found] == ["Assigned First"]
