"""Shapes shared by every endpoint."""
from __future__ import annotations

from typing import Any, Optional

from models.base import ResponseModel


class ErrorOut(ResponseModel):
    """The contract's error envelope. Validation errors also carry
    ``{"field": ["message"]}`` at the top level."""
    error: str
    message: str
    details: Optional[Any] = None


class HealthOut(ResponseModel):
    status: str


class OpenAPIOut(ResponseModel):
    """An OpenAPI 3.1 document."""
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
