"""JWT access/refresh tokens over HTTP: rotation, reuse detection, logout,
and forged, expired or misused tokens."""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json

import httpx
import pytest

from tests.support.accounts import age_refresh_rotations, assert_envelope, assert_field_error, auth, claims_of, craft_token, login, OPERATOR_VALUES, profile, register
from tests.support.accounts import refresh


async def logout(client, tokens: dict, refresh_token: str) -> httpx.Response:
    return await client.post("/api/users/logout/", headers=auth(tokens), json={"refresh": refresh_token})


def assert_401(response, error: str | None = None) -> dict:
    body = assert_envelope(response, 401)
    assert response.headers.get("www-authenticate", "").startswith("Bearer")
    if error:
        assert body["error"] == error, body
    return body


def tamper(token: str, **changes) -> str:
    """Change claims but keep the original signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


# -- refresh -------------------------------------------------------------------------------------

async def test_refresh_rotates_and_the_used_token_is_dead(client):
    data = await register(client)
    first = await refresh(client, data["refresh"])
    assert first.status_code == 200, first.text
    pair = first.json()
    assert set(pair) == {"access", "refresh"}
    assert pair["refresh"] != data["refresh"] and pair["access"] != data["access"]
    assert claims_of(pair["refresh"])["sid"] == claims_of(data["refresh"])["sid"]  # same login
    assert (await profile(client, pair)).status_code == 200
    # The new refresh token works once more; the chain goes on.
    second = await refresh(client, pair["refresh"])
    assert second.status_code == 200
    assert (await profile(client, second.json())).status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_login(server, client):
    data = await register(client)
    rotated = (await refresh(client, data["refresh"])).json()
    await age_refresh_rotations(server.db, data["user"]["id"])  # past JWT_REFRESH_REUSE_SECONDS
    # A thief replays the old token: 401, and the login is gone for everyone.
    assert_401(await refresh(client, data["refresh"]), "Token reused")
    assert_401(await profile(client, rotated), "Token revoked")
    assert_401(await profile(client, data), "Token revoked")
    assert_401(await refresh(client, rotated["refresh"]), "Token revoked")
    # Other logins of the same user are untouched.
    other = (await login(client, data["user"]["email"])).json()
    assert (await profile(client, other)).status_code == 200


async def test_concurrent_use_of_one_refresh_token_issues_at_most_one_pair(start_server):
    # The reuse window off: the compare-and-set alone decides (with the window
    # on, see tests/test_clients.py).
    server = await start_server(jwt_refresh_reuse_seconds="0")
    async with httpx.AsyncClient(base_url=server.url) as client:
        data = await register(client)
        responses = await asyncio.gather(*(refresh(client, data["refresh"]) for _ in range(5)))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) <= 1
    assert all(r.status_code in (200, 401) for r in responses)


async def test_access_token_is_not_a_refresh_token_and_vice_versa(client):
    data = await register(client)
    assert_401(await refresh(client, data["access"]), "Invalid token")
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {data['refresh']}"}),
               "Invalid token")
    # Neither misuse harmed the login.
    assert (await refresh(client, data["refresh"])).status_code == 200


async def test_refresh_bad_input(client):
    assert_field_error(await client.post("/api/auth/token/refresh/", json={}), "refresh")
    for value in OPERATOR_VALUES:
        assert_field_error(await refresh(client, value), "refresh")
    for junk in ("", "not-a-jwt", "a.b.c", "x" * 4000):
        assert_401(await refresh(client, junk))


async def test_refresh_for_a_deleted_user_is_refused(server, client):
    data = await register(client)
    await server.db.users.delete_one({"_id": data["user"]["id"]})
    assert_401(await refresh(client, data["refresh"]))


async def test_disabled_account_cannot_log_in_with_its_password(server, client):
    """Refused at the login, not with tokens that are refused afterwards. A
    wrong password still gets the ordinary 401 (no hint that it is disabled)."""
    data = await register(client)
    await server.db.users.update_one({"_id": data["user"]["id"]}, {"$set": {"disabled": True}})
    response = await login(client, data["user"]["email"], data["password"])
    body = assert_envelope(response, 403)
    assert "access" not in body and "disabled" in body["message"]
    assert (await login(client, data["user"]["email"], "Wrong-Password-1")).status_code == 401


# -- forged and expired tokens -------------------------------------------------------------------

async def test_alg_none_token_is_refused(client):
    data = await register(client)
    claims = claims_of(data["access"])
    for alg in ("none", "None", "NONE"):
        header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "typ": "JWT"}).encode()).rstrip(b"=").decode()
        payload = data["access"].split(".")[1]
        for token in (f"{header}.{payload}.", f"{header}.{payload}"):
            assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {token}"}))
    token = craft_token({"sub": claims["sub"], "sid": claims["sid"]}, algorithm="none")
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {token}"}))
    refresh_claims = claims_of(data["refresh"])
    forged = craft_token({**refresh_claims, "iat": ..., "exp": ...}, algorithm="none")
    assert_401(await refresh(client, forged))


async def test_wrong_signature_and_tampered_claims_are_refused(client):
    victim = await register(client)
    attacker = await register(client)
    claims = claims_of(victim["access"])
    forged = craft_token({"sub": claims["sub"], "sid": claims["sid"]}, secret="not-the-server-secret-" + "y" * 32)
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {forged}"}),
               "Invalid token")
    # Someone else's identity pasted into a valid token's payload.
    pasted = tamper(attacker["access"], sub=claims["sub"], sid=claims["sid"])
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {pasted}"}))
    assert_401(await refresh(client, tamper(attacker["refresh"], sub=claims["sub"])))
    # HS512 with the right key is still not an algorithm we accept.
    other_alg = craft_token({"sub": claims["sub"], "sid": claims["sid"]}, algorithm="HS512")
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {other_alg}"}))


async def test_a_correctly_signed_token_for_another_users_login_is_refused(client):
    """sub and sid must belong together: a token naming user A with the
    session of user B does not authenticate as anyone."""
    a = await register(client)
    b = await register(client)
    mixed = craft_token({"sub": str(a["user"]["id"]), "sid": claims_of(b["access"])["sid"]})
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {mixed}"}))
    made_up = craft_token({"sub": str(a["user"]["id"])})  # a session that never existed
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {made_up}"}))


async def test_expired_tokens_are_refused(client):
    data = await register(client)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    access = claims_of(data["access"])
    expired = craft_token({"sub": access["sub"], "sid": access["sid"], "iat": past,
                           "exp": past + dt.timedelta(minutes=5)})
    body = assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {expired}"}),
                      "Token expired")
    assert "expired" in body["message"]
    fresh = craft_token({"sub": access["sub"], "sid": access["sid"]})  # control: same claims, not expired
    assert (await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
    refresh_claims = claims_of(data["refresh"])
    expired_refresh = craft_token({**refresh_claims, "iat": past, "exp": past + dt.timedelta(minutes=5)})
    assert_401(await refresh(client, expired_refresh), "Token expired")


@pytest.mark.parametrize("missing", ["exp", "sub", "sid", "type", "jti"])
async def test_tokens_missing_a_required_claim_are_refused(client, missing):
    data = await register(client)
    claims = claims_of(data["access"])
    token = craft_token({"sub": claims["sub"], "sid": claims["sid"], missing: ...})
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {token}"}))


@pytest.mark.parametrize("sub", ["abc", "-1", "1.5", "", "99999999999999999999999999"])
async def test_tokens_with_a_strange_subject_are_refused_not_500(client, sub):
    token = craft_token({"sub": sub})
    assert_401(await client.get("/api/users/profile/", headers={"Authorization": f"Bearer {token}"}))
    assert_401(await refresh(client, craft_token({"sub": sub, "type": "refresh"})))


async def test_token_of_a_deleted_user_stops_working_on_the_next_request(server, client):
    data = await register(client)
    assert (await profile(client, data)).status_code == 200
    await server.db.users.delete_one({"_id": data["user"]["id"]})
    await server.services.authstate.user_changed(data["user"]["id"])  # as every writer announces its change
    assert_401(await profile(client, data))


async def test_token_of_a_disabled_user_stops_working(server, client):
    data = await register(client)
    assert (await profile(client, data)).status_code == 200  # the user is in the auth-state cache now
    await server.services.accounts.set_disabled(data["user"]["id"], True)
    assert_401(await profile(client, data))
    assert_401(await refresh(client, data["refresh"]))


# -- logout --------------------------------------------------------------------------------------

async def test_logout_revokes_the_login(client):
    data = await register(client)
    other = (await login(client, data["user"]["email"])).json()  # a second device
    response = await logout(client, data, data["refresh"])
    assert response.status_code == 200 and response.json() == {"message": "Logout successful"}
    assert_401(await profile(client, data), "Token revoked")
    assert_401(await refresh(client, data["refresh"]))
    # The other device stays logged in.
    assert (await profile(client, other)).status_code == 200
    assert (await refresh(client, other["refresh"])).status_code == 200


async def test_logout_with_someone_elses_refresh_token_is_403_and_revokes_nothing(client):
    me = await register(client)
    victim = await register(client)
    assert_envelope(await logout(client, me, victim["refresh"]), 403)
    assert (await profile(client, victim)).status_code == 200
    assert (await refresh(client, victim["refresh"])).status_code == 200


async def test_logout_needs_a_valid_access_token_and_a_refresh_token(client):
    data = await register(client)
    assert_401(await client.post("/api/users/logout/", json={"refresh": data["refresh"]}))
    assert_field_error(await client.post("/api/users/logout/", headers=auth(data), json={}), "refresh")
    for value in OPERATOR_VALUES:
        assert_field_error(await logout(client, data, value), "refresh")
    assert_401(await logout(client, data, data["access"]))  # an access token is not a refresh token
    assert_401(await logout(client, data, "garbage"))
    forged = craft_token({**claims_of(data["refresh"]), "iat": ..., "exp": ...}, secret="wrong-secret-" + "z" * 32)
    assert_401(await logout(client, data, forged))
    # None of that logged us out.
    assert (await profile(client, data)).status_code == 200


async def test_revocations_are_stored_in_mongodb_with_an_expiry(server, client):
    data = await register(client)
    assert (await logout(client, data, data["refresh"])).status_code == 200
    session = await server.db.sessions.find_one({"_id": claims_of(data["refresh"])["sid"]})
    assert session["revoked"] and session["revoked_reason"] == "logout"
    assert isinstance(session["revoked_at"], dt.datetime)
    assert isinstance(session["expires_at"], dt.datetime)
    assert session["expires_at"] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=6)
    indexes = await server.db.sessions.index_information()
    assert any(index.get("expireAfterSeconds") == 0 and index["key"] == [("expires_at", 1)]
               for index in indexes.values())
