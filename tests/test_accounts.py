"""Accounts over HTTP: registration, login, check-email, profile, role changes,
and the attacks on them (operator injection, role escalation)."""
from __future__ import annotations

import asyncio
import datetime as dt
import re
import statistics
import time
import unicodedata

import pytest

from tests.support.accounts import assert_envelope, assert_field_error, auth, claims_of, INVALID_CREDENTIALS, login, OPERATOR_VALUES, PASSWORD, profile, register, registration_body, unique_email
from tests.support.app import make_admin

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# -- registration --------------------------------------------------------------------------------

async def test_registration_returns_tokens_and_the_user(client):
    body = registration_body(name="Ada Lovelace", track="FSD", role="trainer")
    response = await client.post("/api/auth/registration/", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    # The contract's three, and what the original sign-up page reads (issue 12).
    assert set(data) == {"access", "refresh", "user", "trainer_assigned", "trainer_name"}
    assert data["user"] == {"id": data["user"]["id"], "email": body["email"], "name": "Ada Lovelace",
                            "role": "trainer", "track": "FSD"}
    assert isinstance(data["user"]["id"], int) and not isinstance(data["user"]["id"], bool)
    assert claims_of(data["access"])["type"] == "access"
    assert claims_of(data["refresh"])["type"] == "refresh"
    # The tokens work straight away.
    me = await profile(client, data)
    assert me.status_code == 200 and me.json()["email"] == body["email"]


async def test_user_ids_are_sequential_integers_even_when_registering_concurrently(client):
    first = (await register(client))["user"]["id"]
    bodies = [registration_body() for _ in range(8)]
    responses = await asyncio.gather(*(client.post("/api/auth/registration/", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [201] * 8
    ids = sorted(r.json()["user"]["id"] for r in responses)
    assert ids == list(range(first + 1, first + 9))


async def test_registration_without_track_and_role_defaults_to_student(client):
    response = await client.post("/api/auth/registration/", json=registration_body(role=..., track=...))
    assert response.status_code == 201, response.text
    assert response.json()["user"]["role"] == "student"
    assert response.json()["user"]["track"] is None


async def test_email_is_trimmed_and_unique_ignoring_case(client):
    email = unique_email("Case")
    response = await client.post("/api/auth/registration/", json=registration_body(email=f"  {email}\t"))
    assert response.status_code == 201, response.text
    assert response.json()["user"]["email"] == email
    for variant in (email.upper(), email.lower(), f" {email.swapcase()} "):
        again = await client.post("/api/auth/registration/", json=registration_body(email=variant))
        body = assert_field_error(again, "email")
        assert "already exists" in body["email"][0]
    # Login ignores case and surrounding spaces too.
    assert (await login(client, f" {email.upper()} ")).status_code == 200


async def test_concurrent_registrations_of_one_email_create_one_account(client, server):
    email = unique_email("race")
    responses = await asyncio.gather(*(client.post("/api/auth/registration/", json=registration_body(email=email))
                                       for _ in range(5)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 400, 400, 400, 400], [r.text for r in responses]
    assert await server.db.users.count_documents({"email": email}) == 1


@pytest.mark.parametrize("email", ["plainaddress", "no-at.example.com", "a@b", "a b@example.com", "a@@example.com",
                                   "a@example..com", "@example.com", "a@.example.com", "", "   ",
                                   "x" * 65 + "@example.com", "a@" + "b" * 250 + ".com"])
async def test_malformed_emails_are_field_errors(client, email):
    response = await client.post("/api/auth/registration/", json=registration_body(email=email))
    assert_field_error(response, "email")


# Invisible format characters (Unicode category Cf) make look-alikes of real
# addresses: zero-width space, right-to-left override, soft hyphen, BOM, ...
@pytest.mark.parametrize("char", ["\u200b", "\u202e", "\u00ad", "\u2060", "\ufeff", "\u200d", "\U000e0041"])
@pytest.mark.parametrize("where", ["local", "domain"])
async def test_emails_with_invisible_format_characters_are_refused(client, char, where):
    email = f"ad{char}min@example.com" if where == "local" else f"admin@exa{char}mple.com"
    response = await client.post("/api/auth/registration/", json=registration_body(email=email))
    body = assert_field_error(response, "email")
    assert body["email"] == ["Enter a valid email address."]


async def test_unicode_emails_register_log_in_and_are_unique_ignoring_case(client, server):
    email = f"Jos\u00e9.M\u00fcller-{unique_email('u')}".replace("@example.com", "@b\u00fccher.example")
    response = await client.post("/api/auth/registration/", json=registration_body(email=email))
    assert response.status_code == 201, response.text
    assert response.json()["user"]["email"] == email
    assert (await login(client, email.upper())).status_code == 200
    # The same address with the accent written as combining characters is the same account.
    decomposed = unicodedata.normalize("NFD", email)
    assert decomposed != email
    again = await client.post("/api/auth/registration/", json=registration_body(email=decomposed))
    assert_field_error(again, "email")
    assert (await client.post("/api/users/check-email/", json={"email": decomposed.upper()})).json() == {
        "exists": True}


@pytest.mark.parametrize("password, fragment", [
    ("Sh0rt!", "at least 8 characters"),
    ("12345678901", "entirely numeric"),
    ("password123", "too common"),
    ("Qwerty123", "too common"),
])
async def test_weak_passwords_are_refused(client, password, fragment):
    response = await client.post("/api/auth/registration/", json=registration_body(password1=password,
                                                                                   password2=password))
    body = assert_field_error(response, "password1")
    assert any(fragment in message for message in body["password1"]), body


async def test_passwords_similar_to_email_or_name_are_refused(client):
    email = unique_email("margaret")
    local = email.split("@")[0]
    for password, changes in [(local + "!", {}), ("Margaret1957", {}), (email, {}),
                              ("Hamilton-1936", {"name": "Margaret Hamilton"})]:
        response = await client.post("/api/auth/registration/",
                                     json=registration_body(email=email, password1=password, password2=password,
                                                            **changes))
        body = assert_field_error(response, "password1")
        assert any("too similar" in message for message in body["password1"]), (password, body)


async def test_unrelated_passwords_are_not_called_similar(client):
    """Sharing a common fragment like 'com' with the domain is not similarity."""
    for password in ("Welcome-Horse-42", "Computer-Lamp-77", "Example-Of-Nothing9"):
        response = await client.post("/api/auth/registration/", json=registration_body(
            email=unique_email("dana"), name="Dana Scully", password1=password, password2=password))
        assert response.status_code == 201, (password, response.text)


async def test_passwords_must_match(client):
    response = await client.post("/api/auth/registration/",
                                 json=registration_body(password1=PASSWORD, password2=PASSWORD + "x"))
    body = assert_field_error(response, "password2")
    assert "didn't match" in body["password2"][0]


@pytest.mark.parametrize("password", ["a" * 73, "Zebra-" + "\u00e9" * 40, "\U0001f600" * 19, "x" * 1024])
async def test_password_over_72_bytes_is_a_clear_400(client, server, password):
    body = registration_body(password1=password, password2=password)
    response = await client.post("/api/auth/registration/", json=body)
    errors = assert_field_error(response, "password1")
    assert any("72 bytes" in message for message in errors["password1"]), errors
    assert await server.db.users.count_documents({"email": body["email"]}) == 0


async def test_password_of_exactly_72_bytes_is_accepted_and_logs_in(client):
    password = "Zq-" + "\u00e9" * 34 + "x"  # 3 + 68 + 1 = 72 bytes
    assert len(password.encode()) == 72
    data = await register(client, password=password)
    assert (await login(client, data["user"]["email"], password)).status_code == 200
    # One more byte at login is simply a wrong password, never a 500.
    response = await login(client, data["user"]["email"], password + "y")
    assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS


@pytest.mark.parametrize("role", ["admin", "superadmin", "Admin", "root", ""])
async def test_privileged_or_unknown_roles_are_refused_at_registration(client, server, role):
    body = registration_body(role=role)
    response = await client.post("/api/auth/registration/", json=body)
    assert_field_error(response, "role")
    assert await server.db.users.count_documents({"email": body["email"]}) == 0


async def test_registration_ignores_fields_a_client_may_not_set(client, server):
    body = registration_body(id=1, _id=1, password_hash="x", payment_verified=True, enrollment_status="ENROLLED",
                             disabled=False, created_at="2000-01-01T00:00:00Z")
    response = await client.post("/api/auth/registration/", json=body)
    assert response.status_code == 201, response.text
    data = (await profile(client, response.json())).json()
    assert data["payment_verified"] is False and data["enrollment_status"] == "PENDING_PAYMENT"
    assert not data["created_at"].startswith("2000")
    stored = await server.db.users.find_one({"_id": response.json()["user"]["id"]})
    assert stored["password_hash"].startswith("$2")


@pytest.mark.parametrize("track", ["XX", "dp", "", " DP"])
async def test_unknown_tracks_are_refused(client, track):
    assert_field_error(await client.post("/api/auth/registration/", json=registration_body(track=track)), "track")


async def test_every_missing_field_is_reported_at_once(client):
    response = await client.post("/api/auth/registration/", json={})
    body = assert_field_error(response, "email")
    for field in ("name", "password1", "password2"):
        assert body[field] == ["This field is required."], body
    assert body["email"] == ["This field is required."]
    assert body["details"]["email"] == ["This field is required."]


async def test_blank_name_is_refused(client):
    assert_field_error(await client.post("/api/auth/registration/", json=registration_body(name="   ")), "name")


@pytest.mark.parametrize("field", ["email", "name", "password1", "password2", "role", "track"])
async def test_operator_injection_in_registration_is_a_field_error(client, server, field):
    before = await server.db.users.count_documents({})
    for value in OPERATOR_VALUES:
        response = await client.post("/api/auth/registration/", json=registration_body(**{field: value}))
        assert_field_error(response, field)
    assert await server.db.users.count_documents({}) == before


# -- login ---------------------------------------------------------------------------------------

async def test_login_returns_tokens_user_and_redirect(client):
    data = await register(client, role="trainer", track="FSD")
    response = await login(client, data["user"]["email"], role="trainer")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access", "refresh", "user", "redirect_url"}
    assert body["redirect_url"] == "/trainer/dashboard"
    assert body["user"] == data["user"]
    assert (await profile(client, body)).status_code == 200


async def test_wrong_password_and_unknown_email_get_the_same_401(client):
    data = await register(client)
    wrong = await login(client, data["user"]["email"], "Not-The-Password-1")
    unknown = await login(client, unique_email("nobody"))
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json() == INVALID_CREDENTIALS
    assert wrong.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")


async def test_unknown_email_costs_a_password_hash_like_a_known_one(start_server):
    """Compared against a dummy hash, so response time does not reveal whether
    an email is registered. With bcrypt cost 10 (~50 ms) a login that skipped
    hashing would take a few milliseconds. Measured in pairs, a known and an
    unknown email one after the other, and judged by the median of the pairs'
    ratios: the fast suite's other processes slow the hashing threads (nice
    10) by several times at random, so a single time, or the fastest of a
    few, says more about the load than about the login."""
    server = await start_server(bcrypt_rounds="10")
    import httpx
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        known, unknown = (await register(client))["user"]["email"], unique_email("ghost")

        async def seconds(email: str) -> float:
            started = time.perf_counter()
            response = await login(client, email, "Not-The-Password-1")
            assert response.status_code == 401
            return time.perf_counter() - started

        ratios = [await seconds(unknown) / await seconds(known) for _ in range(7)]
    assert statistics.median(ratios) > 0.5, ratios


async def test_role_mismatch_is_403_with_the_contract_body(client):
    data = await register(client)
    response = await login(client, data["user"]["email"], role="trainer")
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "Unauthorized role access"
    assert body["detail"] == "You are registered as 'student' but tried to login as 'trainer'"
    assert body["actual_role"] == "student"
    assert "access" not in body and "refresh" not in body


async def test_role_mismatch_is_only_told_after_the_right_password(client):
    data = await register(client)
    response = await login(client, data["user"]["email"], "Not-The-Password-1", role="trainer")
    assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS


async def test_admin_cannot_log_in_as_student_but_superadmin_may_use_any_role(server, client):
    admin = await make_admin(server, client)
    response = await login(client, admin["user"]["email"], role="student")
    assert response.status_code == 403 and response.json()["actual_role"] == "admin"
    assert (await login(client, admin["user"]["email"], role="admin")).json()["redirect_url"] == "/admin/dashboard"

    superadmin = await make_admin(server, client, role="superadmin")
    for role in ("student", "trainer", "admin", "superadmin"):
        response = await login(client, superadmin["user"]["email"], role=role)
        assert response.status_code == 200, response.text
        assert response.json()["redirect_url"] == f"/{role}/dashboard"
        assert response.json()["user"]["role"] == "superadmin"


@pytest.mark.parametrize("missing", ["email", "password", "role"])
async def test_login_with_a_missing_field_is_400(client, missing):
    body = {"email": "a@example.com", "password": PASSWORD, "role": "student"}
    del body[missing]
    response = await client.post("/api/users/login/", json=body)
    assert_field_error(response, missing)


async def test_login_with_an_unknown_role_is_400(client):
    assert_field_error(await login(client, "a@example.com", role="owner"), "role")


@pytest.mark.parametrize("field", ["email", "password", "role"])
async def test_operator_injection_in_login_never_logs_anyone_in(client, field):
    await register(client)
    for value in OPERATOR_VALUES:
        body = {"email": "a@example.com", "password": PASSWORD, "role": "student", field: value}
        response = await client.post("/api/users/login/", json=body)
        assert_field_error(response, field)


async def test_account_without_a_password_cannot_log_in(server, client):
    data = await register(client)
    await server.db.users.update_one({"_id": data["user"]["id"]}, {"$set": {"password_hash": None}})
    response = await login(client, data["user"]["email"])
    assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS


async def test_login_records_last_login(server, client):
    data = await register(client)
    assert (await login(client, data["user"]["email"])).status_code == 200
    stored = await server.db.users.find_one({"_id": data["user"]["id"]})
    assert abs(stored["last_login_at"] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)


# -- check-email ---------------------------------------------------------------------------------

async def test_check_email(client):
    data = await register(client)
    email = data["user"]["email"]
    for variant in (email, email.upper(), f"  {email} "):
        response = await client.post("/api/users/check-email/", json={"email": variant})
        assert response.status_code == 200 and response.json() == {"exists": True}
    response = await client.post("/api/users/check-email/", json={"email": unique_email("free")})
    assert response.json() == {"exists": False}
    assert_field_error(await client.post("/api/users/check-email/", json={}), "email")
    for value in OPERATOR_VALUES:
        assert_field_error(await client.post("/api/users/check-email/", json={"email": value}), "email")


# -- profile -------------------------------------------------------------------------------------

async def test_profile_has_iso_utc_times(client):
    data = await register(client, track="FSD")
    response = await profile(client, data)
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("id", "email", "name", "role", "track")} == data["user"]
    for key in ("created_at", "updated_at"):
        assert ISO_Z.match(body[key]), body
        moment = dt.datetime.fromisoformat(body[key].replace("Z", "+00:00"))
        assert abs(moment - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)


async def test_profile_needs_a_token(client):
    body = assert_envelope(await client.get("/api/users/profile/"), 401)
    assert "credentials" in body["message"]
    assert_envelope(await client.get("/api/users/profile/", headers={"Authorization": "Bearer nonsense"}), 401)
    assert_envelope(await client.get("/api/users/profile/", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)


async def test_profile_patch_changes_name_and_track_only(client, server):
    data = await register(client, track="DP")
    before = (await profile(client, data)).json()
    await asyncio.sleep(1.1)  # updated_at has second resolution
    response = await client.patch("/api/users/profile/", headers=auth(data),
                                  json={"name": "  Grace Hopper ", "track": "FSD", "role": "admin",
                                        "email": "other@example.com", "id": 999})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Grace Hopper" and body["track"] == "FSD"
    assert body["role"] == "student" and body["email"] == data["user"]["email"] and body["id"] == data["user"]["id"]
    assert body["created_at"] == before["created_at"] and body["updated_at"] > before["updated_at"]
    assert ISO_Z.match(body["updated_at"])
    # And it is stored: a fresh GET agrees.
    assert (await profile(client, data)).json() == body


@pytest.mark.parametrize("changes, field", [({"name": ""}, "name"), ({"name": "   "}, "name"),
                                            ({"track": "XX"}, "track"), ({"name": "x" * 151}, "name"),
                                            ({"name": {"$ne": ""}}, "name"), ({"track": {"$ne": ""}}, "track"),
                                            ({"track": ["DP"]}, "track"), ({"name": 5}, "name")])
async def test_bad_profile_changes_are_field_errors_and_change_nothing(client, changes, field):
    data = await register(client, track="DP", name="Kept Name")
    response = await client.patch("/api/users/profile/", headers=auth(data), json=changes)
    assert_field_error(response, field)
    after = (await profile(client, data)).json()
    assert after["name"] == "Kept Name" and after["track"] == "DP"


async def test_profile_patch_needs_a_token(client):
    assert_envelope(await client.patch("/api/users/profile/", json={"name": "X"}), 401)


# -- update-role ---------------------------------------------------------------------------------

async def update_role(client, actor: dict, role, user_id=None):
    body = {"role": role}
    if user_id is not None:
        body["user_id"] = user_id
    return await client.post("/api/users/update-role/", headers=auth(actor), json=body)


async def stored_role(server, user_id: int) -> str:
    return (await server.db.users.find_one({"_id": user_id}))["role"]


@pytest.mark.parametrize("role", ["trainer", "admin", "superadmin", "student"])
async def test_students_and_trainers_cannot_change_any_role(server, client, role):
    for actor_role in ("student", "trainer"):
        actor = await register(client, role=actor_role)
        other = await register(client)
        for target in (None, other["user"]["id"]):
            response = await update_role(client, actor, role, target)
            assert_envelope(response, 403)
        assert await stored_role(server, actor["user"]["id"]) == actor_role
        assert await stored_role(server, other["user"]["id"]) == "student"


async def test_admin_changes_student_and_trainer_roles(server, client):
    admin = await make_admin(server, client)
    student = await register(client)
    response = await update_role(client, admin, "trainer", student["user"]["id"])
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Role updated successfully",
                               "user": {"id": student["user"]["id"], "role": "trainer"}}
    assert await stored_role(server, student["user"]["id"]) == "trainer"
    assert (await update_role(client, admin, "student", student["user"]["id"])).status_code == 200
    assert await stored_role(server, student["user"]["id"]) == "student"


async def test_admin_cannot_grant_or_remove_admin_roles(server, client):
    admin = await make_admin(server, client)
    other_admin = await make_admin(server, client)
    student = await register(client)
    for role, target in [("admin", student), ("superadmin", student), ("student", other_admin),
                         ("superadmin", admin), ("trainer", admin)]:
        assert_envelope(await update_role(client, admin, role, target["user"]["id"]), 403)
    assert await stored_role(server, student["user"]["id"]) == "student"
    assert await stored_role(server, other_admin["user"]["id"]) == "admin"
    assert await stored_role(server, admin["user"]["id"]) == "admin"


async def test_superadmin_grants_and_removes_admin(server, client):
    superadmin = await make_admin(server, client, role="superadmin")
    student = await register(client)
    assert (await update_role(client, superadmin, "admin", student["user"]["id"])).status_code == 200
    assert await stored_role(server, student["user"]["id"]) == "admin"
    assert (await update_role(client, superadmin, "superadmin", student["user"]["id"])).status_code == 200
    assert (await update_role(client, superadmin, "trainer", student["user"]["id"])).status_code == 200
    assert await stored_role(server, student["user"]["id"]) == "trainer"


async def test_the_last_superadmin_cannot_demote_themselves(server, client):
    await server.db.users.delete_many({"role": "superadmin"})
    superadmin = await make_admin(server, client, role="superadmin")
    response = await update_role(client, superadmin, "student")
    assert_envelope(response, 409)
    assert await stored_role(server, superadmin["user"]["id"]) == "superadmin"


async def test_role_change_takes_effect_on_the_next_request_without_a_new_token(server, client):
    superadmin = await make_admin(server, client, role="superadmin")
    promoted = await register(client)
    victim = await register(client)
    # A student's token: refused.
    assert_envelope(await update_role(client, promoted, "trainer", victim["user"]["id"]), 403)
    assert (await update_role(client, superadmin, "admin", promoted["user"]["id"])).status_code == 200
    # The very same token now carries admin rights ...
    assert (await update_role(client, promoted, "trainer", victim["user"]["id"])).status_code == 200
    assert (await profile(client, promoted)).json()["role"] == "admin"
    # ... and loses them as soon as the role is removed.
    assert (await update_role(client, superadmin, "student", promoted["user"]["id"])).status_code == 200
    assert_envelope(await update_role(client, promoted, "student", victim["user"]["id"]), 403)


async def test_update_role_bad_input(server, client):
    admin = await make_admin(server, client)
    student = await register(client)
    assert_field_error(await update_role(client, admin, "owner", student["user"]["id"]), "role")
    for value in OPERATOR_VALUES:
        assert_field_error(await update_role(client, admin, value, student["user"]["id"]), "role")
    for value in [{"$ne": 0}, "2", 0, -1, 1.5, True, 2 ** 64, 10 ** 30]:
        assert_field_error(await update_role(client, admin, "trainer", value), "user_id")
    assert_envelope(await update_role(client, admin, "trainer", 10 ** 9), 404)
    assert await stored_role(server, student["user"]["id"]) == "student"
    assert_envelope(await client.post("/api/users/update-role/", json={"role": "trainer"}), 401)
