"""The original frontend's enrolment vocabulary and profile fields (issue 21
§2): its types know PENDING_PAYMENT (the default), ENROLLED, SUSPENDED,
COMPLETED and WITHDRAWN, and its dashboard shows "Payment required" only for
PENDING_PAYMENT. Stored values of earlier versions are migrated at start-up."""
from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid

import httpx

from services.db import connect
from services.enrollment import migrate_enrollment
from tests.support.accounts import registration_body
from tests.support.app import auth, make_admin, register

FAKE = "tests.support.fake_backend:FakeBackend"
VOCABULARY = ["PENDING_PAYMENT", "ENROLLED", "SUSPENDED", "COMPLETED", "WITHDRAWN"]


async def test_the_original_sign_up_reads_its_profile(client) -> None:
    # The original sign-up page's body, consent included.
    body = registration_body(privacy_accepted=True, privacy_version="1.0", marketing_consent=False)
    created = await client.post("/api/auth/registration/", json=body)
    assert created.status_code == 201, created.text
    profile = (await client.get("/api/users/profile/", headers=auth(created.json()))).json()
    assert profile["enrollment_status"] == "PENDING_PAYMENT"
    assert profile["payment_verified"] is False and profile["enrolled_at"] is None
    assert profile["privacy_accepted"] is True
    accepted = dt.datetime.fromisoformat(profile["privacy_accepted_at"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - accepted).total_seconds()) < 60
    assert profile["username"] == body["email"]
    assert profile["workspace_url"] == ""
    silent = await register(client)  # no consent fields at all
    plain = (await client.get("/api/users/profile/", headers=auth(silent))).json()
    assert (plain["privacy_accepted"], plain["privacy_accepted_at"]) == (False, None)


async def test_workspace_url_is_the_students_workspace_origin(start_server) -> None:
    server = await start_server(workspace_backend=FAKE, instance_name=f"enr{random.randrange(16**8):08x}")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        student = await register(client)
        created = await client.post("/api/users/workspace/create/", headers=auth(student), json={})
        assert created.status_code == 201, created.text
        profile = (await client.get("/api/users/profile/", headers=auth(student))).json()
        # The origin of the contract's url (PORT's, as every url this server gives).
        assert profile["workspace_url"] == f"http://ws-{student['user']['id']}.localhost:8000"
        assert created.json()["url"].startswith(profile["workspace_url"] + "/")
        deleted = await client.delete("/api/users/workspace/", headers=auth(student))
        assert deleted.status_code in (200, 202, 204), deleted.text
        for _ in range(50):
            if (await client.get("/api/users/profile/", headers=auth(student))).json()["workspace_url"] == "":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a deleted workspace still has a workspace_url")


async def test_stored_values_are_migrated_at_start_up(start_server, mongo) -> None:
    database = f"enrol_{uuid.uuid4().hex[:8]}"
    client, db = connect(mongo.uri, database)  # what an earlier version stored
    now = dt.datetime.now(dt.timezone.utc)
    base = {"role": "student", "created_at": now, "updated_at": now, "name": "Old", "password_hash": None}
    await db.users.insert_many([
        {**base, "_id": 9001, "email": "a@x.org", "email_key": "a@x.org", "enrollment_status": "NOT_ENROLLED"},
        {**base, "_id": 9002, "email": "b@x.org", "email_key": "b@x.org"},  # none stored
        {**base, "_id": 9003, "email": "c@x.org", "email_key": "c@x.org", "enrollment_status": "NOT_ENROLLED",
         "payment_verified": True},
        {**base, "_id": 9004, "email": "d@x.org", "email_key": "d@x.org", "enrollment_status": "SUSPENDED"},
        {**base, "_id": 9005, "email": "e@x.org", "email_key": "e@x.org", "enrollment_status": "ENROLLED",
         "payment_verified": True},
    ])
    await client.close()
    started = await start_server(mongodb_db=database)  # the migration runs at start-up
    stored = {u["_id"]: u.get("enrollment_status") async for u in started.db.users.find({})}
    assert stored == {9001: "PENDING_PAYMENT", 9002: "PENDING_PAYMENT", 9003: "ENROLLED", 9004: "SUSPENDED",
                      9005: "ENROLLED"}
    again = await start_server(mongodb_db=database)
    assert await migrate_enrollment(again.db) == 0  # idempotent
    # Several processes starting at once write the same values.
    await again.db.users.update_one({"_id": 9001}, {"$set": {"enrollment_status": "NOT_ENROLLED"}})
    await asyncio.gather(*(migrate_enrollment(again.db) for _ in range(8)))
    assert (await again.db.users.find_one({"_id": 9001}))["enrollment_status"] == "PENDING_PAYMENT"


async def test_every_listing_speaks_the_vocabulary(server, client) -> None:
    admin = await make_admin(server, client)
    trainer = await register(client, role="trainer", track="DP")
    student = await register(client, track="DP")
    sid = student["user"]["id"]
    users = (await client.get("/api/admin/users/", headers=auth(admin))).json()
    assert {u["id"]: u["enrollment_status"] for u in users}[sid] == "PENDING_PAYMENT"
    detail = (await client.get(f"/api/admin/users/{sid}/", headers=auth(admin))).json()
    assert detail["enrollment_status"] == "PENDING_PAYMENT"
    mine = (await client.get("/api/users/my-students/", headers=auth(trainer))).json()["students"]
    assert [s["enrollment_status"] for s in mine if s["id"] == sid] == ["PENDING_PAYMENT"]
    listed = (await client.get("/api/trainer/students/", headers=auth(trainer))).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [s["enrollment_status"] for s in rows if s["id"] == sid] == ["PENDING_PAYMENT"]


async def test_openapi_documents_the_vocabulary(client) -> None:
    schemas = (await client.get("/api/openapi.json")).json()["components"]["schemas"]
    for name in ("ProfileOut", "StudentOut", "AdminUserOut", "TrainerStudentOut"):
        field = schemas[name]["properties"]["enrollment_status"]
        assert field.get("enum") == VOCABULARY, (name, field)
    profile = schemas["ProfileOut"]["properties"]
    for field in ("privacy_accepted", "privacy_accepted_at", "enrolled_at", "username", "workspace_url"):
        assert field in profile, field
