"""Every list of users the API returns comes back in numeric (creation)
order, over HTTP against the real app and nx-27017, which sorts an integer
`_id` as text (1, 10, 11, 2): each test makes 12+ users so that shows."""
from __future__ import annotations

import pytest

from tests.support.app import auth, make_admin, register

# No Docker engine: the workspace documents these tests write stay as written.
pytestmark = pytest.mark.without_docker


def ascending(ids: list[int]) -> bool:
    return ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_the_admin_user_list_is_in_numeric_order(server, client):
    admin = await make_admin(server, client)
    for _ in range(12):
        await register(client)
    plain = await client.get("/api/admin/users/", headers=auth(admin))
    ids = [user["id"] for user in plain.json()]
    assert len(ids) == 13 and max(ids) >= 10 and ascending(ids), ids
    pages = []
    for page in (1, 2, 3):
        body = (await client.get("/api/admin/users/", params={"page": page, "page_size": 5},
                                 headers=auth(admin))).json()
        pages += [user["id"] for user in body["results"]]
    assert pages == ids  # the pages cut the same order


async def test_a_trainers_students_are_in_numeric_order(server, client):
    trainer = await register(client, role="trainer", track="DP")
    students = [(await register(client, name="Same Name", track="DP"))["user"]["id"] for _ in range(12)]
    mine = (await client.get("/api/users/my-students/", headers=auth(trainer))).json()["students"]
    assert [student["id"] for student in mine] == students
    paged = (await client.get("/api/trainer/students/", params={"page_size": 50}, headers=auth(trainer))).json()
    assert [student["id"] for student in paged["results"]] == students  # one name: ties in creation order


async def test_a_tie_between_trainers_goes_to_the_older_one(server, client):
    """Trainer ids 1 and 10: as text, "10" sorts first."""
    older = await register(client, role="trainer", name="Older", track="DP")
    for _ in range(8):
        await register(client, track="FSD")
    newer = await register(client, role="trainer", name="Newer", track="DP")
    assert (older["user"]["id"], newer["user"]["id"]) == (1, 10)
    student = await register(client, track="DP")
    mine = (await client.get("/api/users/my-students/", headers=auth(older))).json()["students"]
    assert student["user"]["id"] in [s["id"] for s in mine]
    theirs = (await client.get("/api/users/my-students/", headers=auth(newer))).json()["students"]
    assert student["user"]["id"] not in [s["id"] for s in theirs]
