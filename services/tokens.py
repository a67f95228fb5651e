"""JWT access/refresh tokens with rotation, reuse detection and revocation.

Each login starts a *session* (one document in ``sessions``). Every token of
that login carries the session id (``sid``). The session stores the id of the
one refresh token that may be used next (``current_jti``):

* refreshing swaps ``current_jti`` by compare-and-set, so a used refresh token
  is dead;
* presenting a refresh token that is no longer current means it was copied:
  the whole session is revoked (every access and refresh token of that login);
* except within the *reuse window* (JWT_REFRESH_REUSE_SECONDS) after its
  rotation: clients that refresh on every 401 without single-flight (the
  original frontend, in several tabs) send the tokens of one login's recent
  chain (R2, R3, R4...) at once and late, so any token of that recent chain
  gets the login's *current* pair, the very same bytes again. The session
  keeps what re-encodes that pair (its jtis and issue second) and the jtis
  rotated within the window, never the tokens: they need the key;
* logout revokes the session.

Revocations live in MongoDB and expire with the session (TTL index). Every
revocation is announced to the auth-state cache (services/authstate.py), which
authenticated requests read instead of the database.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass

import jwt
from pymongo.asynchronous.database import AsyncDatabase

from services.authstate import AuthState
from services.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
ALGORITHMS = [ALGORITHM]  # pinned: never trust the token's own "alg"
# Rotated refresh jtis a login remembers for the reuse window: bounds the
# document when a client refreshes in a tight loop.
RECENT_CHAIN = 32


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str

    def as_dict(self) -> dict[str, str]:
        return {"access": self.access, "refresh": self.refresh}


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    session_id: str


def revocation(reason: str) -> dict:
    # $currentDate, not $set of a datetime: nx-27017 would store that as a string.
    return {"$set": {"revoked": True, "revoked_reason": reason}, "$currentDate": {"revoked_at": True}}


class TokenService:
    def __init__(self, db: AsyncDatabase, secret: str, access_lifetime: dt.timedelta,
                 refresh_lifetime: dt.timedelta, authstate: AuthState | None = None, reuse_seconds: int = 0,
                 verified_tokens: int = 4096):
        self.sessions = db.sessions
        self.authstate = authstate
        # access token -> (exp, claims), the oldest first; at most verified_tokens
        # entries (TOKEN_CACHE_SIZE: about 570 bytes each, measured with tracemalloc)
        self._verified: dict[str, tuple[float, AccessClaims]] = {}
        self.verified_tokens = verified_tokens
        self.secret = secret
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.reuse_seconds = reuse_seconds  # 0: a rotated refresh token is never accepted again

    def _encode(self, user_id: int, session_id: str, kind: str, jti: str, now: dt.datetime) -> str:
        lifetime = self.access_lifetime if kind == "access" else self.refresh_lifetime
        claims = {"sub": str(user_id), "sid": session_id, "type": kind, "jti": jti,
                  "iat": now, "exp": now + lifetime}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def _pair(self, user_id: int, session_id: str, refresh_jti: str, now: dt.datetime,
              access_jti: str | None = None) -> TokenPair:
        """A fresh access token and the refresh token whose jti the session holds."""
        return TokenPair(self._encode(user_id, session_id, "access", access_jti or uuid.uuid4().hex, now),
                         self._encode(user_id, session_id, "refresh", refresh_jti, now))

    def decode(self, token: str, kind: str) -> dict:
        """Verify signature, expiry and type. Raises Unauthorized."""
        if not isinstance(token, str) or not token:
            raise Unauthorized("Token is missing.", error="Invalid token")
        try:
            claims = jwt.decode(token, self.secret, algorithms=ALGORITHMS,
                                options={"require": ["exp", "sub", "jti", "type", "sid"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token has expired.", error="Token expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("Token is invalid.", error="Invalid token") from None
        if claims.get("type") != kind:
            raise Unauthorized(f"An {kind} token is required.", error="Invalid token")
        if not (str(claims["sub"]).isdigit() and int(claims["sub"]) < 2**63) or not isinstance(claims["sid"], str):
            raise Unauthorized("Token is invalid.", error="Invalid token")
        return claims

    def access_claims(self, token: str) -> AccessClaims:
        """A verified access token's claims, with no database round trip (the
        HTTP edge decodes once per request, for the rate limit and auth).
        A token string whose signature was verified before is not verified
        again (PyJWT's decode was about 9% of an authenticated request); its
        expiry is checked on every use. Raises Unauthorized."""
        known = self._verified.get(token) if isinstance(token, str) else None
        if known is not None:
            if known[0] > time.time():
                return known[1]
            del self._verified[token]
        claims = self.decode(token, "access")
        result = AccessClaims(int(claims["sub"]), claims["sid"])
        if self.verified_tokens <= 0:
            return result
        if len(self._verified) >= self.verified_tokens:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = (float(claims["exp"]), result)
        return result

    async def start_session(self, user_id: int) -> TokenPair:
        now = utcnow()
        session_id = uuid.uuid4().hex
        refresh_jti = uuid.uuid4().hex
        await self.sessions.insert_one({
            "_id": session_id, "user_id": user_id, "current_jti": refresh_jti, "revoked": False,
            "created_at": now, "refreshed_at": now, "expires_at": now + self.refresh_lifetime,
        })
        return self._pair(user_id, session_id, refresh_jti, now)

    async def rotate(self, claims: dict) -> TokenPair:
        """Swap the session's refresh token; `claims` come from decode(token, "refresh")."""
        user_id, session_id, jti = int(claims["sub"]), claims["sid"], claims["jti"]
        # Whole seconds, as a JWT's iat holds them: the pair re-encodes identically.
        now = utcnow().replace(microsecond=0)
        session = await self.sessions.find_one({"_id": session_id, "user_id": user_id})
        if session and not session.get("revoked") and session.get("current_jti") == jti:
            pair = {"refresh_jti": uuid.uuid4().hex, "access_jti": uuid.uuid4().hex, "iat": int(now.timestamp())}
            # The compare-and-set on current_jti makes the list read above the one being extended.
            swapped = await self.sessions.update_one(
                {"_id": session_id, "user_id": user_id, "current_jti": jti, "revoked": False},
                {"$set": {"current_jti": pair["refresh_jti"], "expires_at": now + self.refresh_lifetime,
                          "pair": pair, "recent": self._recent(session, jti, pair["iat"])},
                 "$currentDate": {"refreshed_at": True}})
            if swapped.modified_count == 1:
                return self._pair(user_id, session_id, pair["refresh_jti"], now, pair["access_jti"])
            session = await self.sessions.find_one({"_id": session_id, "user_id": user_id})
        if not session or session.get("revoked"):
            raise Unauthorized("Refresh token has been revoked.", error="Token revoked")
        current = self._reusable_pair(session, jti)
        if current is None:
            # A refresh token rotated outside the window: someone kept a copy.
            await self.revoke_session(session_id, reason="refresh token reuse")
            raise Unauthorized("Refresh token was already used; this login has been revoked.",
                               error="Token reused")
        return self._pair(user_id, session_id, current["refresh_jti"],
                          dt.datetime.fromtimestamp(current["iat"], dt.timezone.utc), current["access_jti"])

    def _recent(self, session: dict, jti: str, rotated_at: int) -> list[dict]:
        """The session's chain of refresh jtis rotated within the window, `jti` added (newest last)."""
        if self.reuse_seconds <= 0:
            return []
        kept = [entry for entry in session.get("recent") or []
                if isinstance(entry, dict) and rotated_at - entry.get("at", 0) <= self.reuse_seconds]
        return (kept + [{"jti": jti, "at": rotated_at}])[-RECENT_CHAIN:]

    def _reusable_pair(self, session: dict, jti: str) -> dict | None:
        """The login's current pair if refresh token `jti` is of its chain and
        was rotated within the window; None means a reuse to punish."""
        current = session.get("pair")
        if self.reuse_seconds <= 0 or not isinstance(current, dict) \
                or session.get("current_jti") != current.get("refresh_jti"):
            return None
        now = utcnow().timestamp()
        for entry in session.get("recent") or []:
            if isinstance(entry, dict) and entry.get("jti") == jti:
                return current if now - entry.get("at", 0) <= self.reuse_seconds else None
        return None

    async def logout(self, refresh_token: str, user_id: int) -> None:
        """Revoke the login that a refresh token belongs to; it must be the caller's."""
        try:
            claims = jwt.decode(refresh_token, self.secret, algorithms=ALGORITHMS,
                                options={"require": ["sub", "sid", "type"], "verify_exp": False})
        except (jwt.PyJWTError, TypeError):
            raise Unauthorized("Refresh token is invalid.", error="Invalid token") from None
        if claims.get("type") != "refresh":
            raise Unauthorized("A refresh token is required.", error="Invalid token")
        if str(claims["sub"]) != str(user_id):
            raise Forbidden("This refresh token belongs to another user.")
        await self.revoke_session(claims["sid"], reason="logout")

    async def revoke_session(self, session_id: str, reason: str) -> None:
        await self.sessions.update_one({"_id": session_id}, revocation(reason))
        if self.authstate:
            await self.authstate.session_changed(session_id)

    async def revoke_all(self, user_id: int, reason: str) -> None:
        await self.sessions.update_many({"user_id": user_id, "revoked": False}, revocation(reason))
        if self.authstate:
            await self.authstate.sessions_of_user_changed(user_id)
