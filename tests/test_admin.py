"""The admin API and the trainers' student list over HTTP against the real
app and nx-27017: every role boundary, the plain-array and paginated user
lists, escaped search, soft delete, disable/enable with revoked sessions, and
the audit trail. Workspace actions on real Docker are in test_admin_docker.py."""
from __future__ import annotations

import httpx
import pytest

from models.admin import WORKSPACE_STATES
from tests.support.accounts import assert_envelope, assert_field_error, login, PASSWORD
from tests.support.app import auth, make_admin, register, unique_email
from tests.support.admin import insert_workspace, user_path, USERS

# No Docker engine: the workspace documents these tests write stay as written.
pytestmark = pytest.mark.without_docker


# Every admin operation, with a body where it takes one (ids filled in per test).
def admin_operations(target: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", USERS, None), ("POST", USERS, {"email": unique_email("x"), "name": "X", "password": PASSWORD}),
        ("GET", user_path(target), None), ("PUT", user_path(target), {"name": "Renamed"}),
        ("DELETE", user_path(target), None), ("GET", "/api/admin/audit/", None),
        ("GET", "/api/admin/workspaces/", None), ("DELETE", f"/api/admin/workspaces/{target}/", None),
        ("POST", f"/api/admin/workspaces/{target}/stop/", None),
        ("POST", f"/api/admin/workspaces/{target}/start/", None),
        ("GET", f"/api/admin/workspaces/{target}/events/", None),
    ]


async def audit(client: httpx.AsyncClient, admin: dict, **query: str) -> list[dict]:
    response = await client.get("/api/admin/audit/", params=query, headers=auth(admin))
    assert response.status_code == 200, response.text
    return response.json()["results"]


async def test_students_trainers_and_strangers_are_refused_everywhere(server, client):
    student = await register(client)
    trainer = await register(client, role="trainer")
    victim = await register(client)
    for method, path, body in admin_operations(victim["user"]["id"]):
        assert_envelope(await client.request(method, path, json=body), 401)
        for caller in (student, trainer):
            response = await client.request(method, path, json=body, headers=auth(caller))
            assert_envelope(response, 403)
    # Nothing changed: the victim is still there, unrenamed, and can log in.
    assert (await login(client, victim["user"]["email"])).status_code == 200
    doc = await server.db.users.find_one({"_id": victim["user"]["id"]})
    assert doc["name"] == "Test User" and "deleted_at" not in doc
    assert await server.db.audit_log.count_documents({}) == 0
    assert_envelope(await client.get("/api/trainer/students/", headers=auth(student)), 403)


async def test_user_list_is_a_plain_array_unless_a_page_is_asked_for(server, client):
    admin = await make_admin(server, client)
    for index in range(3):
        await register(client, name=f"Learner {index}", email=f"learner{index}-{admin['user']['id']}@example.com")
    plain = await client.get(USERS, headers=auth(admin))
    assert plain.status_code == 200
    assert isinstance(plain.json(), list) and len(plain.json()) == 4
    assert plain.headers["X-Total-Count"] == "4"
    assert {"id", "email", "name", "role", "track", "disabled", "created_at", "last_login"} <= set(plain.json()[0])
    assert "password_hash" not in plain.text

    paged = (await client.get(USERS, params={"page": 2, "page_size": 3}, headers=auth(admin))).json()
    assert paged["count"] == 4 and paged["page"] == 2 and paged["page_size"] == 3
    assert [user["id"] for user in paged["results"]] == [plain.json()[3]["id"]]
    only_admins = (await client.get(USERS, params={"role": "admin"}, headers=auth(admin))).json()
    assert [user["id"] for user in only_admins] == [admin["user"]["id"]]

    for bad in ({"page": "0"}, {"page": "x"}, {"page": "1", "page_size": "101"}, {"role": "king"},
                {"q": "a" * 101}):
        assert_envelope(await client.get(USERS, params=bad, headers=auth(admin)), 400)


async def test_search_is_plain_text_never_a_regular_expression(server, client):
    admin = await make_admin(server, client)
    await register(client, name="Ada (Countess) Lovelace", email="ada.lovelace@example.com")
    await register(client, name="Grace Hopper", email="grace@example.com")

    async def found(q: str) -> list[str]:
        response = await client.get(USERS, params={"q": q}, headers=auth(admin))
        assert response.status_code == 200, response.text
        return sorted(user["email"] for user in response.json())

    assert await found("ADA") == ["ada.lovelace@example.com"]  # any case, in the email or the name
    assert await found("hopper") == ["grace@example.com"]
    assert await found("(countess)") == ["ada.lovelace@example.com"]
    assert await found(".*") == []  # a pattern is just text
    assert await found("Ada..Countess") == []  # as a regex it would match "Ada (Countess"
    assert await found("ada.l") == ["ada.lovelace@example.com"]
    assert await found("[") == [] and await found("(a+)+$") == []


async def test_create_user_follows_the_role_rules_and_is_audited(server, client):
    admin = await make_admin(server, client)
    boss = await make_admin(server, client, role="superadmin")
    body = {"email": unique_email("new"), "name": "New Trainer", "password": PASSWORD, "role": "trainer",
            "track": "FSD"}
    created = await client.post(USERS, json=body, headers=auth(admin))
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "trainer" and created.json()["track"] == "FSD"
    assert (await login(client, body["email"], role="trainer")).status_code == 200

    assert_envelope(await client.post(USERS, json={**body, "email": unique_email("a"), "role": "admin"},
                                      headers=auth(admin)), 403)
    made = await client.post(USERS, json={**body, "email": unique_email("a"), "role": "admin"}, headers=auth(boss))
    assert made.status_code == 201 and made.json()["role"] == "admin"
    assert_field_error(await client.post(USERS, json=body, headers=auth(admin)), "email")  # taken
    assert_field_error(await client.post(USERS, json={**body, "email": unique_email(), "password": "password"},
                                         headers=auth(admin)), "password1")
    assert_field_error(await client.post(USERS, json={**body, "email": unique_email(), "track": "XX"},
                                         headers=auth(admin)), "track")
    entries = await audit(client, admin, action="user.created")
    assert [(e["actor_id"], e["target_email"]) for e in entries] == [
        (boss["user"]["id"], made.json()["email"]), (admin["user"]["id"], body["email"])]
    assert entries[0]["at"].endswith("Z")


async def admins_and_a_student(server, client) -> tuple[dict, dict, dict, dict]:
    """Two admins, a superadmin and a student, registered in that order."""
    admin = await make_admin(server, client)
    other_admin = await make_admin(server, client)
    boss = await make_admin(server, client, role="superadmin")
    return admin, other_admin, boss, await register(client)


async def test_role_changes_follow_update_role_rules(server, client):
    admin, other_admin, boss, student = await admins_and_a_student(server, client)
    sid = student["user"]["id"]

    promoted = await client.put(user_path(sid), json={"role": "trainer"}, headers=auth(admin))
    assert promoted.status_code == 200 and promoted.json()["role"] == "trainer"
    assert_envelope(await client.put(user_path(sid), json={"role": "admin"}, headers=auth(admin)), 403)
    assert_envelope(await client.put(user_path(other_admin["user"]["id"]), json={"role": "student"},
                                     headers=auth(admin)), 403)
    assert_envelope(await client.put(user_path(admin["user"]["id"]), json={"role": "superadmin"},
                                     headers=auth(admin)), 403)
    granted = await client.put(user_path(sid), json={"role": "admin"}, headers=auth(boss))
    assert granted.status_code == 200 and granted.json()["role"] == "admin"
    removed = await client.put(user_path(other_admin["user"]["id"]), json={"role": "student"}, headers=auth(boss))
    assert removed.json()["role"] == "student"
    # The last superadmin cannot demote themselves.
    assert_envelope(await client.put(user_path(boss["user"]["id"]), json={"role": "admin"}, headers=auth(boss)),
                    409)
    assert_field_error(await client.put(user_path(sid), json={"role": "king"}, headers=auth(boss)), "role")

    changes = [(e["actor_id"], e["target_id"], e["details"]) for e in await audit(client, boss,
                                                                                 action="user.role_changed")]
    assert changes == [(boss["user"]["id"], other_admin["user"]["id"], {"from": "admin", "to": "student"}),
                       (boss["user"]["id"], sid, {"from": "trainer", "to": "admin"}),
                       (admin["user"]["id"], sid, {"from": "student", "to": "trainer"})]
    # The contract's own update-role endpoint writes the audit log too.
    response = await client.post("/api/users/update-role/", json={"user_id": sid, "role": "trainer"},
                                 headers=auth(boss))
    assert response.status_code == 200
    assert (await audit(client, boss, target_id=str(sid)))[0]["details"] == {"from": "admin", "to": "trainer"}


async def test_disable_and_enable_revoke_sessions_within_the_boundaries(server, client):
    admin, other_admin, boss, student = await admins_and_a_student(server, client)
    sid = student["user"]["id"]

    disabled = await client.put(user_path(sid), json={"disabled": True}, headers=auth(admin))
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert_envelope(await client.get("/api/users/profile/", headers=auth(student)), 401)
    assert_envelope(await client.post("/api/auth/token/refresh/", json={"refresh": student["refresh"]}), 401)
    refused = await login(client, student["user"]["email"])
    assert_envelope(refused, 403)
    assert "access" not in refused.json()

    enabled = await client.put(user_path(sid), json={"disabled": False}, headers=auth(admin))
    assert enabled.json()["disabled"] is False
    assert (await login(client, student["user"]["email"])).status_code == 200
    assert_envelope(await client.get("/api/users/profile/", headers=auth(student)), 401)  # old login stays dead

    # Admins: not a superadmin, not another admin, not themselves. Superadmins: not themselves.
    for target in (boss, other_admin, admin):
        assert_envelope(await client.put(user_path(target["user"]["id"]), json={"disabled": True},
                                         headers=auth(admin)), 403)
    assert_envelope(await client.put(user_path(boss["user"]["id"]), json={"disabled": True}, headers=auth(boss)),
                    403)
    assert (await client.get("/api/users/profile/", headers=auth(admin))).status_code == 200
    ok = await client.put(user_path(other_admin["user"]["id"]), json={"disabled": True}, headers=auth(boss))
    assert ok.status_code == 200
    assert_envelope(await client.get(USERS, headers=auth(other_admin)), 401)
    # An admin cannot rename another admin either (only a superadmin edits admin accounts).
    assert_envelope(await client.put(user_path(boss["user"]["id"]), json={"name": "X"}, headers=auth(admin)), 403)

    actions = [(e["action"], e["target_id"]) for e in await audit(client, boss)]
    assert actions == [("user.disabled", other_admin["user"]["id"]), ("user.enabled", sid), ("user.disabled", sid)]


async def test_update_checks_everything_before_changing_anything(server, client):
    admin = await make_admin(server, client)
    student = await register(client, name="Before")
    sid = student["user"]["id"]
    assert_field_error(await client.put(user_path(sid), json={"role": "trainer", "track": "NOPE"},
                                        headers=auth(admin)), "track")
    assert_field_error(await client.put(user_path(sid), json={"name": "  "}, headers=auth(admin)), "name")
    assert_field_error(await client.put(user_path(sid), json={"disabled": "yes"}, headers=auth(admin)), "disabled")
    doc = await server.db.users.find_one({"_id": sid})
    assert (doc["role"], doc["name"]) == ("student", "Before")
    renamed = await client.put(user_path(sid), json={"name": "After", "track": "FSD"}, headers=auth(admin))
    assert (renamed.json()["name"], renamed.json()["track"]) == ("After", "FSD")
    for missing in (user_path(999999), user_path(2**63), user_path(10**19 - 1)):
        assert_envelope(await client.get(missing, headers=auth(admin)), 404)
        assert_envelope(await client.put(missing, json={}, headers=auth(admin)), 404)


async def test_soft_delete_keeps_payments_and_audit_and_frees_the_email(server, client):
    admin = await make_admin(server, client)
    student = await register(client)
    sid, email = student["user"]["id"], student["user"]["email"]
    await server.db.payments.insert_one({"user_id": sid, "payment_intent_id": "pi_kept", "status": "succeeded"})
    await client.put(user_path(sid), json={"name": "Renamed"}, headers=auth(admin))

    assert_envelope(await client.delete(user_path(admin["user"]["id"]), headers=auth(admin)), 403)
    deleted = await client.delete(user_path(sid), headers=auth(admin))
    assert deleted.status_code == 204 and deleted.content == b""
    assert_envelope(await client.get(user_path(sid), headers=auth(admin)), 404)
    assert_envelope(await client.delete(user_path(sid), headers=auth(admin)), 404)
    assert sid not in [user["id"] for user in (await client.get(USERS, headers=auth(admin))).json()]
    assert_envelope(await client.get("/api/users/profile/", headers=auth(student)), 401)
    assert_envelope(await login(client, email), 401)

    doc = await server.db.users.find_one({"_id": sid})
    assert doc["email"] == email and doc["disabled"] and doc["deleted_at"]
    assert await server.db.payments.count_documents({"user_id": sid}) == 1
    assert [e["action"] for e in await audit(client, admin, target_id=str(sid))] == ["user.deleted", "user.updated"]
    again = await register(client, email=email)  # the address may sign up afresh
    assert again["user"]["id"] != sid


async def test_audit_log_pages_newest_first(server, client):
    admin = await make_admin(server, client)
    student = await register(client)
    for index in range(5):
        await client.put(user_path(student["user"]["id"]), json={"name": f"Name {index}"}, headers=auth(admin))
    page = (await client.get("/api/admin/audit/", params={"page": 1, "page_size": 2}, headers=auth(admin))).json()
    assert page["count"] == 5 and len(page["results"]) == 2
    assert [e["details"]["name"] for e in page["results"]] == ["Name 4", "Name 3"]
    entry = page["results"][0]
    assert (entry["actor_id"], entry["actor_email"], entry["action"], entry["target_id"]) == (
        admin["user"]["id"], admin["user"]["email"], "user.updated", student["user"]["id"])
    assert_envelope(await client.get("/api/admin/audit/", params={"target_id": "x"}, headers=auth(admin)), 400)


async def test_workspace_list_and_event_history(server, client):
    admin = await make_admin(server, client)
    trainer = await register(client, role="trainer")
    runner, stopper, gone = [await register(client, name=name) for name in ("Runner", "Stopper", "Gone")]
    await insert_workspace(server, runner["user"]["id"], "running", "2026-01-02T00:00:00Z", events=3)
    await insert_workspace(server, stopper["user"]["id"], "stopped", "2026-01-03T00:00:00Z")
    await insert_workspace(server, gone["user"]["id"], "deleted", "2026-01-04T00:00:00Z")

    listed = (await client.get("/api/admin/workspaces/", headers=auth(admin))).json()
    assert listed["count"] == 2
    assert [(w["owner"]["name"], w["state"], w["since"]) for w in listed["results"]] == [
        ("Stopper", "stopped", "2026-01-03T00:00:00Z"), ("Runner", "running", "2026-01-02T00:00:00Z")]
    assert "secret-pw" not in str(listed)
    running = (await client.get("/api/admin/workspaces/", params={"state": "running"}, headers=auth(admin))).json()
    assert [w["owner"]["id"] for w in running["results"]] == [runner["user"]["id"]]
    deleted = (await client.get("/api/admin/workspaces/", params={"state": "deleted"}, headers=auth(admin))).json()
    assert [w["owner"]["id"] for w in deleted["results"]] == [gone["user"]["id"]]
    assert_field_error(await client.get("/api/admin/workspaces/", params={"state": "on"}, headers=auth(admin)),
                       "state")

    path = f"/api/admin/workspaces/{runner['user']['id']}/events/"
    history = (await client.get(path, params={"page_size": 2}, headers=auth(admin))).json()
    assert history["count"] == 3 and [e["seq"] for e in history["results"]] == [3, 2]
    assert history["results"][0] == {"seq": 3, "state": "running", "progress": 3, "message": "step 3",
                                     "at": "2026-01-01T00:00:03Z"}
    assert_envelope(await client.get(f"/api/admin/workspaces/{trainer['user']['id']}/events/",
                                     headers=auth(admin)), 404)


def test_workspace_states_match_the_service():
    from services.workspaces import State
    assert set(WORKSPACE_STATES) == {state.value for state in State}


@pytest.mark.parametrize("q", ["$where", "{\"$ne\": 1}", "\\", "^$", "|"])
async def test_odd_search_text_is_a_plain_answer(server, client, q):
    admin = await make_admin(server, client)
    response = await client.get(USERS, params={"q": q, "page": "1"}, headers=auth(admin))
    assert response.status_code == 200 and response.json()["count"] == 0


async def test_preflight_on_paths_with_an_id(server, client):
    for path in (user_path(1), "/api/admin/workspaces/1/", "/api/admin/workspaces/1/events/"):
        response = await client.options(path, headers={"Origin": "http://elsewhere.example"})
        assert response.status_code == 204, response.text


async def test_a_disabled_superadmin_does_not_count_as_the_last_one(server, client):
    boss = await make_admin(server, client, role="superadmin")
    other = await make_admin(server, client, role="superadmin")
    assert (await client.put(user_path(other["user"]["id"]), json={"disabled": True},
                             headers=auth(boss))).status_code == 200
    assert_envelope(await client.put(user_path(boss["user"]["id"]), json={"role": "admin"}, headers=auth(boss)),
                    409)
    assert (await client.put(user_path(other["user"]["id"]), json={"disabled": False},
                             headers=auth(boss))).status_code == 200
    demoted = await client.put(user_path(boss["user"]["id"]), json={"role": "admin"}, headers=auth(boss))
    assert demoted.status_code == 200 and demoted.json()["role"] == "admin"
