"""Rate limits over HTTP: anonymous per IP, authenticated per user, failed
logins per account, X-Forwarded-For only from trusted proxies, and the
shared MongoDB storage."""
from __future__ import annotations

import time

import httpx
import pytest

from tests.support.accounts import assert_envelope, auth, INVALID_CREDENTIALS, login, register


def assert_429(response: httpx.Response, limit: int) -> None:
    body = assert_envelope(response, 429)
    assert body["error"] == "Rate limit exceeded"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 3601  # the window plus rounding up to whole seconds
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert int(response.headers["x-ratelimit-reset"]) >= int(time.time())


@pytest.mark.parametrize("storage", ["memory", "mongodb"])
async def test_anonymous_limit_per_ip_with_headers(start_server, storage):
    server = await start_server(rate_limit_anon="3/hour", rate_limit_storage=storage)
    async with httpx.AsyncClient(base_url=server.url) as client:
        remaining = []
        for _ in range(3):
            response = await client.post("/api/users/check-email/", json={"email": "a@example.com"})
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "3"
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
        assert remaining == [2, 1, 0]
        assert_429(await client.post("/api/users/check-email/", json={"email": "a@example.com"}), 3)
        assert_429(await client.post("/api/users/login/", json={"email": "a@example.com", "password": "x",
                                                                "role": "student"}), 3)
        # Liveness is never limited.
        assert (await client.get("/health")).status_code == 200
    if storage == "mongodb":
        assert await server.db.rate_limits.count_documents({}) >= 1


async def test_user_limit_is_keyed_per_user(start_server):
    server = await start_server(rate_limit_user="3/hour")
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client), await register(client)
        for _ in range(3):
            assert (await client.get("/api/users/profile/", headers=auth(alice))).status_code == 200
        assert_429(await client.get("/api/users/profile/", headers=auth(alice)), 3)
        # Bob, from the same IP, has his own budget; so have anonymous callers.
        response = await client.get("/api/users/profile/", headers=auth(bob))
        assert response.status_code == 200 and response.headers["x-ratelimit-remaining"] == "2"
        assert (await client.post("/api/users/check-email/", json={"email": "a@example.com"})).status_code == 200
        # A new login of Alice is still Alice.
        fresh = (await login(client, alice["user"]["email"])).json()
        assert_429(await client.get("/api/users/profile/", headers=auth(fresh)), 3)


async def test_forged_token_does_not_borrow_a_users_budget(start_server):
    server = await start_server(rate_limit_user="2/hour", rate_limit_anon="1000/hour")
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice = await register(client)
        for _ in range(3):  # invalid tokens count as anonymous, not as Alice
            await client.get("/api/users/profile/", headers={"Authorization": "Bearer x.y.z"})
        assert (await client.get("/api/users/profile/", headers=auth(alice))).status_code == 200


async def test_failed_logins_are_limited_per_account(start_server):
    server = await start_server(rate_limit_login_failures="3/hour")
    async with httpx.AsyncClient(base_url=server.url) as client:
        victim, other = await register(client), await register(client)
        email = victim["user"]["email"]
        for _ in range(3):
            response = await login(client, email.upper(), "Wrong-Password-1")
            assert response.status_code == 401 and response.json() == INVALID_CREDENTIALS
        # Locked now, even with the right password.
        locked = await login(client, email, victim["password"])
        assert_envelope(locked, 429)
        assert "failed logins" in locked.json()["message"]
        assert int(locked.headers["retry-after"]) >= 1
        # Another account is not affected.
        assert (await login(client, other["user"]["email"], other["password"])).status_code == 200


async def test_successful_logins_do_not_count_as_failures(start_server):
    server = await start_server(rate_limit_login_failures="2/hour")
    async with httpx.AsyncClient(base_url=server.url) as client:
        data = await register(client)
        for _ in range(4):
            assert (await login(client, data["user"]["email"], data["password"])).status_code == 200


async def test_x_forwarded_for_is_ignored_from_untrusted_peers(start_server):
    server = await start_server(rate_limit_anon="2/hour")
    async with httpx.AsyncClient(base_url=server.url) as client:
        for n in range(2):
            assert (await client.get("/api/users/profile/", headers={"X-Forwarded-For": f"203.0.113.{n}"})
                    ).status_code == 401
        assert_429(await client.get("/api/users/profile/", headers={"X-Forwarded-For": "203.0.113.99"}), 2)


async def test_x_forwarded_for_is_honoured_from_trusted_proxies(start_server):
    server = await start_server(rate_limit_anon="2/hour", trusted_proxies="127.0.0.1/32")
    async with httpx.AsyncClient(base_url=server.url) as client:
        for _ in range(2):
            await client.get("/api/users/profile/", headers={"X-Forwarded-For": "203.0.113.7"})
        assert_429(await client.get("/api/users/profile/", headers={"X-Forwarded-For": "203.0.113.7"}), 2)
        # Another client behind the proxy has its own budget ...
        assert (await client.get("/api/users/profile/", headers={"X-Forwarded-For": "203.0.113.8"})).status_code == 401
        # ... and a spoofed left-most hop does not help: the proxy's own right-most entry counts.
        spoofed = await client.get("/api/users/profile/", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
        assert_429(spoofed, 2)


@pytest.mark.parametrize("storage", ["memory", "mongodb"])
async def test_parallel_wrong_passwords_never_check_more_than_the_limit(start_server, storage):
    """25 concurrent wrong passwords against a limit of 5: each attempt is
    counted before its bcrypt check, so at most 5 are ever checked (401) and
    the rest are refused (429) without a check."""
    import asyncio

    server = await start_server(rate_limit_login_failures="5/hour", rate_limit_storage=storage)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        victim = await register(client)
        email = victim["user"]["email"]
        answers = await asyncio.gather(*(login(client, email, f"Wrong-Password-{n}") for n in range(25)))
        statuses = sorted(response.status_code for response in answers)
        assert statuses.count(401) == 5, statuses
        assert statuses.count(429) == 20, statuses
        assert_envelope(await login(client, email, victim["password"]), 429)


@pytest.mark.parametrize("storage", ["memory", "mongodb"])
async def test_more_parallel_right_passwords_than_the_failure_budget_all_log_in(start_server, storage):
    """Right passwords are counted while their bcrypt check runs, then given
    back: 12 at once against a budget of 3 wait their turn instead of 429."""
    import asyncio

    server = await start_server(rate_limit_login_failures="3/hour", rate_limit_storage=storage)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        victim = await register(client)
        email = victim["user"]["email"]
        answers = await asyncio.gather(*(login(client, email, victim["password"]) for _ in range(12)))
        assert [response.status_code for response in answers] == [200] * 12, [r.text for r in answers]
        # The budget is whole again, and still spent by wrong passwords only.
        wrong = await asyncio.gather(*(login(client, email, "Wrong-Password-1") for _ in range(6)))
        assert sorted(response.status_code for response in wrong) == [401] * 3 + [429] * 3
        assert_envelope(await login(client, email, victim["password"]), 429)


async def test_refused_role_and_success_give_the_attempt_back(start_server):
    """Only a wrong password spends the failure budget: a right password
    under the wrong role (403) and a success leave it as it was."""
    server = await start_server(rate_limit_login_failures="2/hour")
    async with httpx.AsyncClient(base_url=server.url) as client:
        data = await register(client)
        email = data["user"]["email"]
        for _ in range(3):
            assert (await login(client, email, data["password"], role="trainer")).status_code == 403
            assert (await login(client, email, data["password"])).status_code == 200
        assert (await login(client, email, "Wrong-Password-1")).status_code == 401
        assert (await login(client, email, data["password"])).status_code == 200


async def test_shared_storage_counts_locally_far_from_the_limit_and_exactly_near_it(server):
    """Two MongoDB backends stand for two processes on one database."""
    from limits import parse

    from services.ratelimit import MongoBackend
    first, second = MongoBackend(server.db), MongoBackend(server.db)
    roomy = parse("1000/hour")
    for _ in range(50):
        assert (await first.hit(roomy, "roomy", 1)).allowed
    stored = await server.db.rate_limits.find_one({"_id": {"$regex": "roomy"}})
    assert stored["count"] == 1  # only the first hit went to the database; the rest wait for the sync
    await first.flush()
    assert (await server.db.rate_limits.find_one({"_id": stored["_id"]}))["count"] == 50
    assert (await second.hit(roomy, "roomy", 1)).remaining == 1000 - 51  # the other process sees them

    tight = parse("30/hour")
    allowed = [(await backend.hit(tight, "tight", 1)).allowed for _ in range(25) for backend in (first, second)]
    assert allowed.count(True) == 30 and allowed[:30] == [True] * 30
    await first.close()
    await second.close()
