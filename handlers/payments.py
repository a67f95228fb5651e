"""Payments: create a Stripe PaymentIntent, receive Stripe's webhook, list
the caller's payments."""
from __future__ import annotations

from decimal import Decimal

from handlers.base import APIHandler, Operation
from models.common import ErrorOut
from models.payments import (CheckoutOut, CheckoutRequest, CheckoutVerifyOut, CreatePaymentOut, CreatePaymentRequest,
                             PaymentListOut, WebhookOut, parse_limit)

PAYMENTS = ("payments",)


def _no_constants(name: str) -> None:
    """NaN and Infinity are not JSON; Python's parser would accept them."""
    raise ValueError(f"{name} is not valid JSON")


class CreatePaymentHandler(APIHandler):
    operations = {"post": Operation(
        "Start a payment: a Stripe PaymentIntent for {amount, currency} or {track}", body=CreatePaymentRequest,
        auth=True, tags=PAYMENTS,
        description="Send an `Idempotency-Key` header to make retries safe: the same key gives the same "
                    "PaymentIntent. Amounts in the response are in minor units (999.00 usd is 99900).",
        responses={200: CreatePaymentOut, 400: ErrorOut, 401: ErrorOut, 402: ErrorOut, 409: ErrorOut,
                   502: ErrorOut, 503: ErrorOut})}

    async def post(self) -> None:
        user = await self.require_user()
        self.services.payments.require_configured()
        request = self.parse_body(CreatePaymentRequest, parse_float=Decimal, parse_constant=_no_constants)
        result = await self.services.payments.create_payment(
            user, request.amount, request.currency, request.track, self.request.headers.get("Idempotency-Key"),
            metadata_track=request.metadata.track if request.metadata else None)
        self.send(result)


class CheckoutHandler(APIHandler):
    operations = {"post": Operation(
        "Start a Stripe Checkout Session for a track's price (the original \"Get started\" page)",
        body=CheckoutRequest, tags=PAYMENTS,
        description="Answers `{url}`: send the browser there. With a bearer token the session is the "
                    "caller's; without one it is a guest checkout (Stripe asks for the email). The amount is the "
                    "track's TRACK_PRICES price; success_url and cancel_url must be under "
                    "CHECKOUT_RETURN_ORIGINS (`?session_id={CHECKOUT_SESSION_ID}` is added when missing). An "
                    "`Idempotency-Key` header gives the same session again.",
        responses={200: CheckoutOut, 400: ErrorOut, 401: ErrorOut, 409: ErrorOut, 502: ErrorOut, 503: ErrorOut})}

    async def post(self) -> None:
        user = await self.require_user() if self.bearer_token() else None  # the original page sends none
        self.services.payments.require_configured()
        request = self.parse_body(CheckoutRequest)
        self.send(await self.services.checkout.create(user, request.track, request.success_url, request.cancel_url,
                                                      self.request.headers.get("Idempotency-Key")))


class CheckoutVerifyHandler(APIHandler):
    operations = {"get": Operation(
        "A Checkout Session as Stripe has it now; a paid one enrols (the original success page)",
        tags=PAYMENTS, query={"session_id": "The cs_... id Stripe put in the success_url."},
        description="No token needed (the session id is the capability); with one, another user's session "
                    "is a 404. 202 while Stripe has the order but not the money yet. A paid guest session "
                    "makes (or enrols) the account of its email; the first verify of one that made an account "
                    "also answers `access`, `refresh` and `user`.",
        responses={200: CheckoutVerifyOut, 202: CheckoutVerifyOut, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut,
                   502: ErrorOut,
                   503: ErrorOut})}

    async def get(self) -> None:
        user = await self.require_user() if self.bearer_token() else None
        status, answer = await self.services.checkout.verify(user, self.get_query_argument("session_id", None))
        self.send(answer, status=status)


class WebhookHandler(APIHandler):
    """Called by Stripe: no user, no per-user rate limit; the signature is
    the authentication, checked over the raw body."""
    rate_limited = False
    operations = {"post": Operation(
        "Stripe webhook (signed with Stripe-Signature)", tags=PAYMENTS,
        responses={200: WebhookOut, 400: ErrorOut, 503: ErrorOut})}

    async def post(self) -> None:
        payments = self.services.payments
        event = payments.verify_event(self.raw_body, self.request.headers.get("Stripe-Signature"))
        self.send(await payments.handle_event(event))


class MyPaymentsHandler(APIHandler):
    operations = {"get": Operation(
        "The caller's payments, newest first", auth=True, tags=PAYMENTS,
        query={"limit": "How many (1-100, default 50)."},
        responses={200: PaymentListOut, 400: ErrorOut, 401: ErrorOut})}

    async def get(self) -> None:
        user = await self.require_user()
        limit = parse_limit(self.get_query_argument("limit", None))
        self.send({"payments": await self.services.payments.list_for_user(user["_id"], limit)})


routes = [
    (r"/api/payments/create-payment/?", CreatePaymentHandler),
    (r"/api/payments/webhook/?", WebhookHandler),
    (r"/api/payments/create-simple-checkout/?", CheckoutHandler),
    (r"/api/payments/verify-checkout-session/?", CheckoutVerifyHandler),
    (r"/api/payments/my-payments/?", MyPaymentsHandler),
]
