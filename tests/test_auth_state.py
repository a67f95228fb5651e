"""The auth-state cache (services/authstate.py): warm requests need no
database round trip, this process's own changes take effect on the very next
request, and other processes' changes within 1 s (two real server processes
on one database)."""
from __future__ import annotations

import asyncio
import datetime as dt
import time
import types
import uuid

import httpx
import pytest

from services.tokens import TokenService
from tests.support.app import auth, register
from tests.support.processes import PASSWORD, ServerProcess
from tests.support.processes import refused_within


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
    await server.db.counters.update_one({"_id": "auth_changes"}, {"$inc": {"seq": 2}}, upsert=True)  # 2 writers
    await state.ring.write(floor + 2, {"session_id": "unrelated"})
    await state.poll()
    assert state.floor == floor  # held back by the missing floor + 1
    await server.db.users.update_one({"_id": data["user"]["id"]}, {"$set": {"name": "Late"}})
    await state.ring.write(floor + 1, {"user_id": data["user"]["id"]})
    await state.poll()
    assert state.floor == floor + 2
    assert (await profile(client, data)).json()["name"] == "Late"


class CountingCollection:
    """The real collection, counting find_one calls; `gate` (when set) holds
    each read until it is opened."""

    def __init__(self, real):
        self.real, self.calls, self.gate = real, 0, None

    async def find_one(self, *args, **kwargs):
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return await self.real.find_one(*args, **kwargs)


async def test_concurrent_misses_share_one_database_read(server, client):
    """A cold cache meeting many connections at once (what made the first
    second of a benchmark stall for up to 1 s) reads each key once."""
    data = await register(client)
    state = server.services.authstate
    state.session_docs, state.user_docs = CountingCollection(state.session_docs), CountingCollection(state.user_docs)
    answers = await asyncio.gather(*(profile(client, data) for _ in range(30)))
    assert {response.status_code for response in answers} == {200}
    assert (state.session_docs.calls, state.user_docs.calls) == (1, 1)


async def test_a_read_started_before_an_invalidation_is_not_shared(server, client):
    """Own writes take effect on the next request: a read in flight when the
    write lands may carry the old state, so a later request makes its own."""
    data = await register(client)
    state = server.services.authstate
    sid = _claims(data["access"])["sid"]
    state.session_docs = sessions = CountingCollection(state.session_docs)
    sessions.gate = asyncio.Event()
    early = asyncio.ensure_future(state.session(sid))
    await asyncio.sleep(0.05)
    await server.services.tokens.revoke_session(sid, "test")
    late = asyncio.ensure_future(state.session(sid))
    await asyncio.sleep(0.05)
    sessions.gate.set()
    await early
    assert sessions.calls == 2 and (await late).revoked
    assert (await state.session(sid)).revoked  # the raced early read was not stored


async def test_a_stale_cache_waits_for_the_poll_in_flight(server, client):
    """A late poll (a loaded event loop or database) makes the cache stale;
    requests then wait for that poll, not each read the database."""
    data = await register(client)
    assert (await profile(client, data)).status_code == 200
    state = server.services.authstate
    state.session_docs, state.user_docs = CountingCollection(state.session_docs), CountingCollection(state.user_docs)
    real_poll, release = state.poll, asyncio.Event()

    async def late_poll():
        await release.wait()
        await real_poll()
    state.poll = late_poll
    await asyncio.sleep(0.25)  # the poller is now inside a late poll
    state.fresh_until = 0.0  # as if it had been late for STALE_AFTER
    answers = asyncio.gather(*(profile(client, data) for _ in range(10)))
    await asyncio.sleep(0.2)
    release.set()
    assert {response.status_code for response in await answers} == {200}
    assert (state.session_docs.calls, state.user_docs.calls) == (0, 0) and state.trusted()


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


@pytest.mark.parametrize("size", [0, 3])
def test_the_verified_token_cache_holds_at_most_token_cache_size(size):
    service = TokenService(types.SimpleNamespace(sessions=None), "s" * 32, dt.timedelta(minutes=5), dt.timedelta(days=1), verified_tokens=size)
    now = dt.datetime.now(dt.timezone.utc)
    tokens = [service._pair(7, uuid.uuid4().hex, uuid.uuid4().hex, now).access for _ in range(10)]
    for token in tokens:
        assert service.access_claims(token).user_id == 7
    assert list(service._verified) == tokens[len(tokens) - size:] if size else not service._verified
    expired = service._pair(7, "sid", "jti", now - dt.timedelta(minutes=10)).access
    with pytest.raises(Exception, match="expired"):
        service.access_claims(expired)
