"""The HTTP edge shared by every API handler.

`APIHandler` owns, once for all endpoints: body size and content-type checks,
JSON parsing into strict models, authentication, rate limits, CORS, the
request id, and the single error renderer (the contract's envelope, never an
HTML page or a traceback).
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from tornado import httputil, web

from models.base import parse
from services.db import is_unavailable
from services.errors import ApiError, DatabaseUnavailable, ShuttingDown, Unauthorized, field_error
from services.netutil import client_ip
from services.tokens import AccessClaims

log = logging.getLogger("apranova.http")
M = TypeVar("M", bound=BaseModel)

JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]+\+)?json\s*(;.*)?$", re.I)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-Id"
EXPOSED_HEADERS = ("X-Request-Id, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, "
                   "X-RateLimit-Reset, X-Total-Count")


INT64_MAX = 2 ** 63 - 1  # BSON's largest integer: a larger id cannot be queried


def query_int(raw: str | None) -> int | None:
    """A query value as a non-negative int64: ASCII digits only ("²" is a
    digit to str.isdigit), at most 2^63 - 1. Raises ValueError."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > INT64_MAX:
        raise ValueError(raw)
    return int(raw)


@dataclass
class Operation:
    """What an endpoint method takes and returns; the OpenAPI document is
    generated from these and the route table."""
    summary: str
    body: type[BaseModel] | None = None
    responses: dict[int, Any] = field(default_factory=dict)  # status -> model or description
    auth: bool = False
    query: dict[str, str] = field(default_factory=dict)  # name -> description
    tags: tuple[str, ...] = ()
    description: str = ""
    deprecated: bool = False  # an alias kept for existing clients; the document says which path to use



@web.stream_request_body
class APIHandler(web.RequestHandler):
    operations: dict[str, Operation] = {}
    rate_limited = True  # count the request against the anon/user limit

    def initialize(self) -> None:
        self.services = self.application.settings["services"]
        self.config = self.services.settings
        self.started = time.monotonic()
        self.user: dict | None = None
        self.user_id: int | None = None
        self._claims: AccessClaims | Unauthorized | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        # True until prepare() has passed: an answer given before the body
        # is read makes Tornado close the connection, so we announce it.
        self.before_body = True

    # -- headers, CORS, request id -------------------------------------------------
    def set_default_headers(self) -> None:
        self.clear_header("Server")  # no version banner for scanners
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        incoming = self.request.headers.get("X-Request-Id", "")
        self.request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        self.set_header("X-Request-Id", self.request_id)
        origin = self.request.headers.get("Origin")
        if origin and self.origin_allowed(origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
            if self.origin_trusted(origin):
                self.set_header("Access-Control-Allow-Credentials", "true")
            self.add_header("Vary", "Origin")

    def origin_allowed(self, origin: str) -> bool:
        origins = self.application.settings["services"].settings.cors_origins
        return "*" in origins or origin in origins

    def origin_trusted(self, origin: str) -> bool:
        """Credentialed CORS (axios `withCredentials`, fetch `credentials:
        "include"`) only for an origin listed by name: allowing credentials
        to whatever origin `*` lets in would let any site send the user's
        cookies and read the answers."""
        return origin in self.application.settings["services"].settings.cors_origins

    def options(self, *args: Any) -> None:
        """CORS preflight."""
        origin = self.request.headers.get("Origin")
        if origin and self.origin_allowed(origin):
            self.set_header("Access-Control-Allow-Methods", ", ".join(sorted(self.allowed_methods())))
            self.set_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def allowed_methods(self) -> set[str]:
        return {m.upper() for m in self.operations} | {"OPTIONS"}

    def query_flag(self, name: str) -> bool:
        """A true/false query argument (also 1/0; default false). Raises 400."""
        raw = self.get_query_argument(name, "false").lower()
        if raw not in ("true", "false", "1", "0"):
            raise field_error(name, "Must be true or false.")
        return raw in ("true", "1")

    @property
    def client_ip(self) -> str:
        return client_ip(self.request.remote_ip or "", self.request.headers.get("X-Forwarded-For"),
                         self.config.trusted_proxies)

    # -- request body ------------------------------------------------------------
    async def prepare(self) -> None:
        self.application.inflight += 1
        self._counted = True
        limit = self.config.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise ApiError(413, "Payload too large", f"Request bodies are limited to {limit} bytes.")
        has_body = (length not in (None, "0")) or "chunked" in self.request.headers.get("Transfer-Encoding", "")
        if has_body and self.request.method in ("POST", "PUT", "PATCH", "DELETE"):
            content_type = self.request.headers.get("Content-Type", "")
            if not JSON_TYPE.match(content_type):
                raise ApiError(415, "Unsupported media type", "Send the body as application/json.")
        if self.request.method != "OPTIONS" and self.rate_limited:
            await self.apply_rate_limit()
        self.before_body = False

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.config.max_body_bytes:
            self._too_large = True
            self._chunks = []
        elif not self._too_large:
            self._chunks.append(chunk)

    @property
    def raw_body(self) -> bytes:
        if self._too_large:
            raise ApiError(413, "Payload too large",
                           f"Request bodies are limited to {self.config.max_body_bytes} bytes.")
        return b"".join(self._chunks)

    def json_body(self, **loads_options: Any) -> Any:
        """The JSON body; `loads_options` go to json.loads (e.g. payments
        parse numbers as Decimal)."""
        raw = self.raw_body
        if not raw.strip():
            return {}
        try:
            return json.loads(raw, **loads_options)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            raise ApiError(400, "Malformed JSON", "The request body is not valid JSON.") from None

    def parse_body(self, model: type[M], **loads_options: Any) -> M:
        return parse(model, self.json_body(**loads_options))

    # -- authentication and limits ------------------------------------------------
    def bearer_token(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def access_claims(self) -> AccessClaims:
        """The bearer token's verified claims, decoded once per request (the
        rate limit and authentication both need them). Raises 401."""
        if self._claims is None:
            token = self.bearer_token()
            if token is None:
                self._claims = Unauthorized("Authentication credentials were not provided.")
            else:
                try:
                    self._claims = self.services.tokens.access_claims(token)
                except Unauthorized as exc:
                    self._claims = exc
        if isinstance(self._claims, Unauthorized):
            raise self._claims
        return self._claims

    async def require_user(self) -> dict:
        """The authenticated caller, as stored now. Raises 401."""
        if self.user is None:
            claims = self.access_claims()
            self.user = await self.services.accounts.authenticate("", claims)
            self.user_id = self.user["_id"]
        return self.user

    async def apply_rate_limit(self) -> None:
        try:
            user_id: int | None = self.access_claims().user_id
        except Unauthorized:
            user_id = None
        if user_id is not None:
            decision = await self.services.ratelimits.hit("user", str(user_id))
        else:
            decision = await self.services.ratelimits.hit("anon", self.client_ip)
        for name, value in decision.headers().items():
            self.set_header(name, value)
        decision.raise_if_denied()

    # -- responses ---------------------------------------------------------------
    def compute_etag(self) -> None:
        """No ETag: API answers are `no-store`, and hashing each body cost ~2%."""
        return None

    def send(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body, separators=(",", ":"), default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every failure becomes the envelope (see `render_error`)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        error = error_of(exc, status_code, getattr(self, "request_id", None))
        if error.status >= 500 and self.ended_by_shutdown(exc):
            error = ShuttingDown()
        if error.status == 405:
            self.set_header("Allow", ", ".join(sorted(self.allowed_methods())))
        if getattr(self, "before_body", False):
            self.set_header("Connection", "close")  # else keep-alive clients reuse a closing connection
        render_error(self, error)

    def ended_by_shutdown(self, exc: BaseException | None) -> bool:
        """A failure of ours (not an ApiError) while the services close: the
        shutdown's doing (a closed database client), not a bug to trace."""
        return self.services.closing and not isinstance(exc, ApiError)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError) or (isinstance(value, web.HTTPError) and value.status_code < 500):
            return
        if self.ended_by_shutdown(value):
            log.info("request %s ended by the shutdown (%s)", getattr(self, "request_id", "-"), typ.__name__)
            return
        if value is not None and is_unavailable(value):
            log.warning("database unavailable: %s", type(value).__name__)
            self.services.record_dependency_error("database")
            return
        log.error("unhandled error (request %s)", getattr(self, "request_id", "-"), exc_info=(typ, value, tb))

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            self.application.inflight -= 1
            self._counted = False

    def on_connection_close(self) -> None:
        self.on_finish()


_DEFAULT_MESSAGES = {
    404: "The requested resource was not found.",
    405: "This method is not allowed on this resource.",
    400: "The request could not be understood.",
}


class NotFoundHandler(APIHandler):
    """Catch-all: JSON 404 for any unknown path and method. A CORS preflight
    of an unknown /api/ path from an allowed origin is answered (204, every
    method): browsers report a failed preflight as a CORS error, so the
    client would never see the 404 the request itself gets (with the CORS
    headers every answer carries). The original frontend calls endpoints of
    the original platform this server does not implement."""
    rate_limited = False

    def allowed_methods(self) -> set[str]:
        return {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

    async def prepare(self) -> None:
        await super().prepare()
        self.before_body = True
        origin = self.request.headers.get("Origin")
        if (self.request.method == "OPTIONS" and self.request.path.startswith("/api/") and origin
                and self.origin_allowed(origin)):
            return  # options() answers the preflight
        raise ApiError(404, "Not found", f"No endpoint at {self.request.path}.")


def error_of(exc: BaseException | None, status_code: int, request_id: str | None = None) -> ApiError:
    """Any failure as the contract's error: ours as raised, the database
    away as 503, Tornado's 4xx with its message, anything else a 500 that
    names only the request id."""
    if isinstance(exc, ApiError):
        return exc
    if exc is not None and is_unavailable(exc):
        return DatabaseUnavailable()
    if isinstance(exc, web.HTTPError) and status_code < 500:
        return ApiError(status_code, httputil.responses.get(status_code, "Error"),
                        exc.log_message or _DEFAULT_MESSAGES.get(status_code, "Request failed."))
    return ApiError(500, "Internal server error",
                    "Something went wrong on our side. Quote the request id when reporting it.",
                    details={"request_id": request_id} if request_id else None)


def render_error(handler: web.RequestHandler, error: ApiError, finish: Any = None) -> Any:
    """The one error renderer of every HTTP answer (API, static files, the
    status socket's plain-HTTP answers): the envelope as JSON, never an HTML
    page or a traceback. `finish`: the handler's own, when it overrides it."""
    handler.clear_header("Content-Type")
    handler.set_header("Content-Type", "application/json; charset=UTF-8")
    handler.set_status(error.status)
    for name, value in error.headers.items():
        handler.set_header(name, value)
    return (finish or handler.finish)(json.dumps(error.body(), separators=(",", ":"), default=str))
