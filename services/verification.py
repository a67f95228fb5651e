"""Email verification and password reset by emailed, single-use links.

* A link's token is 32 random bytes; only its SHA-256 is stored (in
  `email_tokens`, with its purpose, user, email and expiry; a TTL index
  removes expired ones), so a copy of the database opens no account.
* A token is spent by one atomic find-and-delete: two clicks of one link
  cannot both succeed.
* A reset request answers the same whether or not the email has an account,
  and the mail goes out in the background (services/mail.py), so neither the
  answer nor its timing tells who is registered.
* A successful reset sets the password, marks the email verified (the
  mailbox was just proven), revokes every session and spends every other
  outstanding link of that user.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import urllib.parse
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.errors import ServiceUnavailable, ValidationFailed
from services.passwords import password_problems
from services.tokens import utcnow

VERIFY, RESET = "verify", "reset"
BAD_LINK = "This link is invalid, expired or already used."


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def encode_uid(user_id: int) -> str:
    """The `uid` of a reset link, as Django writes it (base64url of the id)."""
    return base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")


def decode_uid(uid: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(uid + "=" * (-len(uid) % 4)).decode("ascii")
    except (ValueError, UnicodeError):
        return None
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


class EmailLinks:
    def __init__(self, db: AsyncDatabase, settings: Any, mailer: Any, accounts: Any, limits: Any):
        self.limits = limits  # RateLimits with a "mail" rule: mails per account
        self.tokens = db.email_tokens
        self.settings = settings
        self.mailer = mailer
        self.accounts = accounts

    def require_mailer(self) -> None:
        if self.mailer is None:
            raise ServiceUnavailable(message="Email is not configured on this server (SMTP_HOST).")

    def link(self, template: str, **params: str) -> str:
        """EMAIL_VERIFY_URL or PASSWORD_RESET_URL filled in (values URL-quoted);
        a path template starts at PUBLIC_BASE_URL."""
        filled = template.format(**{name: urllib.parse.quote(value, safe="") for name, value in params.items()})
        return f"{self.settings.public_base_url.rstrip('/')}{filled}" if filled.startswith("/") else filled

    async def may_mail(self, user: dict) -> bool:
        """Within RATE_LIMIT_MAIL for this account? Past it nothing is sent
        (and the answer stays the same), so nobody can flood a mailbox."""
        return (await self.limits.hit("mail", str(user["_id"]))).allowed

    async def _issue(self, purpose: str, user: dict, lifetime: dt.timedelta) -> str:
        token = secrets.token_urlsafe(32)
        now = utcnow()
        await self.tokens.insert_one({"_id": token_hash(token), "purpose": purpose, "user_id": user["_id"],
                                      "email_key": user["email_key"], "created_at": now,
                                      "expires_at": now + lifetime})
        return token

    async def _spend(self, purpose: str, token: str, user_id: int | None = None) -> dict:
        """The user a token was issued to; the token is gone afterwards."""
        query: dict = {"_id": token_hash(token), "purpose": purpose}
        if user_id is not None:
            query["user_id"] = user_id
        record = await self.tokens.find_one_and_delete(query)
        expires_at = record.get("expires_at") if record else None
        if not isinstance(expires_at, dt.datetime) or expires_at <= utcnow():
            return {}
        user = await self.accounts.get(record["user_id"])
        # A link is for the address it was sent to, and never for a disabled account.
        if user is None or user["email_key"] != record["email_key"] or user.get("disabled"):
            return {}
        return user

    # -- verification -------------------------------------------------------------------
    async def send_verification(self, user: dict) -> bool:
        """Mail a verification link to a new (or unverified) user; False when
        there is no mailer."""
        if self.mailer is None or user.get("email_verified") or not await self.may_mail(user):
            return False
        key = await self._issue(VERIFY, user, dt.timedelta(hours=self.settings.email_verify_hours))
        self.mailer.send_later(user["email"], "Confirm your email address", (
            f"Hello {user['name']},\n\nConfirm that this is your email address by opening:\n\n"
            f"{self.link(self.settings.email_verify_url, key=key)}\n\nThe link works once and expires in "
            f"{self.settings.email_verify_hours} hours. If you did not sign up, ignore this mail.\n"))
        return True

    async def resend_verification(self, email: str) -> None:
        self.require_mailer()
        user = await self.accounts.find_by_email(email)
        if user is not None and not user.get("disabled"):
            await self.send_verification(user)

    async def verify(self, key: str) -> None:
        user = await self._spend(VERIFY, key)
        if not user:
            raise ValidationFailed({"key": [BAD_LINK]})
        await self.accounts.set_fields(user["_id"], {"email_verified": True})

    # -- password reset -----------------------------------------------------------------
    async def request_reset(self, email: str) -> None:
        """Mail a reset link when the email has an account; the caller answers
        the same either way."""
        self.require_mailer()
        user = await self.accounts.find_by_email(email)
        if user is None or user.get("disabled") or not await self.may_mail(user):
            return
        minutes = self.settings.password_reset_minutes
        token = await self._issue(RESET, user, dt.timedelta(minutes=minutes))
        self.mailer.send_later(user["email"], "Reset your password", (
            f"Hello {user['name']},\n\nSomeone (hopefully you) asked to reset the password of this account. "
            f"Choose a new password here:\n\n{self.link(self.settings.password_reset_url, uid=encode_uid(user['_id']), token=token)}"
            f"\n\nThe link works once and expires in {minutes} minutes. If you did not ask, ignore this mail: "
            "your password stays as it is.\n"))

    async def confirm_reset(self, uid: str, token: str, new_password1: str, new_password2: str) -> None:
        user_id = decode_uid(uid)
        user = await self.accounts.get(user_id) if user_id is not None else None
        errors = {"new_password1": password_problems(new_password1, email=user["email"] if user else "",
                                                     name=user["name"] if user else ""),
                  "new_password2": ["The two password fields didn't match."] if new_password1 != new_password2 else []}
        errors = {field: messages for field, messages in errors.items() if messages}
        if errors:  # checked first, so a typo does not spend the link
            raise ValidationFailed(errors)
        user = await self._spend(RESET, token, user_id) if user_id is not None else {}
        if not user:
            raise ValidationFailed({"token": [BAD_LINK]})
        await self.accounts.set_password(user["_id"], new_password1)
        await self.tokens.delete_many({"user_id": user["_id"]})


async def start(services: Any) -> None:
    services.email_links = EmailLinks(services.db, services.settings, services.mailer, services.accounts,
                                      services.ratelimits)
