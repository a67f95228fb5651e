"""Accounts: registration, login, profiles and role changes.

Authorization rules live here, each in one function, and always read the
role stored now (never one copied into a token): through the auth-state cache
(services/authstate.py), which every write to a user here announces.
"""
from __future__ import annotations

import time
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from models.accounts import ROLES, email_key, normalize_email
from models.enrollment import DEFAULT_ENROLLMENT
from services.authstate import AuthState
from services.errors import ApiError, Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from services.passwords import PasswordHasher, password_problems
from services.tokens import AccessClaims, TokenPair, TokenService, utcnow

ADMIN_ROLES = ("admin", "superadmin")
# "now" timestamps in updates use $currentDate: nx-27017 stores a top-level
# datetime given to $set as a string (then `iso()` and TTL indexes fail).
STAMP_UPDATED = {"$currentDate": {"updated_at": True}}


class InvalidCredentials(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Email or password is incorrect", error="Invalid credentials")


class AccountService:
    def __init__(self, db: AsyncDatabase, tokens: TokenService, hasher: PasswordHasher, tracks: dict[str, str],
                 authstate: AuthState):
        self.db = db
        self.authstate = authstate
        self.users = db.users
        self.tokens = tokens
        self.hasher = hasher
        self.tracks = tracks

    async def next_user_id(self) -> int:
        """Sequential integer ids, as the contract shows (`"id": 1`)."""
        counter = await self.db.counters.find_one_and_update(
            {"_id": "users"}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
        return int(counter["seq"])

    def track_problems(self, track: str | None) -> list[str]:
        if track is not None and track not in self.tracks:
            return [f"Not a valid track. Choose one of: {', '.join(self.tracks)}."]
        return []

    def check_track(self, track: str | None) -> None:
        problems = self.track_problems(track)
        if problems:
            raise ValidationFailed({"track": problems})

    async def create_user(self, *, email: str, name: str, role: str, password: str | None,
                          track: str | None = None, check_password: bool = True, **extra: Any) -> dict:
        """Insert a user. Raises ValidationFailed for a taken email."""
        email = normalize_email(email)
        if check_password and password is not None:
            problems = password_problems(password, email=email, name=name)
            if problems:
                raise ValidationFailed({"password1": problems})
        now = utcnow()
        user = {
            "email": email, "email_key": email_key(email), "name": name, "role": role, "track": track,
            "password_hash": await self.hasher.hash(password) if password is not None else None,
            "created_at": now, "updated_at": now, "enrollment_status": DEFAULT_ENROLLMENT,
            "payment_verified": False, "email_verified": False, **extra,
        }
        if await self.users.find_one({"email_key": user["email_key"]}, {"_id": 1}):
            raise ValidationFailed({"email": ["A user with this email already exists."]})
        user["_id"] = await self.next_user_id()
        try:
            await self.users.insert_one(user)
        except DuplicateKeyError:
            raise ValidationFailed({"email": ["A user with this email already exists."]}) from None
        return user

    async def register(self, *, name: str, email: str, password1: str, password2: str, role: str,
                       track: str | None, **extra: Any) -> tuple[dict, TokenPair]:
        """`extra`: more fields stored on the new user (e.g. its consent record)."""
        errors = {"password1": password_problems(password1, email=email, name=name),
                  "password2": ["The two password fields didn't match."] if password1 != password2 else [],
                  "track": self.track_problems(track)}
        errors = {field: messages for field, messages in errors.items() if messages}
        if errors:
            raise ValidationFailed(errors)
        user = await self.create_user(email=email, name=name, role=role, password=password1, track=track,
                                      check_password=False, **extra)
        return user, await self.tokens.start_session(user["_id"])

    async def login(self, email: str, password: str, role: str | None) -> tuple[dict, TokenPair]:
        """Check the password first, then the role: the role answer is only
        given to someone who proved the password. No role (the
        /api/auth/login/ alias): the stored one."""
        user = await self.users.find_one({"email_key": email_key(email)})
        if not await self.hasher.check(password, user.get("password_hash") if user else None):
            raise InvalidCredentials()
        assert user is not None
        if user.get("disabled"):  # said only to someone who proved the password
            raise Forbidden("This account is disabled.")
        if role is not None and user["role"] != role and user["role"] != "superadmin":
            detail = f"You are registered as '{user['role']}' but tried to login as '{role}'"
            raise ApiError(403, "Unauthorized role access", detail,
                           extra={"detail": detail, "actual_role": user["role"]})
        await self.record_login(user["_id"])
        return user, await self.tokens.start_session(user["_id"])

    async def hand_over_to_email_owner(self, user_id: int, reason: str) -> None:
        """Someone proved they own this account's email (a provider's verified
        email, or a reset link) while it was never verified: whoever chose the
        password may not be that person (account pre-hijacking). Make the old
        password unusable and end every session, so the email's owner is the
        only one left holding the account."""
        await self.set_fields(user_id, {"password_hash": None, "email_verified": True})
        await self.tokens.revoke_all(user_id, reason)

    async def set_password(self, user_id: int, password: str) -> None:
        """A new password chosen through a mailed link: the mailbox is proven
        (email verified) and every session of the account is signed out."""
        await self.set_fields(user_id, {"password_hash": await self.hasher.hash(password), "email_verified": True})
        await self.tokens.revoke_all(user_id, "password reset")

    async def email_exists(self, email: str) -> bool:
        return await self.users.find_one({"email_key": email_key(email)}, {"_id": 1}) is not None

    async def get(self, user_id: int) -> dict | None:
        return await self.users.find_one({"_id": user_id}, {"password_hash": 0})

    # -- for other services (payments, OAuth): they never write `users` themselves --------
    async def find_by_email(self, email: str) -> dict | None:
        return await self.users.find_one({"email_key": email_key(email)}, {"password_hash": 0})

    async def record_login(self, user_id: int) -> None:
        await self.users.update_one({"_id": user_id}, {"$currentDate": {"last_login_at": True}})
        await self.authstate.user_changed(user_id)

    async def enroll(self, user_id: int, track: str | None) -> None:
        """A paid enrolment (idempotent: `enrolled_at` keeps the first one)."""
        changes: dict[str, Any] = {"payment_verified": True, "enrollment_status": "ENROLLED"}
        if track:
            changes["track"] = track
        await self.users.update_one({"_id": user_id, "enrolled_at": None}, {"$currentDate": {"enrolled_at": True}})
        await self.set_fields(user_id, changes)  # last: it tells the cache, so the enrolment shows at once

    async def update_profile(self, user_id: int, changes: dict[str, Any]) -> dict:
        changes = {key: value for key, value in changes.items() if value is not None and key in {"name", "track"}}
        if "name" in changes:
            changes["name"] = changes["name"].strip()
            if not changes["name"]:
                raise ValidationFailed({"name": ["This field may not be blank."]})
        self.check_track(changes.get("track"))
        user = await self.users.find_one_and_update({"_id": user_id}, {"$set": changes, **STAMP_UPDATED},
                                                    projection={"password_hash": 0},
                                                    return_document=ReturnDocument.AFTER)
        if user is None:
            raise NotFound("User not found.")
        await self.authstate.user_changed(user_id)
        return user

    async def change_role(self, actor: dict, target_id: int, new_role: str) -> dict:
        """Who may change a role, in one place:

        * only admins and superadmins change roles at all;
        * only a superadmin grants or removes `admin` or `superadmin`;
        * the last superadmin cannot demote themselves (nobody could undo it);
          a disabled or deleted superadmin does not count.
        """
        if new_role not in ROLES:
            raise ValidationFailed({"role": ["Not a valid choice."]})
        if actor["role"] not in ADMIN_ROLES:
            raise Forbidden("Only administrators can change roles.")
        target = actor if target_id == actor["_id"] else await self.get(target_id)
        if target is None:
            raise NotFound("User not found.")
        touches_admin = new_role in ADMIN_ROLES or target["role"] in ADMIN_ROLES
        if touches_admin and actor["role"] != "superadmin":
            raise Forbidden("Only a superadmin can grant or remove the admin or superadmin role.")
        if target["role"] == "superadmin" and new_role != "superadmin":
            others = await self.users.count_documents({"role": "superadmin", "_id": {"$ne": target["_id"]},
                                                       "disabled": {"$ne": True}})  # disabled/deleted ones can't act
            if others == 0:
                raise Conflict("The last superadmin cannot be demoted.")
        await self.set_fields(target["_id"], {"role": new_role})
        return {"id": target["_id"], "role": new_role}

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token, only while its user still exists and is not
        disabled (a deleted user takes effect on the next request)."""
        claims = self.tokens.decode(refresh_token, "refresh")
        user = await self.users.find_one({"_id": int(claims["sub"])}, {"disabled": 1})
        if user is None or user.get("disabled"):
            raise Unauthorized("User no longer exists.", error="Invalid token")
        return await self.tokens.rotate(claims)

    async def set_disabled(self, user_id: int, disabled: bool) -> None:
        """Disable (or re-enable) an account: its tokens stop working on the
        next request in this process, within 1 s in the others."""
        await self.set_fields(user_id, {"disabled": disabled})

    async def set_fields(self, user_id: int, fields: dict[str, Any], stamp: tuple[str, ...] = ()) -> None:
        """The one write of a user's fields by other services (verification,
        trainer assignment, the admin console): stamps updated_at (and the
        `stamp` fields) and tells the auth-state cache, so that the change is
        seen on the next request here and within 1 s elsewhere."""
        stamps = {"updated_at": True, **{name: True for name in stamp}}
        await self.users.update_one({"_id": user_id}, {"$set": fields, "$currentDate": stamps})
        await self.authstate.user_changed(user_id)

    async def session_user(self, session_id: str) -> dict | None:
        """The user of a live, unrevoked, unexpired session whose user is not
        disabled; else None. Served from the auth-state cache (no database
        round trip when warm); the one check behind access tokens and
        workspace cookies."""
        session = await self.authstate.session(session_id)
        if session is None or not session.live(time.time()):
            return None
        user = await self.authstate.user(session.user_id)
        if user is None or user.get("disabled"):
            return None
        user["_session_id"] = session_id
        return user

    async def authenticate(self, access_token: str, claims: AccessClaims | None = None) -> dict:
        """The caller's current user document for an access token (`claims`:
        the token already decoded by the caller)."""
        claims = claims or self.tokens.access_claims(access_token)
        user = await self.session_user(claims.session_id)
        if user is not None and user["_id"] == claims.user_id:
            return user
        session = await self.authstate.session(claims.session_id)  # cached now: only picks the message
        if session is None or not session.live(time.time()) or session.user_id != claims.user_id:
            raise Unauthorized("Token has been revoked.", error="Token revoked")
        raise Unauthorized("User no longer exists.", error="Invalid token")
