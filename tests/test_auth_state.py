"""The auth-state cache (services/authstate.py): warm requests need no
database round trip, this process's own changes take effect on the very next
request, and other processes' changes within 1 s (two real server processes
on one database)."""
from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.conftest import auth, register
from tests.test_server_process import PASSWORD, ServerProcess


async def profile(client: httpx.AsyncClient, tokens: dict) -> httpx.Response:
    return await client.get("/api/users/profile/", headers=auth(tokens))


async def test_a_warm_request_is_served_from_the_cache(server, client):
    data = await register(client)
    assert (await profile(client, data)).status_code == 200
    state = server.services.authstate
    hits, misses = state.hits, state.misses
    response = await profile(client, data)
    assert response.status_code == 200 and response.json()["email"] == data["user"]["email"]
    assert (state.hits - hits, state.misses - misses) == (2, 0)  # the session and the user
    metrics = (await client.get("/metrics")).text
    assert f'apranova_auth_cache_lookups_total{{result="hit"}} {float(state.hits)}' in metrics


async def test_own_changes_take_effect_on_the_next_request(server, client):
    data = await register(client)
    assert (await profile(client, data)).status_code == 200
    changed = await client.patch("/api/users/profile/", headers=auth(data), json={"name": "New Name"})
    assert changed.status_code == 200
    assert (await profile(client, data)).json()["name"] == "New Name"
    logout = await client.post("/api/users/logout/", headers=auth(data), json={"refresh": data["refresh"]})
    assert logout.status_code == 200
    refused = await profile(client, data)
    assert refused.status_code == 401 and refused.json()["error"] == "Token revoked"


async def test_session_user_contract(server, client):
    accounts = server.services.accounts
    data = await register(client)
    sid = _claims(data["access"])["sid"]
    user = await accounts.session_user(sid)
    assert user is not None and user["_id"] == data["user"]["id"] and "password_hash" not in user
    assert user["_session_id"] == sid
    assert await accounts.session_user("no-such-session") is None
    await accounts.set_disabled(data["user"]["id"], True)
    assert await accounts.session_user(sid) is None
    await accounts.set_disabled(data["user"]["id"], False)
    assert (await accounts.session_user(sid))["_id"] == data["user"]["id"]
    await server.services.tokens.revoke_session(sid, "test")
    assert await accounts.session_user(sid) is None
    # Expired, also when nx-27017 stored the date as text, and when it cannot be read.
    other = await register(client)
    other_sid = _claims(other["access"])["sid"]
    for expires_at in ("2000-01-01T00:00:00", "not a date"):
        await server.db.sessions.update_one({"_id": other_sid}, {"$set": {"expires_at": expires_at}})
        await server.services.authstate.session_changed(other_sid)
        assert await accounts.session_user(other_sid) is None


async def test_revoking_every_login_of_a_user_also_rereads_the_user(server, client):
    """An account change that revokes every login (disable, delete, password
    reset) is seen even when its writer announces only the revocation."""
    data = await register(client)
    assert (await profile(client, data)).status_code == 200
    state = server.services.authstate
    assert data["user"]["id"] in state.users.entries
    await server.services.tokens.revoke_all(data["user"]["id"], "test")
    assert data["user"]["id"] not in state.users.entries
    assert (await profile(client, data)).status_code == 401


async def test_a_change_log_entry_written_late_is_still_applied(server, client):
    """Two writers take sequence numbers 1 and 2; 2 lands first. The poller
    must not move past 1 before it lands."""
    state = server.services.authstate
    data = await register(client)
    assert (await profile(client, data)).status_code == 200
    floor = state.floor
    await server.db.auth_changes.insert_one({"_id": floor + 2, "session_id": "unrelated"})
    await state.poll()
    assert state.floor == floor  # held back by the missing floor + 1
    await server.db.users.update_one({"_id": data["user"]["id"]}, {"$set": {"name": "Late"}})
    await server.db.auth_changes.insert_one({"_id": floor + 1, "user_id": data["user"]["id"]})
    await state.poll()
    assert state.floor == floor + 2
    assert (await profile(client, data)).json()["name"] == "Late"


def _claims(token: str) -> dict:
    import jwt
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture
def two_servers(mongo, tmp_path):
    env = {"MONGODB_URI": mongo.uri, "MONGODB_DB": f"two_{uuid.uuid4().hex[:8]}", "JWT_SECRET": "x" * 40}
    servers = [ServerProcess(tmp_path / f"data{n}", **env) for n in (1, 2)]
    for server in servers:
        server.wait_ready()
    yield servers
    for server in servers:
        server.stop()


def refused_within(url: str, token: dict, seconds: float = 1.0) -> float:
    """Poll until the other process refuses; every request that starts more
    than `seconds` after the change must be refused. Returns the delay."""
    changed = time.monotonic()
    while True:
        started = time.monotonic()
        response = httpx.get(url + "/api/users/profile/", headers=auth(token), timeout=10)
        if response.status_code == 401:
            return started - changed
        assert response.status_code == 200, response.text
        assert started - changed < seconds, "another process still accepted the token after 1 s"
        time.sleep(0.02)


def test_logout_in_one_process_is_refused_by_the_other_within_1s(two_servers):
    first, second = two_servers
    body = {"name": "Ada", "email": "ada@example.com", "password1": PASSWORD, "password2": PASSWORD,
            "role": "student"}
    tokens = httpx.post(first.url + "/api/auth/registration/", json=body, timeout=10).json()
    for server in two_servers:  # both caches warm
        for _ in range(3):
            assert httpx.get(server.url + "/api/users/profile/", headers=auth(tokens), timeout=10).status_code == 200
    logout = httpx.post(first.url + "/api/users/logout/", headers=auth(tokens), json={"refresh": tokens["refresh"]},
                        timeout=10)
    assert logout.status_code == 200
    assert httpx.get(first.url + "/api/users/profile/", headers=auth(tokens), timeout=10).status_code == 401
    refused_within(second.url, tokens)
    for server in two_servers:
        assert httpx.get(server.url + "/api/users/profile/", headers=auth(tokens), timeout=10).status_code == 401


def test_a_profile_change_in_one_process_shows_in_the_other_within_1s(two_servers):
    first, second = two_servers
    body = {"name": "Bob", "email": "bob@example.com", "password1": PASSWORD, "password2": PASSWORD,
            "role": "student"}
    tokens = httpx.post(first.url + "/api/auth/registration/", json=body, timeout=10).json()
    assert httpx.get(second.url + "/api/users/profile/", headers=auth(tokens), timeout=10).json()["name"] == "Bob"
    changed = httpx.patch(first.url + "/api/users/profile/", headers=auth(tokens), json={"name": "Robert"},
                          timeout=10)
    assert changed.status_code == 200
    since = time.monotonic()
    while (name := httpx.get(second.url + "/api/users/profile/", headers=auth(tokens),
                             timeout=10).json()["name"]) != "Robert":
        assert name == "Bob" and time.monotonic() - since < 1.0, "the other process kept the old name after 1 s"
        time.sleep(0.02)
