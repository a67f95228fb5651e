"""Strict request parsing that reports errors in the contract's field format."""
from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from services.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)

# pydantic error type -> message in the contract's voice
MESSAGES = {
    "missing": "This field is required.",
    "string_type": "Must be a string.",
    "int_type": "Must be an integer.",
    "float_type": "Must be a number.",
    "decimal_type": "Must be a number.",
    "bool_type": "Must be true or false.",
    "dict_type": "Must be an object.",
    "model_type": "Must be an object.",
    "list_type": "Must be a list.",
    "literal_error": "Not a valid choice.",
    "enum": "Not a valid choice.",
    "string_too_short": "This field may not be blank.",
    "string_too_long": "Ensure this field has no more than {max_length} characters.",
    "greater_than": "Must be greater than {gt}.",
    "greater_than_equal": "Must be at least {ge}.",
    "less_than_equal": "Must be at most {le}.",
    "extra_forbidden": "Unknown field.",
}


class RequestModel(BaseModel):
    """Base of every request body: exact JSON types, no coercion, so an
    object where a string belongs is a field error and never an operator."""
    model_config = ConfigDict(strict=True, extra="ignore", str_strip_whitespace=False)


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="allow")


def parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ValidationFailed({"non_field_errors": ["Expected a JSON object."]})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields: dict[str, list[str]] = {}
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "non_field_errors"
            template = MESSAGES.get(error["type"])
            if template is None:
                message = str(error["msg"]).removeprefix("Value error, ")
            else:
                message = template.format(**(error.get("ctx") or {}))
            if message not in fields.setdefault(name, []):
                fields[name].append(message)
        raise ValidationFailed(fields) from None


def iso(value: dt.datetime | None) -> str | None:
    """ISO-8601 UTC with a Z, as the contract shows ("2024-01-15T10:30:00Z")."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
