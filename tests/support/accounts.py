"""Small helpers shared by the accounts, token, rate-limit and HTTP-edge tests."""
from __future__ import annotations

import datetime as dt
import uuid
import warnings
from typing import Any

import httpx
import jwt

from tests.support.app import auth, register, TEST_SECRET, unique_email

PASSWORD = "Correct-Horse-42"
INVALID_CREDENTIALS = {"error": "Invalid credentials", "message": "Email or password is incorrect"}
# Values that a NoSQL-injection attempt puts where a string belongs.
OPERATOR_VALUES: list[Any] = [{"$ne": ""}, {"$gt": ""}, {"$regex": ".*"}, ["a@example.com"], 1, True]


def registration_body(**changes: Any) -> dict[str, Any]:
    body = {"name": "Ada Lovelace", "email": unique_email("reg"), "password1": PASSWORD,
            "password2": PASSWORD, "role": "student", "track": "DP"}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD, role: str = "student",
                **headers: str) -> httpx.Response:
    return await client.post("/api/users/login/", json={"email": email, "password": password, "role": role},
                             headers=headers)


async def profile(client: httpx.AsyncClient, tokens: dict) -> httpx.Response:
    return await client.get("/api/users/profile/", headers=auth(tokens))


def assert_field_error(response: httpx.Response, field: str) -> dict:
    """400 in the contract's field format: {"<field>": ["message", ...]} next
    to the envelope's error/message."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert isinstance(body.get(field), list) and body[field], body
    assert all(isinstance(message, str) and message for message in body[field]), body
    assert body["error"] and body["message"], body
    return body


def assert_envelope(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert "Traceback" not in response.text
    return body


def craft_token(claims: dict[str, Any], secret: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    """A token signed like ours (or not) with chosen claims."""
    now = dt.datetime.now(dt.timezone.utc)
    base = {"sub": "1", "sid": uuid.uuid4().hex, "type": "access", "jti": uuid.uuid4().hex, "iat": now,
            "exp": now + dt.timedelta(minutes=5)}
    base.update(claims)
    base = {key: value for key, value in base.items() if value is not ...}
    with warnings.catch_warnings():  # HS512 wants a longer key; forging, we don't care
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(base, None if algorithm == "none" else secret, algorithm=algorithm)


async def age_refresh_rotations(db: Any, user_id: int, seconds: int = 3600) -> None:
    """Move the last refresh of each of the user's logins `seconds` into the
    past: a replay of the rotated token is then outside the reuse window
    (JWT_REFRESH_REUSE_SECONDS), without the test sleeping through it."""
    async for session in db.sessions.find({"user_id": user_id, "recent": {"$exists": True}}):
        recent = [{**entry, "at": entry["at"] - seconds} for entry in session["recent"]]
        await db.sessions.update_one({"_id": session["_id"]}, {"$set": {"recent": recent}})


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, TEST_SECRET, algorithms=["HS256"])


__all__ = ["PASSWORD", "INVALID_CREDENTIALS", "OPERATOR_VALUES", "registration_body", "login", "profile",
           "assert_field_error", "assert_envelope", "craft_token", "claims_of", "auth", "register",
           "age_refresh_rotations",
           "unique_email"]


async def refresh(client, token) -> httpx.Response:
    return await client.post("/api/auth/token/refresh/", json={"refresh": token})
