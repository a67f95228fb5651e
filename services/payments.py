"""Payments through Stripe: PaymentIntents for enrolment, and the webhook
that records their outcome.

Rules, each in one place:

* `to_minor_units`: major units (a `Decimal`, never a float) -> the integer
  minor units Stripe counts in, per the currency's exponent.
* `PaymentService.quote`: what a create-payment request may ask for.
* `TRANSITIONS`: which webhook event may move a payment from which status;
  nothing ever moves a succeeded payment back to created or failed.
* `PaymentService.handle_event`: each Stripe event id is processed once (a
  unique index on `stripe_events.event_id`).

Amounts are stored as integers in minor units (nx-27017 has no Decimal128),
and "now" timestamps in updates use `$currentDate` (nx-27017 stores a
datetime given to `$set` as a string).
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

import stripe
from pymongo import DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from models.payments import payment_model
from services.accounts import AccountService
from services.errors import ApiError, Conflict, ServiceUnavailable, ValidationFailed, field_error
from services.settings import Settings, SettingsError
from services.tokens import utcnow

log = logging.getLogger("apranova.payments")

# Stripe's currency exponents (https://docs.stripe.com/currencies). Every
# other currency has two decimals. Three-decimal amounts must end in 0.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
STRIPE_MAX_MINOR = 99_999_999  # Stripe accepts at most eight digits
CURRENCY_CODE = re.compile(r"^[a-z]{3}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, Stripe's length limit
WEBHOOK_TOLERANCE = 300  # seconds; an older signature timestamp is a replay

# event type -> (new status, statuses it may move from). Failed may still
# succeed (the customer retries with another card); a refund may arrive
# before the success it follows; nothing leaves `refunded`.
TRANSITIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "payment_intent.succeeded": ("succeeded", ("created", "failed")),
    "payment_intent.payment_failed": ("failed", ("created", "failed")),
    "charge.refunded": ("refunded", ("created", "failed", "succeeded")),
}


def currency_exponent(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def to_minor_units(amount: Decimal, currency: str) -> int:
    """999.00 usd -> 99900, 500 jpy -> 500, 1.25 kwd -> 1250. Raises
    ValueError when the amount has more decimals than the currency has (0.1
    + 0.2 written as 0.30000000000000004 is refused, never rounded)."""
    exponent = currency_exponent(currency)
    with localcontext() as ctx:
        ctx.prec = 200
        ctx.traps[Inexact] = True
        try:
            minor = amount.scaleb(exponent)
        except (Inexact, InvalidOperation):
            minor = None
    if minor is None or not minor.is_finite() or minor != minor.to_integral_value():
        raise ValueError(_decimals_message(currency))
    value = int(minor)
    if exponent == 3 and value % 10:
        raise ValueError(_decimals_message(currency))
    return value


def _decimals_message(currency: str) -> str:
    places = min(currency_exponent(currency), 2)
    if places == 0:
        return f"{currency.upper()} has no minor unit: use a whole number."
    return f"Use at most {places} decimal places for {currency.upper()}."


def from_minor_units(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-currency_exponent(currency))


@dataclass(frozen=True)
class Quote:
    amount: int  # minor units
    currency: str
    track: str | None


class PaymentService:
    def __init__(self, db: AsyncDatabase, settings: Settings, client: stripe.StripeClient | None,
                 accounts: AccountService):
        self.payments = db.payments
        self.events = db.stripe_events
        self.accounts = accounts  # enrolment changes the user through it, never `users` directly
        # Webhook event types applied elsewhere (services/checkout.py): type -> async (object, event id).
        self.extra_events: dict[str, Any] = {}
        self.settings = settings
        self.client = client
        self.currencies = [code.lower() for code in settings.payment_currencies]
        self.max_amount = _parse_max_amount(settings.payment_max_amount)
        for code in self.currencies:
            if not CURRENCY_CODE.match(code):
                raise SettingsError(f"PAYMENT_CURRENCIES: not a currency code: {code!r}")
        if not self.currencies:
            raise SettingsError("PAYMENT_CURRENCIES: at least one currency is needed")
        self.track_prices = {track: self._price_from_settings(track, price)
                             for track, price in settings.track_prices.items()}

    def _price_from_settings(self, track: str, price: str) -> int:
        try:
            return self._check_amount(Decimal(price), self.currencies[0])
        except (InvalidOperation, ValidationFailed):
            raise SettingsError(f"TRACK_PRICES: {track}={price} is not a valid price in "
                                f"{self.currencies[0].upper()}") from None

    # -- create ------------------------------------------------------------------
    def quote(self, amount: Decimal | None, currency: str | None, track: str | None,
              metadata_track: str | None = None) -> Quote:
        """What the client may pay: an amount in an allowed currency, within
        the maximum (for the track its metadata names, if any), or the
        configured price of a track."""
        errors: dict[str, list[str]] = {}
        if currency is not None:
            currency = currency.strip().lower()
            if currency not in self.currencies:
                errors["currency"] = [f"Not a supported currency. Choose one of: {', '.join(self.currencies)}."]
        if track is not None:
            if amount is not None:
                errors["amount"] = ["Give either an amount or a track, not both."]
            elif track not in self.track_prices:
                errors["track"] = [f"No price for this track. Choose one of: {', '.join(self.track_prices)}."]
            elif currency is not None and currency != self.currencies[0] and "currency" not in errors:
                errors["currency"] = [f"Track prices are in {self.currencies[0].upper()}."]
            if metadata_track is not None and metadata_track != track:
                errors["metadata"] = ["metadata.track differs from track."]
            if errors:
                raise ValidationFailed(errors)
            return Quote(self.track_prices[track], self.currencies[0], track)
        if amount is None:
            errors["amount"] = ["This field is required."]
        if errors:
            raise ValidationFailed(errors)
        currency = currency or self.currencies[0]
        minor = self._check_amount(amount, currency)
        return Quote(minor, currency, self._paid_track(metadata_track, minor, currency))

    def _paid_track(self, track: str | None, minor: int, currency: str) -> str | None:
        """The original payment page pays an amount and names the track in
        `metadata` ({"track": "DP"}). A known track is enrolled on success, as
        `{"track": ...}` would be, if the amount is at least its price; an
        unknown one is ignored (never stored)."""
        if track is None or track not in self.settings.tracks:
            return None
        price = self.track_prices.get(track)
        if price is not None and currency != self.currencies[0]:
            raise field_error("currency", f"Track prices are in {self.currencies[0].upper()}.")
        if price is not None and minor < price:
            raise field_error("amount", f"Track {track} costs {from_minor_units(price, currency)} {currency.upper()}.")
        return track

    def _check_amount(self, amount: Decimal, currency: str) -> int:
        if not amount.is_finite():
            raise field_error("amount", "Must be a number.")
        if amount <= 0:
            raise field_error("amount", "Must be greater than 0.")
        largest = min(self.max_amount, from_minor_units(STRIPE_MAX_MINOR, currency))
        if amount > largest:
            raise field_error("amount", f"Must be at most {largest} {currency.upper()}.")
        try:
            return to_minor_units(amount, currency)
        except ValueError as exc:
            raise field_error("amount", str(exc)) from None

    def require_configured(self) -> stripe.StripeClient:
        if self.client is None or not self.settings.stripe_publishable_key:
            raise ServiceUnavailable("Payments not available",
                                     "Payments are not configured on this server.",
                                     "Set STRIPE_SECRET_KEY and STRIPE_PUBLISHABLE_KEY.", retry_after=3600)
        return self.client

    async def create_payment(self, user: dict, amount: Decimal | None, currency: str | None,
                             track: str | None, idempotency_key: str | None,
                             metadata_track: str | None = None) -> dict:
        """Create a PaymentIntent for the user and record the payment
        (`created`). The same Idempotency-Key gives the same PaymentIntent
        and the same single payment record."""
        client = self.require_configured()
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise ApiError(400, "Invalid Idempotency-Key",
                           "The Idempotency-Key header must be 1-255 printable ASCII characters.")
        quote = self.quote(amount, currency, track, metadata_track)
        key = idempotency_key or f"apranova-{uuid.uuid4()}"
        metadata = {"user_id": str(user["_id"])}
        if quote.track:
            metadata["track"] = quote.track
        params: dict[str, Any] = {
            "amount": quote.amount, "currency": quote.currency, "metadata": metadata,
            "automatic_payment_methods": {"enabled": True},
            "description": f"ApraNova enrolment{' (' + quote.track + ')' if quote.track else ''}",
        }
        try:
            intent = await client.v1.payment_intents.create_async(params, {"idempotency_key": key})
        except stripe.StripeError as exc:
            raise stripe_failure(exc) from None
        now = utcnow()
        payment = {
            "user_id": user["_id"], "payment_intent_id": intent["id"], "amount": int(intent["amount"]),
            "currency": intent["currency"], "track": quote.track, "status": "created",
            "idempotency_key": key, "created_at": now, "updated_at": now,
        }
        try:
            await self.payments.insert_one(payment)
        except DuplicateKeyError:
            # A replay of the same request: Stripe answered with the same
            # PaymentIntent, which is recorded already.
            existing = await self.payments.find_one({"payment_intent_id": intent["id"]})
            if existing is None or existing["user_id"] != user["_id"]:
                raise Conflict("This payment belongs to another request.") from None
        return {"clientSecret": intent["client_secret"], "publishableKey": self.settings.stripe_publishable_key,
                "paymentIntentId": intent["id"], "amount": int(intent["amount"]), "currency": intent["currency"]}

    async def list_for_user(self, user_id: int, limit: int) -> list[dict]:
        cursor = self.payments.find({"user_id": user_id}).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        return [payment_model(doc) async for doc in cursor.limit(limit)]

    # -- webhook -----------------------------------------------------------------
    def verify_event(self, payload: bytes, signature: str | None) -> dict:
        """The event, if Stripe signed it within the tolerance; else 400."""
        secret = self.settings.stripe_webhook_secret
        if not secret:
            raise ServiceUnavailable("Payments not available", "The Stripe webhook is not configured on this server.",
                                     "Set STRIPE_WEBHOOK_SECRET.", retry_after=3600)
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, WEBHOOK_TOLERANCE)
            event = json.loads(payload)
        except stripe.SignatureVerificationError:
            raise ApiError(400, "Invalid signature", "The Stripe-Signature header is missing, wrong or too old.") \
                from None
        except ValueError:  # also UnicodeDecodeError
            raise ApiError(400, "Malformed event", "The event body is not valid JSON.") from None
        data = event.get("data") if isinstance(event, dict) else None
        obj = data.get("object") if isinstance(data, dict) else None
        if not (isinstance(obj, dict) and isinstance(event.get("id"), str) and event["id"] and isinstance(event.get("type"), str)):
            raise ApiError(400, "Malformed event", "The event lacks an id, a type or a data object.")
        return event

    async def handle_event(self, event: dict) -> dict:
        """Apply a verified event once. The claim in `stripe_events` comes
        first; if applying fails the claim is dropped so Stripe's retry is
        applied (the transitions are idempotent, so a rare double apply is
        harmless)."""
        event_id, event_type = event["id"], event["type"]
        apply = self.extra_events.get(event_type) or (self._apply_intent if event_type in TRANSITIONS else None)
        if apply is None:
            return {"received": True, "ignored": True}
        try:
            await self.events.insert_one({"event_id": event_id, "type": event_type, "received_at": utcnow()})
        except DuplicateKeyError:
            return {"received": True, "duplicate": True}
        try:
            await apply(event_type, event["data"]["object"], event_id)
        except BaseException:
            try:
                await self.events.delete_one({"event_id": event_id})
            except Exception:  # noqa: BLE001 - the original error is the one to report
                log.warning("could not release the claim on event %s", event_id)
            raise
        return {"received": True}

    async def _apply_intent(self, event_type: str, obj: dict, event_id: str) -> None:
        new_status, from_statuses = TRANSITIONS[event_type]
        intent_id = obj.get("payment_intent") if event_type.startswith("charge.") else obj.get("id")
        if not isinstance(intent_id, str):
            log.info("event %s (%s) names no payment intent; ignored", event_id, event_type)
            return
        changes: dict[str, Any] = {"status": new_status, "last_event_id": event_id}
        stamps = {"updated_at": True, f"{new_status}_at": True}
        if new_status == "failed":
            error = obj.get("last_payment_error") or {}
            changes["failure_message"] = str(error.get("message") or "")[:500] if isinstance(error, dict) else ""
        if new_status == "refunded":
            refunded = obj.get("amount_refunded")
            if isinstance(refunded, int) and not isinstance(refunded, bool):
                await self.payments.update_one({"payment_intent_id": intent_id},
                                               {"$max": {"amount_refunded": refunded}})
            if obj.get("refunded") is not True:  # a partial refund: the payment stays as it is
                return
        payment = await self.payments.find_one_and_update(
            {"payment_intent_id": intent_id, "status": {"$in": list(from_statuses)}},
            {"$set": changes, "$currentDate": stamps}, return_document=ReturnDocument.AFTER)
        if payment is None:
            payment = await self.payments.find_one({"payment_intent_id": intent_id})
            if payment is None:
                log.info("event %s for unknown payment intent %s; ignored", event_id, intent_id)
                return
        if payment["status"] == "succeeded":
            await self._enroll(payment)

    async def _enroll(self, payment: dict) -> None:
        """The paying user is enrolled (idempotent: a retried event finds the
        same state; `enrolled_at` keeps the first enrolment)."""
        await self.accounts.enroll(payment["user_id"], payment.get("track"))


def _parse_max_amount(raw: str) -> Decimal:
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        value = Decimal(0)
    if not value.is_finite() or value <= 0:
        raise SettingsError(f"PAYMENT_MAX_AMOUNT: not a positive amount: {raw!r}")
    return value


def stripe_failure(exc: stripe.StripeError) -> ApiError:
    """A Stripe error as our envelope: the client's fault is a 4xx, Stripe's
    or the network's a 502/503; never a 500. Logged without secrets."""
    log.warning("stripe error %s (code=%s, http=%s, request=%s)", type(exc).__name__, getattr(exc, "code", None),
                exc.http_status, exc.request_id)
    details = {key: value for key, value in {"code": exc.code, "param": getattr(exc, "param", None),
                                             "stripe_request_id": exc.request_id}.items() if value}
    if isinstance(exc, stripe.CardError):
        decline = getattr(exc.error, "decline_code", None) if exc.error else None
        if decline:
            details["decline_code"] = decline
        return ApiError(402, "Payment declined", exc.user_message or "The card was declined.", details)
    if isinstance(exc, stripe.IdempotencyError):
        return Conflict("This Idempotency-Key was already used for a different payment.", "Idempotency key reused")
    if isinstance(exc, stripe.InvalidRequestError):
        return ApiError(400, "Payment rejected", exc.user_message or "The payment provider rejected the request.",
                        details)
    if isinstance(exc, stripe.RateLimitError):
        return ServiceUnavailable("Payment provider busy", "The payment provider is busy. Try again shortly.",
                                  retry_after=5)
    if isinstance(exc, stripe.APIConnectionError):
        return ApiError(502, "Payment provider unreachable", "The payment provider could not be reached. "
                        "Try again shortly.")
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return ApiError(502, "Payment provider error", "The payment provider refused this server's credentials.")
    return ApiError(502, "Payment provider error", "The payment provider failed to answer. Try again shortly.",
                    {k: v for k, v in details.items() if k == "stripe_request_id"} or None)


async def start(services: Any) -> None:
    """Build the Stripe client from settings (an instance: stripe's global
    state is never touched) with an async httpx transport, so calls never
    block the event loop."""
    settings = services.settings
    client = None
    if settings.stripe_secret_key:
        http_client = stripe.HTTPXClient(timeout=30)
        client = stripe.StripeClient(settings.stripe_secret_key, http_client=http_client, max_network_retries=2,
                                     base_addresses={"api": settings.stripe_api_base.rstrip("/")})
        services.on_close(http_client.close_async)
    services.payments = PaymentService(services.db, settings, client, services.accounts)
