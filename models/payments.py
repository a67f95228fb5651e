"""Payment request and response shapes, and the one place a stored payment
becomes a response (`payment_model`)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Optional

from pydantic import Field, field_validator

from models.base import RequestModel, ResponseModel, iso
from services.errors import field_error

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 100


class PaymentMetadata(RequestModel):
    """The original payment page's `metadata`. Only `track` is read; any
    other key is dropped here, never stored nor sent to Stripe."""
    track: Optional[str] = Field(default=None, max_length=32, description="A TRACKS code: a successful payment "
                                 "enrols it (unknown codes are ignored).")


class CreatePaymentRequest(RequestModel):
    """`{amount, currency}` in major units (`999.00`), or `{track}` priced from
    TRACK_PRICES. The handler parses JSON numbers as `Decimal`, so `0.3` is
    exactly 0.3 and never the float 0.299999..."""
    amount: Optional[Decimal] = Field(default=None, description="Amount in major units, e.g. 999.00 (a JSON number).")
    currency: Optional[str] = Field(default=None, max_length=16, description="ISO currency code from PAYMENT_CURRENCIES "
                                    "(default: the first one).")
    track: Optional[str] = Field(default=None, max_length=32, description="Pay the configured price of this track "
                                 "instead of giving an amount.")
    metadata: Optional[PaymentMetadata] = Field(default=None, description="As the original payment page sends it, "
                                                "with an amount: `{\"track\": \"DP\"}`.")

    @field_validator("amount", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        """Only a JSON number: not a string, a boolean (an int in Python) or
        an object. A float (when parsed without Decimal) is taken by its
        shortest repr, so 0.1+0.2 stays 0.30000000000000004 and is refused."""
        if value is None or isinstance(value, Decimal):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("Must be a number.")
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


class CreatePaymentOut(ResponseModel):
    clientSecret: str
    publishableKey: str
    paymentIntentId: str
    amount: int = Field(description="In the currency's minor units (cents), as Stripe counts: 999.00 usd is 99900.")
    currency: str


class CheckoutRequest(RequestModel):
    """The original "Get started" page's body. The amount is the track's
    price (TRACK_PRICES), never the client's."""
    track: str = Field(max_length=32, description="A TRACK_PRICES code.")
    success_url: str = Field(max_length=2048, description="Where Stripe sends the paying user back; may hold "
                             "Stripe's {CHECKOUT_SESSION_ID}. Only under CHECKOUT_RETURN_ORIGINS.")
    cancel_url: str = Field(max_length=2048, description="Where Stripe sends a user who gives up; same origins.")
    amount: None = Field(default=None, description="Refused: the price is the track's.")

    @field_validator("amount", mode="before")
    @classmethod
    def _no_amount(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("The amount is the track's price (TRACK_PRICES); do not send one.")
        return None


class CheckoutOut(ResponseModel):
    url: str = Field(description="The Stripe-hosted Checkout page to send the browser to.")
    sessionId: str


class CheckoutVerifyOut(ResponseModel):
    """`success` is what the original success page reads. The tokens come
    once, to the first verify of a guest payment that made its account."""
    success: bool = Field(description="Paid, and the student enrolled.")
    session_id: str
    status: Optional[str] = Field(default=None, description="Stripe's session status: open, complete or expired.")
    payment_status: Optional[str] = Field(default=None, description="Stripe's: paid, unpaid or no_payment_required.")
    paid: bool
    enrolled: bool = Field(description="The payment is settled and the student enrolled in `track`.")
    enrollment_status: str
    track: Optional[str] = None
    amount: int = Field(description="In minor units.")
    currency: str
    access: Optional[str] = None
    refresh: Optional[str] = None
    user: Optional[dict[str, Any]] = None


class PaymentOut(ResponseModel):
    id: str
    paymentIntentId: str = Field(description="Empty for a Checkout payment until Stripe has made its intent.")
    checkoutSessionId: Optional[str] = Field(default=None, description="Only on a Stripe Checkout payment.")
    amount: int = Field(description="In minor units.")
    currency: str
    status: str = Field(description="created, succeeded, failed or refunded.")
    track: Optional[str] = None
    amount_refunded: int = 0
    created_at: str
    updated_at: str


class PaymentListOut(ResponseModel):
    payments: list[PaymentOut]


class WebhookOut(ResponseModel):
    received: bool
    duplicate: bool = False
    ignored: bool = False


def payment_model(payment: dict) -> dict:
    """The one place a stored payment becomes a response (never the client
    secret or the idempotency key)."""
    return {
        "id": str(payment["_id"]),
        "paymentIntentId": payment.get("payment_intent_id") or "",
        "amount": int(payment["amount"]),
        "currency": payment["currency"],
        "status": payment["status"],
        "track": payment.get("track"),
        "amount_refunded": int(payment.get("amount_refunded") or 0),
        "created_at": iso(payment["created_at"]),
        "updated_at": iso(payment.get("updated_at") or payment["created_at"]),
        # Only on Checkout payments: the PaymentIntent list keeps its shape.
        **({"checkoutSessionId": payment["checkout_session_id"]} if payment.get("checkout_session_id") else {}),
    }


def parse_limit(raw: str | None) -> int:
    """`?limit=` for lists: 1..MAX_LIST_LIMIT, default DEFAULT_LIST_LIMIT."""
    if raw is None or raw == "":
        return DEFAULT_LIST_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise field_error("limit", f"Must be a whole number from 1 to {MAX_LIST_LIMIT}.")
    return int(raw)


def checkout_verify_model(session: dict, payment: dict) -> dict:
    """A retrieved Checkout Session and our record of it as the verify answer."""
    settled = payment["status"] == "succeeded" and payment.get("user_id") is not None
    return {"success": settled, "session_id": session["id"], "status": session.get("status"),
            "payment_status": session.get("payment_status"), "paid": session.get("payment_status") == "paid",
            "enrolled": settled, "enrollment_status": "ENROLLED" if settled else "PENDING_PAYMENT",
            "track": payment.get("track"), "amount": int(payment["amount"]), "currency": payment["currency"]}
