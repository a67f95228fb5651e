"""Stripe Checkout for the original frontend's "Get started" page: a hosted
Checkout Session for a track's price, and the two ways its outcome arrives
(the success page's verify call, and the `checkout.session.completed`
webhook), both settling the payment with one compare-and-set and enrolling
the student as a PaymentIntent's success does.

Rules:
* the amount is the track's TRACK_PRICES price, never the client's;
* `success_url` and `cancel_url` must lead to an allowed origin
  (CHECKOUT_RETURN_ORIGINS, or the named CORS_ORIGINS and PUBLIC_BASE_URL's):
  Stripe would otherwise send a paying user anywhere a caller names;
* a session is settled only from Stripe's own word (a signed event, or the
  session retrieved with our key) and only when `payment_status` is `paid`;
* the original page is a *guest* checkout (no token: Stripe asks for the
  email). A paid guest session enrols the account of that email, or makes a
  student account for it (no password: "forgot password" sets one). The
  session id in the success URL is then worth one login: the first verify of
  a session that *made* an account answers its tokens (a compare-and-set on
  the payment), later ones and sessions of existing accounts never do, so a
  payer cannot sign in to someone else's account by paying with their email.
"""
from __future__ import annotations

import logging
import re
import urllib.parse
import uuid
from typing import Any

import stripe
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.accounts import user_model
from models.payments import checkout_verify_model
from services.errors import ApiError, NotFound, ValidationFailed, field_error
from services.payments import IDEMPOTENCY_KEY, PaymentService, stripe_failure
from services.tokens import utcnow

log = logging.getLogger("apranova.payments")

SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,250}$")
CHECKOUT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


class CheckoutService:
    def __init__(self, payments: PaymentService, welcome: Any = None):
        self.payments = payments
        self.welcome = welcome  # async (email): mail a new guest account its set-a-password link
        self.records = payments.payments
        settings = payments.settings
        named = settings.checkout_return_origins or [o for o in settings.cors_origins if o != "*"] + [
            origin_of(settings.public_base_url)]
        self.return_origins = frozenset(o.rstrip("/").lower() for o in named if o and o != "*")
        for event_type in CHECKOUT_EVENTS:
            payments.extra_events[event_type] = self.completed

    def check_return_url(self, field: str, url: str) -> str:
        try:
            origin = origin_of(url)
        except ValueError:
            origin = ""
        if origin not in self.return_origins:
            raise field_error(field, "Must be an http(s) address on an allowed origin "
                                     "(CHECKOUT_RETURN_ORIGINS).")
        return url

    async def create(self, user: dict | None, track: str, success_url: str, cancel_url: str,
                     idempotency_key: str | None) -> dict:
        """A Checkout Session for `track`'s price; the payment is recorded `created`."""
        client = self.payments.require_configured()
        errors: dict[str, list[str]] = {}
        if track not in self.payments.track_prices:
            errors["track"] = [f"No price for this track. Choose one of: {', '.join(self.payments.track_prices)}."]
        for field, url in (("success_url", success_url), ("cancel_url", cancel_url)):
            try:
                self.check_return_url(field, url)
            except ValidationFailed as exc:
                errors.update(exc.fields)
        if errors:
            raise ValidationFailed(errors)
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise ApiError(400, "Invalid Idempotency-Key",
                           "The Idempotency-Key header must be 1-255 printable ASCII characters.")
        amount, currency = self.payments.track_prices[track], self.payments.currencies[0]
        metadata = {"track": track, **({"user_id": str(user["_id"])} if user else {})}
        params: dict[str, Any] = {
            "mode": "payment", "success_url": with_session_id(success_url), "cancel_url": cancel_url,
            "metadata": metadata, "payment_intent_data": {"metadata": metadata},
            "line_items": [{"quantity": 1, "price_data": {
                "currency": currency, "unit_amount": amount,
                "product_data": {"name": f"ApraNova enrolment ({self.payments.settings.tracks.get(track, track)})"}}}],
        }
        if user:
            params.update(client_reference_id=str(user["_id"]), customer_email=user["email"])
        key = idempotency_key or f"apranova-{uuid.uuid4()}"
        try:
            session = await client.v1.checkout.sessions.create_async(params, {"idempotency_key": key})
        except stripe.StripeError as exc:
            raise stripe_failure(exc) from None
        now = utcnow()
        try:
            await self.records.insert_one({
                "user_id": user["_id"] if user else None, "checkout_session_id": session["id"], "amount": amount,
                "currency": currency, "track": track, "status": "created", "idempotency_key": key,
                "created_at": now, "updated_at": now})
        except DuplicateKeyError:  # a replay of the same request: the same session, recorded already
            existing = await self.records.find_one({"checkout_session_id": session["id"]})
            if existing is None or existing["user_id"] != (user["_id"] if user else None):
                raise ApiError(409, "Conflict", "This payment belongs to another request.") from None
        return {"url": session["url"], "sessionId": session["id"]}

    async def verify(self, user: dict | None, session_id: str | None) -> tuple[int, dict]:
        """The success page's check (with or without a token): the session
        as Stripe has it now, settled (and its student enrolled) when paid.
        (202, ...) while Stripe has the order but not yet the money."""
        client = self.payments.require_configured()
        if not session_id or not SESSION_ID.match(session_id):
            raise field_error("session_id", "A Stripe Checkout Session id (cs_...) is required.")
        record = await self.records.find_one({"checkout_session_id": session_id})
        if record is None or (user is not None and record["user_id"] not in (None, user["_id"])):
            raise NotFound("No checkout session has this id.", error="Checkout session not found")
        try:
            session = (await client.v1.checkout.sessions.retrieve_async(session_id)).to_dict()
        except stripe.StripeError as exc:
            raise stripe_failure(exc) from None
        record = await self._settle(session) or record
        answer = checkout_verify_model(session, record)
        if answer["enrolled"]:
            answer.update(await self._first_login(record))
        pending = session.get("status") == "complete" and not answer["paid"]
        return (202 if pending else 200), answer

    async def _first_login(self, record: dict) -> dict:
        """Tokens for the account this guest payment made, once."""
        if record.get("login") != "pending":
            return {}
        # Strings, not booleans: nx-27017 stores a boolean given to $set as 1, which `true` no longer matches.
        claimed = await self.records.find_one_and_update({"_id": record["_id"], "login": "pending"},
                                                         {"$set": {"login": "issued"}})
        user = await self.payments.accounts.get(record["user_id"]) if claimed else None
        if user is None or user.get("disabled"):
            return {}
        tokens = await self.payments.accounts.tokens.start_session(user["_id"])
        return {**tokens.as_dict(), "user": user_model(user)}

    async def completed(self, event_type: str, obj: dict, event_id: str) -> None:
        """The webhook's checkout events (verified by PaymentService)."""
        if not isinstance(obj.get("id"), str):
            log.info("event %s names no checkout session; ignored", event_id)
            return
        if await self._settle(obj, event_id) is None:
            log.info("event %s for unknown checkout session; ignored", event_id)

    async def _settle(self, session: dict, event_id: str | None = None) -> dict | None:
        """Mark the session's payment succeeded when Stripe says it is paid
        (once: the compare-and-set on its status), give a guest payment its
        account, and enrol (idempotent). Returns the payment record, None
        when unknown."""
        session_id = session["id"]
        if session.get("payment_status") == "paid":
            changes: dict[str, Any] = {"status": "succeeded"}
            if isinstance(session.get("payment_intent"), str):
                changes["payment_intent_id"] = session["payment_intent"]
            if event_id:
                changes["last_event_id"] = event_id
            await self.records.find_one_and_update(
                {"checkout_session_id": session_id, "status": {"$in": ["created", "failed"]}},
                {"$set": changes, "$currentDate": {"updated_at": True, "succeeded_at": True}})
        record = await self.records.find_one({"checkout_session_id": session_id})
        if record is None or record["status"] != "succeeded":
            return record
        if record["user_id"] is None:
            record = await self._guest_account(record, session)
        if record["user_id"] is not None:
            await self.payments.accounts.enroll(record["user_id"], record.get("track"))
        return record

    async def _guest_account(self, record: dict, session: dict) -> dict:
        """The account a paid guest session is for: the one of the email
        Stripe collected, or a new student. Bound to the payment by a
        compare-and-set on its empty user_id (parallel settlers agree)."""
        details = session.get("customer_details") or {}
        email = details.get("email") or session.get("customer_email")
        if not isinstance(email, str) or not email:
            log.warning("paid checkout session without an email; its payment waits for an account")
            return record
        accounts = self.payments.accounts
        user, created = await accounts.find_by_email(email), False
        if user is None:
            name = details.get("name") if isinstance(details.get("name"), str) and details.get("name") else \
                email.split("@", 1)[0]
            try:
                user = await accounts.create_user(email=email, name=name[:150], role="student", password=None,
                                                  track=record.get("track"), check_password=False)
                created = True
            except ValidationFailed:  # made at this very moment by a parallel settler or a sign-up
                user = await accounts.find_by_email(email)
        if user is None:
            return record
        bound = await self.records.find_one_and_update(
            {"_id": record["_id"], "user_id": None},
            {"$set": {"user_id": user["_id"], "login": "pending" if created else "none"}},
            return_document=ReturnDocument.AFTER)
        if created and self.welcome is not None:
            await self.welcome(email)
        return bound or await self.records.find_one({"_id": record["_id"]})


def with_session_id(url: str) -> str:
    """The original success page reads `?session_id=` but sends a bare URL:
    Stripe fills in {CHECKOUT_SESSION_ID} where the URL asks for it."""
    if "{CHECKOUT_SESSION_ID}" in url:
        return url
    return url + ("&" if "?" in url else "?") + "session_id={CHECKOUT_SESSION_ID}"


def origin_of(url: str) -> str:
    """scheme://host[:port] of an http(s) URL, lower-cased; ValueError otherwise."""
    parts = urllib.parse.urlsplit(url.strip())
    parts.port  # noqa: B018 - raises ValueError for a bad port
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


async def start(services: Any) -> None:
    async def welcome(email: str) -> None:
        """A password-reset link, so the account a guest payment made can sign
        in again (the original success page promises a mail); none without SMTP."""
        links = getattr(services, "email_links", None)  # started after this service
        if links is not None and links.mailer is not None:
            await links.request_reset(email)

    services.checkout = CheckoutService(services.payments, welcome)
