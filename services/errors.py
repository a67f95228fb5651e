"""Errors that services raise and the HTTP edge renders.

Services never import Tornado; they raise these, and ``handlers.base``
turns them into the contract's envelope ``{error, message, details?}``.
"""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with an HTTP status and the contract's envelope."""

    def __init__(self, status: int, error: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        body.update(self.extra)
        return body


class ValidationFailed(ApiError):
    """400 with per-field messages.

    The body carries the contract's field format at the top level
    (``{"email": ["..."]}``) next to ``error``/``message``, and the same map
    under ``details`` for clients that only read the envelope.
    """

    def __init__(self, fields: dict[str, list[str]]):
        super().__init__(400, "Validation error", "Some fields are invalid.", details=fields)
        self.fields = fields

    def body(self) -> dict[str, Any]:
        body = dict(self.fields)
        body.update(super().body())
        return body


def field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed({field: [message]})


class NotFound(ApiError):
    def __init__(self, message: str = "Not found.", error: str = "Not found"):
        super().__init__(404, error, message)


class Unauthorized(ApiError):
    def __init__(self, message: str = "Authentication credentials were not provided or are invalid.",
                 error: str = "Unauthorized"):
        super().__init__(401, error, message, headers={"WWW-Authenticate": 'Bearer realm="api"'})


class Forbidden(ApiError):
    def __init__(self, message: str = "You do not have permission to perform this action.",
                 error: str = "Forbidden"):
        super().__init__(403, error, message)


class Conflict(ApiError):
    def __init__(self, message: str, error: str = "Conflict"):
        super().__init__(409, error, message)


class ServiceUnavailable(ApiError):
    def __init__(self, error: str = "Service unavailable",
                 message: str = "The service is temporarily unavailable. Try again shortly.",
                 details: Any = None, retry_after: int = 5):
        super().__init__(503, error, message, details, headers={"Retry-After": str(retry_after)})


class ShuttingDown(ServiceUnavailable):
    """The process is stopping: the request could not be finished."""

    def __init__(self) -> None:
        super().__init__("Shutting down", "The server is restarting. Try again in a moment.", retry_after=2)


class DatabaseUnavailable(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__("Database unavailable", "The database is not reachable. Try again shortly.")


class RateLimited(ApiError):
    def __init__(self, retry_after: int, headers: dict[str, str], message: str = "Too many requests. Try again later."):
        headers = dict(headers)
        headers["Retry-After"] = str(max(1, retry_after))
        super().__init__(429, "Rate limit exceeded", message, details={"retry_after": max(1, retry_after)},
                         headers=headers)
