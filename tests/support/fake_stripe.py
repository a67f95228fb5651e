"""A small Stripe on loopback: the few API calls the server makes, with
Stripe's wire format (form-encoded requests, JSON answers, error objects,
`Idempotency-Key` replay), plus Stripe's webhook signing scheme.

Checkout Sessions too: creating and retrieving them, and the hosted payment
page their `url` leads to (`/pay/<id>`, a plain HTML form standing in for
checkout.stripe.com): "Pay" marks the session paid, sends the signed
`checkout.session.completed` webhook when `webhook_url` is set, and redirects
to the session's success_url (with `{CHECKOUT_SESSION_ID}` filled in);
"Cancel" leads to its cancel_url.

The server reaches it only through STRIPE_API_BASE, with the official
`stripe` package, unchanged.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tornado import httpclient, web

from tests.support.fake_server import close, listen, Recorded

# error mode -> (HTTP status, Stripe error object)
ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "card_declined": (402, {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                            "message": "Your card has insufficient funds."}),
    "invalid_request": (400, {"type": "invalid_request_error", "code": "parameter_invalid_empty",
                              "param": "currency", "message": "Invalid currency."}),
    "api_error": (500, {"type": "api_error", "message": "An unknown error occurred."}),
    "rate_limit": (429, {"type": "invalid_request_error", "code": "rate_limit",
                         "message": "Too many requests hit the API too quickly."}),
    "bad_key": (401, {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****"}),
}
MIN_AMOUNT = {"usd": 50, "eur": 50, "jpy": 50}  # Stripe's minimum charge, minor units


@dataclass
class FakeStripe:
    api_key: str
    intents: dict[str, dict] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    idempotent: dict[str, tuple[dict, int, dict]] = field(default_factory=dict)  # key -> (params, status, body)
    fail_next: list[str] = field(default_factory=list)  # error modes, consumed one per request
    url: str = ""
    sessions: dict[str, dict] = field(default_factory=dict)  # Checkout Sessions by id
    webhook_url: str = ""  # where the hosted page's "Pay" sends checkout.session.completed (empty: nowhere)
    webhook_secret: str = ""

    async def start(self) -> "FakeStripe":
        self._http, self.url = listen(web.Application([
            (r"/v1/payment_intents", IntentsHandler, {"fake": self}),
            (r"/v1/payment_intents/([A-Za-z0-9_]+)", IntentHandler, {"fake": self}),
            (r"/v1/checkout/sessions", SessionsHandler, {"fake": self}),
            (r"/v1/checkout/sessions/([A-Za-z0-9_]+)", SessionHandler, {"fake": self}),
            (r"/pay/([A-Za-z0-9_]+)", HostedCheckoutPage, {"fake": self}),
        ], default_handler_class=NotFound, default_handler_args={"fake": self}))
        return self

    async def stop(self) -> None:
        await close(self._http)

    @property
    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/payment_intents"]

    # -- events, as Stripe would send them -----------------------------------------
    def event(self, event_type: str, obj: dict, event_id: str | None = None, created: int | None = None) -> dict:
        return {"id": event_id or f"evt_{secrets.token_hex(12)}", "object": "event", "api_version": "2024-06-20",
                "created": created or int(time.time()), "livemode": False, "type": event_type,
                "data": {"object": obj}, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}}

    def intent_event(self, event_type: str, intent_id: str, **changes: Any) -> dict:
        intent = dict(self.intents[intent_id])
        intent["status"] = {"payment_intent.succeeded": "succeeded",
                            "payment_intent.payment_failed": "requires_payment_method"}.get(event_type, intent["status"])
        if event_type == "payment_intent.succeeded":
            intent["amount_received"] = intent["amount"]
        if event_type == "payment_intent.payment_failed":
            intent["last_payment_error"] = {"code": "card_declined", "message": "Your card was declined."}
        intent.update(changes)
        return self.event(event_type, intent)

    def pay_session(self, session_id: str, email: str | None = None, name: str | None = None) -> dict:
        """What paying on the hosted page does: the session complete and
        paid, with a succeeded PaymentIntent and the customer's details
        (the email the session was made for, or the one typed)."""
        session = self.sessions[session_id]
        session["customer_details"] = {"email": session.get("customer_email") or email, "name": name}
        if session["payment_status"] != "paid":
            intent_id = f"pi_{secrets.token_hex(12)}"
            self.intents[intent_id] = {"id": intent_id, "object": "payment_intent", "amount": session["amount_total"],
                                       "amount_received": session["amount_total"], "currency": session["currency"],
                                       "status": "succeeded", "metadata": session["metadata"], "livemode": False,
                                       "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
                                       "created": int(time.time())}
            session.update(payment_status="paid", status="complete", payment_intent=intent_id)
        return session

    def refund_event(self, intent_id: str, amount_refunded: int | None = None) -> dict:
        intent = self.intents[intent_id]
        refunded = intent["amount"] if amount_refunded is None else amount_refunded
        charge = {"id": f"ch_{secrets.token_hex(12)}", "object": "charge", "amount": intent["amount"],
                  "amount_refunded": refunded, "currency": intent["currency"], "payment_intent": intent_id,
                  "refunded": refunded >= intent["amount"], "metadata": intent["metadata"], "status": "succeeded"}
        return self.event("charge.refunded", charge)


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme: `t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">`,
    written out here (not through the stripe package) so the server's
    verification is tested against an independent signer."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _nested(arguments: dict[str, list[bytes]]) -> dict[str, Any]:
    """Stripe's form encoding (`metadata[user_id]=7`) back into a dict."""
    params: dict[str, Any] = {}
    for key, values in arguments.items():
        parts = re.findall(r"[^\[\]]+", key)
        target = params
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = values[-1].decode()
    return params


class StripeHandler(web.RequestHandler):
    def initialize(self, fake: FakeStripe) -> None:
        self.fake = fake

    def prepare(self) -> None:
        params = _nested(self.request.body_arguments) if self.request.method == "POST" else \
            _nested(self.request.query_arguments)
        self.params = params
        self.fake.requests.append(Recorded(self.request.method, self.request.path, params,
                                           dict(self.request.headers)))
        self.set_header("Request-Id", f"req_{secrets.token_hex(7)}")
        if self.request.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
            self.stripe_error("bad_key")
        elif self.fake.fail_next:
            self.stripe_error(self.fake.fail_next.pop(0))

    def stripe_error(self, mode: str) -> None:
        status, error = ERRORS[mode]
        self.answer(status, {"error": error})

    def answer(self, status: int, body: dict) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if status >= 500:
            self.set_header("Stripe-Should-Retry", "false")
        self.finish(json.dumps(body))


class CreateHandler(StripeHandler):
    """A create (a PaymentIntent, a Checkout Session) with Stripe's
    Idempotency-Key rules; subclasses say what `create` makes."""

    def create(self) -> tuple[int, dict]:
        raise NotImplementedError

    def post(self) -> None:
        key = self.request.headers.get("Idempotency-Key")
        if key in self.fake.idempotent:
            params, status, body = self.fake.idempotent[key]
            if params != self.params:
                return self.answer(400, {"error": {
                    "type": "idempotency_error", "message": "Keys for idempotent requests can only be used with "
                    "the same parameters they were first used with."}})
            self.set_header("Idempotent-Replayed", "true")
            return self.answer(status, body)
        status, body = self.create()
        if key:
            self.fake.idempotent[key] = (self.params, status, body)
        self.answer(status, body)


class IntentsHandler(CreateHandler):
    def create(self) -> tuple[int, dict]:
        amount, currency = self.params.get("amount", ""), self.params.get("currency", "")
        if not amount.isdigit() or int(amount) < 1:
            return 400, {"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer",
                                   "param": "amount", "message": "Invalid integer: " + amount}}
        if int(amount) < MIN_AMOUNT.get(currency, 1):
            return 400, {"error": {"type": "invalid_request_error", "code": "amount_too_small", "param": "amount",
                                   "message": "Amount must be at least 50 cents"}}
        intent_id = f"pi_{secrets.token_hex(12)}"
        intent = {"id": intent_id, "object": "payment_intent", "amount": int(amount), "amount_received": 0,
                  "currency": currency, "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
                  "status": "requires_payment_method", "metadata": self.params.get("metadata", {}),
                  "description": self.params.get("description"), "livemode": False, "created": int(time.time()),
                  "automatic_payment_methods": {"enabled": self.params.get("automatic_payment_methods", {})
                                                .get("enabled") == "true"}}
        self.fake.intents[intent_id] = intent
        return 200, intent


class IntentHandler(StripeHandler):
    def get(self, intent_id: str) -> None:
        intent = self.fake.intents.get(intent_id)
        if intent is None:
            return self.answer(404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                               "param": "intent", "message": f"No such payment_intent: '{intent_id}'"}})
        self.answer(200, intent)


class NotFound(StripeHandler):
    def prepare(self) -> None:
        self.answer(404, {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL."}})


class SessionsHandler(CreateHandler):
    def create(self) -> tuple[int, dict]:
        item = self.params.get("line_items", {}).get("0", {})
        price = item.get("price_data", {})
        amount, currency = price.get("unit_amount", ""), price.get("currency", "")
        missing = [name for name in ("success_url", "cancel_url", "mode") if not self.params.get(name)]
        if missing or not amount.isdigit() or not currency or item.get("quantity") != "1":
            return 400, {"error": {"type": "invalid_request_error", "code": "parameter_missing",
                                   "param": (missing or ["line_items"])[0], "message": "Missing required param."}}
        session_id = f"cs_test_{secrets.token_hex(16)}"
        session = {"id": session_id, "object": "checkout.session", "mode": self.params["mode"],
                   "amount_total": int(amount) * int(item["quantity"]), "currency": currency,
                   "client_reference_id": self.params.get("client_reference_id"),
                   "customer_email": self.params.get("customer_email"), "metadata": self.params.get("metadata", {}),
                   "payment_status": "unpaid", "status": "open", "payment_intent": None,
                   "success_url": self.params["success_url"], "cancel_url": self.params["cancel_url"],
                   "url": f"{self.fake.url}/pay/{session_id}", "livemode": False, "created": int(time.time())}
        self.fake.sessions[session_id] = session
        return 200, session


class SessionHandler(StripeHandler):
    def get(self, session_id: str) -> None:
        session = self.fake.sessions.get(session_id)
        if session is None:
            return self.answer(404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                               "param": "session", "message": f"No such checkout.session: '{session_id}'"}})
        self.answer(200, session)


class HostedCheckoutPage(web.RequestHandler):
    """The browser's side of Stripe Checkout (no API key: a customer's page)."""
    def initialize(self, fake: FakeStripe) -> None:
        self.fake = fake

    def get(self, session_id: str) -> None:
        session = self.fake.sessions.get(session_id)
        if session is None:
            raise web.HTTPError(404)
        total = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
        self.write(f"""<!doctype html><html lang="en"><title>Fake Stripe Checkout</title>
<h1>Pay ApraNova</h1><p id="total">{html.escape(total)}</p>
<form method="post"><label>Email <input id="email" name="email" type="email"></label>
<label>Name <input id="name" name="name"></label><button id="pay" type="submit">Pay</button></form>
<a id="cancel" href="{html.escape(session['cancel_url'])}">Cancel</a></html>""")

    async def post(self, session_id: str) -> None:
        if session_id not in self.fake.sessions:
            raise web.HTTPError(404)
        session = self.fake.pay_session(session_id, self.get_body_argument("email", None) or None,
                                        self.get_body_argument("name", None) or None)
        if self.fake.webhook_url:
            payload = json.dumps(self.fake.event("checkout.session.completed", dict(session))).encode()
            await httpclient.AsyncHTTPClient().fetch(
                self.fake.webhook_url, method="POST", body=payload, raise_error=False,
                headers={"Content-Type": "application/json",
                         "Stripe-Signature": sign(payload, self.fake.webhook_secret)})
        self.redirect(session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id), status=303)

    def check_xsrf_cookie(self) -> None:  # a stand-in page; Stripe's own has its protections
        return None
