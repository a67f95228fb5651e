"""Drop-in for the original platform's own clients (issue 12): each test sends
exactly what its Next.js/axios client sends and reads what it reads."""
from __future__ import annotations

import asyncio

import httpx

from tests.support.accounts import age_refresh_rotations, auth, login, register, unique_email
from tests.support.app import port_range
from tests.support.payments import create, deliver, MINE

ALLOWED = "http://localhost:3000"


# -- 1. credentialed CORS ---------------------------------------------------------------------
async def test_cors_allows_credentials_for_listed_origins(client):
    preflight = await client.options("/api/users/profile/", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    data = await register(client)
    ok = await client.get("/api/users/profile/", headers={**auth(data), "Origin": ALLOWED})
    assert ok.headers["access-control-allow-credentials"] == "true"
    failed = await login(client, "nobody@example.com", "Wrong-Password-1", Origin=ALLOWED)
    assert failed.status_code == 401 and failed.headers["access-control-allow-credentials"] == "true"
    other = await client.get("/api/users/profile/", headers={**auth(data), "Origin": "http://evil.example"})
    assert "access-control-allow-credentials" not in other.headers


async def test_cors_wildcard_never_allows_credentials(start_server):
    server = await start_server(cors_origins="*,https://app.example.org")
    async with httpx.AsyncClient(base_url=server.url) as http:
        headers = {"Access-Control-Request-Method": "POST"}
        anyone = await http.options("/api/users/login/", headers={**headers, "Origin": "http://anyone.example"})
        assert anyone.headers["access-control-allow-origin"] == "http://anyone.example"
        assert "access-control-allow-credentials" not in anyone.headers
        response = await http.post("/api/users/check-email/", json={"email": "a@example.com"},
                                   headers={"Origin": "http://anyone.example"})
        assert "access-control-allow-credentials" not in response.headers
        listed = await http.options("/api/users/login/", headers={**headers, "Origin": "https://app.example.org"})
        assert listed.headers["access-control-allow-credentials"] == "true"


# -- 2. the paths its clients call beside the contract's --------------------------------------
async def test_users_refresh_alias_rotates_like_token_refresh(client):
    data = await register(client)
    response = await client.post("/api/users/refresh/", json={"refresh": data["refresh"]})
    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"access", "refresh"}
    assert (await client.get("/api/users/profile/", headers=auth(pair))).status_code == 200
    # The same rotation: the new refresh token works on the contract's path, and back again.
    again = await client.post("/api/auth/token/refresh", json={"refresh": pair["refresh"]})
    assert again.status_code == 200
    assert (await client.post("/api/users/refresh", json={"refresh": again.json()["refresh"]})).status_code == 200
    bad = await client.post("/api/users/refresh/", json={"refresh": "not-a-token"})
    assert bad.status_code == 401 and bad.json()["error"] == "Invalid token"
    missing = await client.post("/api/users/refresh/", json={})
    assert missing.status_code == 400 and missing.json()["refresh"] == ["This field is required."]


async def test_auth_login_alias_without_role_uses_the_stored_role(client):
    trainer = await register(client, role="trainer")
    email = trainer["user"]["email"]
    response = await client.post("/api/auth/login/", json={"email": email, "password": trainer["password"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access", "refresh", "user", "redirect_url"}
    assert body["user"] == trainer["user"] and body["redirect_url"] == "/trainer/dashboard"
    assert (await client.get("/api/users/profile/", headers=auth(body))).json()["role"] == "trainer"


async def test_auth_login_alias_answers_like_users_login(client):
    student = await register(client)
    email = student["user"]["email"]
    for body in ({"email": email, "password": student["password"], "role": "student"},
                 {"email": email, "password": student["password"], "role": "trainer"},
                 {"email": email, "password": "Wrong-Password-9", "role": "student"},
                 {"email": email, "password": "Wrong-Password-9"},
                 {"email": email, "password": student["password"], "role": "pirate"},
                 {"email": email}):
        alias = await client.post("/api/auth/login/", json=body)
        if "role" in body:
            contract = await client.post("/api/users/login/", json=body)
            assert alias.status_code == contract.status_code, body
            strip = {"access", "refresh"}
            assert {k: v for k, v in alias.json().items() if k not in strip} == \
                {k: v for k, v in contract.json().items() if k not in strip}, body
        else:
            assert alias.status_code == (401 if "password" in body else 400), body
    role_mismatch = await client.post("/api/auth/login/", json={"email": email, "password": student["password"],
                                                                "role": "trainer"})
    assert role_mismatch.status_code == 403 and role_mismatch.json()["actual_role"] == "student"


async def test_aliases_are_deprecated_in_the_openapi_document(client):
    document = (await client.get("/api/openapi.json")).json()
    paths = document["paths"]
    assert paths["/api/auth/login/"]["post"]["deprecated"] is True
    assert paths["/api/users/refresh/"]["post"]["deprecated"] is True
    ref = paths["/api/auth/login/"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert document["components"]["schemas"][ref.rsplit("/", 1)[1]]["required"] == ["email", "password"]
    for contract_path in ("/api/users/login/", "/api/auth/token/refresh/"):
        assert "deprecated" not in paths[contract_path]["post"]


# -- 3. concurrent refresh must not log people out -------------------------------------------
async def refresh(client: httpx.AsyncClient, token: str, path: str = "/api/auth/token/refresh/") -> httpx.Response:
    return await client.post(path, json={"refresh": token})


async def assert_logged_in(client: httpx.AsyncClient, pair: dict) -> None:
    assert (await client.get("/api/users/profile/", headers=auth(pair))).status_code == 200


async def test_same_refresh_token_twice_within_the_window_gets_the_same_pair(client):
    data = await register(client)
    first = await refresh(client, data["refresh"])
    second = await refresh(client, data["refresh"], "/api/users/refresh/")
    assert first.status_code == second.status_code == 200, second.text
    assert first.json() == second.json()  # idempotent: the very same pair
    await assert_logged_in(client, first.json())
    # The login goes on: the successor rotates as usual.
    third = await refresh(client, first.json()["refresh"])
    assert third.status_code == 200
    await assert_logged_in(client, third.json())


async def test_reuse_after_the_window_revokes_the_login(server, client):
    data = await register(client)
    pair = (await refresh(client, data["refresh"])).json()
    await age_refresh_rotations(server.db, data["user"]["id"], seconds=11)  # the default window is 10 s
    late = await refresh(client, data["refresh"])
    assert late.status_code == 401 and late.json()["error"] == "Token reused"
    assert (await client.get("/api/users/profile/", headers=auth(pair))).status_code == 401
    assert (await refresh(client, pair["refresh"])).status_code == 401


async def test_the_window_in_real_time(start_server):
    server = await start_server(jwt_refresh_reuse_seconds="2")
    async with httpx.AsyncClient(base_url=server.url) as client:
        data = await register(client)
        pair = (await refresh(client, data["refresh"])).json()
        assert (await refresh(client, data["refresh"])).json() == pair
        await asyncio.sleep(3.2)  # the window counts from the whole second the pair was issued in
        assert (await refresh(client, data["refresh"])).status_code == 401
        assert (await client.get("/api/users/profile/", headers=auth(pair))).status_code == 401


async def test_an_older_token_of_the_chain_gets_the_current_pair(client):
    data = await register(client)
    second = (await refresh(client, data["refresh"])).json()
    third = (await refresh(client, second["refresh"])).json()
    # Rotated two generations ago but within the window: another tab's late refresh.
    late = await refresh(client, data["refresh"])
    assert late.status_code == 200 and late.json() == third
    await assert_logged_in(client, third)


async def test_window_off_revokes_at_once(start_server):
    server = await start_server(jwt_refresh_reuse_seconds="0")
    async with httpx.AsyncClient(base_url=server.url) as client:
        data = await register(client)
        pair = (await refresh(client, data["refresh"])).json()
        assert (await refresh(client, data["refresh"])).status_code == 401
        assert (await client.get("/api/users/profile/", headers=auth(pair))).status_code == 401


async def test_a_logged_out_login_is_not_revived_within_the_window(client):
    data = await register(client)
    pair = (await refresh(client, data["refresh"])).json()
    response = await client.post("/api/users/logout/", headers=auth(pair), json={"refresh": pair["refresh"]})
    assert response.status_code == 200
    again = await refresh(client, data["refresh"])
    assert again.status_code == 401 and again.json()["error"] == "Token revoked"


async def test_two_processes_refresh_one_token_at_once(start_server):
    """The axios interceptor: two requests fail together and each refreshes
    with the same token, here through two server processes sharing MongoDB.
    Both get 200 and the same working pair, round after round."""
    one = await start_server()
    two = await start_server(mongodb_db=one.services.settings.mongodb_db)
    async with httpx.AsyncClient(base_url=one.url) as a, httpx.AsyncClient(base_url=two.url) as b:
        data = await register(a)
        token = data["refresh"]
        for _ in range(5):
            first, second = await asyncio.gather(refresh(a, token), refresh(b, token, "/api/users/refresh/"))
            assert first.status_code == second.status_code == 200, (first.text, second.text)
            assert first.json() == second.json()
            await assert_logged_in(a, first.json())
            await assert_logged_in(b, second.json())
            token = first.json()["refresh"]
        assert (await a.get("/api/users/profile/", headers=auth(first.json()))).json()["email"] == \
            data["user"]["email"]


# -- 4. payments as its payment page sends them ------------------------------------------------
async def test_payment_page_body_enrols_the_track_in_its_metadata(pay, pay_server, fake_stripe):  # noqa: F811
    student = await register(pay, track="FSD")
    body = {"amount": 999, "currency": "usd", "email": student["user"]["email"], "metadata": {"track": "DP"}}
    response = await create(pay, student, body)
    assert response.status_code == 200, response.text
    assert response.json()["amount"] == 99900 and response.json()["clientSecret"]
    intent_id = response.json()["paymentIntentId"]
    assert fake_stripe.creates[-1].params["metadata"] == {"user_id": str(student["user"]["id"]), "track": "DP"}
    listed = (await pay.get(MINE, headers=auth(student))).json()["payments"]
    assert [(p["paymentIntentId"], p["track"]) for p in listed] == [(intent_id, "DP")]
    assert (await deliver(pay, fake_stripe.intent_event("payment_intent.succeeded", intent_id))).status_code == 200
    profile = (await pay.get("/api/users/profile/", headers=auth(student))).json()
    assert (profile["track"], profile["enrollment_status"], profile["payment_verified"]) == ("DP", "ENROLLED", True)


async def test_other_metadata_keys_are_ignored_and_never_stored(pay, pay_server, fake_stripe):  # noqa: F811
    student = await register(pay)
    other = await register(pay)
    metadata = {"track": "FSD", "user_id": str(other["user"]["id"]), "$where": "1", "coupon": "FREE",
                "nested": {"$gt": ""}, "payment_verified": True}
    response = await create(pay, student, {"amount": 999, "currency": "usd", "email": other["user"]["email"],
                                           "metadata": metadata})
    assert response.status_code == 200, response.text
    assert fake_stripe.creates[-1].params["metadata"] == {"user_id": str(student["user"]["id"]), "track": "FSD"}
    stored = await pay_server.db.payments.find_one({"payment_intent_id": response.json()["paymentIntentId"]})
    assert stored["user_id"] == student["user"]["id"] and stored["track"] == "FSD"
    assert not {"metadata", "coupon", "$where", "nested", "email"} & set(stored)
    assert (await pay.get(MINE, headers=auth(other))).json()["payments"] == []


async def test_metadata_naming_no_known_track_is_ignored(pay, pay_server, fake_stripe):  # noqa: F811
    student = await register(pay)
    for metadata in ({"track": "NOPE"}, {}, {"plan": "gold"}):
        response = await create(pay, student, {"amount": 999, "currency": "usd", "metadata": metadata})
        assert response.status_code == 200, response.text
        assert "track" not in fake_stripe.creates[-1].params["metadata"]
    assert {p["track"] for p in (await pay.get(MINE, headers=auth(student))).json()["payments"]} == {None}


async def test_metadata_track_is_checked(pay, pay_server, fake_stripe):  # noqa: F811
    student = await register(pay)
    cases = [({"amount": 10, "currency": "usd", "metadata": {"track": "DP"}}, "amount"),  # under DP's 499.00
             ({"amount": 999, "currency": "eur", "metadata": {"track": "DP"}}, "currency"),
             ({"amount": 999, "metadata": {"track": {"$ne": ""}}}, "metadata"),
             ({"amount": 999, "metadata": "DP"}, "metadata"),
             ({"track": "DP", "metadata": {"track": "FSD"}}, "metadata")]
    for body, field in cases:
        response = await create(pay, student, body)
        assert response.status_code == 400 and response.json()[field], (body, response.text)
    assert fake_stripe.creates == []
    assert (await create(pay, student, {"track": "DP", "metadata": {"track": "DP"}})).status_code == 200


# -- 5. what its sign-up sends and reads -------------------------------------------------------
def signup_body(email: str, track: str | None = "DP", role: str = "student", **extra) -> dict:
    """The original sign-up page's body."""
    return {"name": "Grace Hopper", "email": email, "password1": "Correct-Horse-42",
            "password2": "Correct-Horse-42", "role": role, "track": track, "privacy_accepted": True,
            "privacy_version": "1.0", "marketing_consent": False, "payment_verified": True, **extra}


async def test_signup_records_consent_and_ignores_payment_verified(server, client):
    email = unique_email("consent")
    response = await client.post("/api/auth/registration/", json=signup_body(email))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["trainer_assigned"], body["trainer_name"]) == (False, None)  # DP has no trainer yet
    stored = await server.db.users.find_one({"_id": body["user"]["id"]})
    consent = stored["consent"]
    assert consent["privacy_accepted"] is True and consent["privacy_version"] == "1.0"
    assert consent["marketing_consent"] is False
    for stamp in ("privacy_accepted_at", "marketing_consent_at", "recorded_at"):
        assert abs((consent[stamp] - stored["created_at"]).total_seconds()) < 60, stamp  # real datetimes
    profile = (await client.get("/api/users/profile/", headers=auth(body))).json()
    assert profile["payment_verified"] is False and profile["enrollment_status"] == "PENDING_PAYMENT"
    assert profile["assigned_trainer"] is None
    # The contract's body records no consent at all.
    plain = await register(client)
    assert "consent" not in await server.db.users.find_one({"_id": plain["user"]["id"]})


async def test_signup_consent_fields_are_typed(client):
    cases = [({"privacy_accepted": "yes"}, "privacy_accepted"), ({"marketing_consent": 1}, "marketing_consent"),
             ({"privacy_version": {"$ne": ""}}, "privacy_version"), ({"privacy_version": ""}, "privacy_version"),
             ({"privacy_version": "v" * 33}, "privacy_version")]
    for extra, field in cases:
        response = await client.post("/api/auth/registration/", json=signup_body(unique_email("typed"), **extra))
        assert response.status_code == 400 and response.json()[field], (extra, response.text)


async def signup(client: httpx.AsyncClient, track: str | None, role: str = "student") -> dict:
    response = await client.post("/api/auth/registration/", json=signup_body(unique_email(role), track, role))
    assert response.status_code == 201, response.text
    return response.json()


async def students_of(client: httpx.AsyncClient, trainer: dict) -> list[int]:
    response = await client.get("/api/users/my-students/", headers=auth(trainer))
    assert response.status_code == 200, response.text
    return [student["id"] for student in response.json()["students"]]


async def test_students_get_the_least_loaded_trainer_of_their_track(server, client):
    first, second = await signup(client, "DP", "trainer"), await signup(client, "DP", "trainer")
    fsd = await signup(client, "FSD", "trainer")
    assert fsd["trainer_assigned"] is False and fsd["trainer_name"] is None  # trainers get none
    await client.patch("/api/users/profile/", headers=auth(second), json={"name": "Second Trainer"})
    a = await signup(client, "DP")  # 0 and 0: the lower id
    b = await signup(client, "DP")  # 1 and 0: the second
    c = await signup(client, "DP")  # 1 and 1: the lower id again
    d = await signup(client, "FSD")
    none = await signup(client, None)
    assert [(s["trainer_assigned"], s["trainer_name"]) for s in (a, b, c, d, none)] == [
        (True, "Grace Hopper"), (True, "Second Trainer"), (True, "Grace Hopper"), (True, "Grace Hopper"),
        (False, None)]
    assert await students_of(client, first) == [a["user"]["id"], c["user"]["id"]]
    assert await students_of(client, second) == [b["user"]["id"]]
    assert await students_of(client, fsd) == [d["user"]["id"]]
    listed = (await client.get("/api/users/my-students/", headers=auth(first))).json()["students"][0]
    assert listed == {"id": a["user"]["id"], "name": "Grace Hopper", "email": a["user"]["email"], "track": "DP",
                      "enrollment_status": "PENDING_PAYMENT"}
    profile = (await client.get("/api/users/profile/", headers=auth(b))).json()
    assert profile["assigned_trainer"] == {"id": second["user"]["id"], "name": "Second Trainer",
                                           "email": second["user"]["email"]}
    # A disabled trainer takes no new students.
    await server.db.users.update_one({"_id": first["user"]["id"]}, {"$set": {"disabled": True}})
    e = await signup(client, "DP")
    assert e["trainer_name"] == "Second Trainer"


async def test_only_trainers_list_students(client):
    student = await signup(client, "DP")
    response = await client.get("/api/users/my-students/", headers=auth(student))
    assert response.status_code == 403 and response.json()["error"]
    assert (await client.get("/api/users/my-students/")).status_code == 401


# -- 6. the workspace page's first answer -----------------------------------------------------
async def test_workspace_page_post_without_body_gets_a_url_to_open_at_once(start_server):
    """Its workspace page posts with no body (axios `post(url)`: no data, no
    Content-Type) and opens `res.data.url` at once: the 201 must already
    carry the url and port, in the default (proxied) exposure and in the
    direct one. The in-memory backend stands in for the engine here; the
    real-Docker tests prove the same answer on dockerd."""
    ports = port_range(28100)
    low, high = map(int, ports.split("-"))
    for exposure in ("network", "direct"):
        server = await start_server(workspace_backend="tests.support.fake_backend:FakeBackend", workspace_exposure=exposure,
                                    workspace_port_range=ports)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            user = await register(client)
            response = await client.post("/api/users/workspace/create/",
                                         headers={**auth(user), "Accept": "application/json, text/plain, */*"})
            assert response.status_code == 201, response.text
            data = response.json()
            assert data["url"] and data["port"], data
            if exposure == "network":
                assert data["url"].split("?ticket=")[0] == f"http://ws-{user['user']['id']}.localhost:{data['port']}/"
            else:
                assert data["url"] == f"http://localhost:{data['port']}" and low <= data["port"] <= high
