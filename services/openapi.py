"""The OpenAPI 3.1 document, generated from the route table.

Nothing here is written by hand per endpoint: every path comes from a route
pattern, every method from the handler class's ``operations`` (a dict of
``handlers.base.Operation``), and every schema from the pydantic models those
operations name. A new handler module therefore appears in the document as
soon as its routes are in the table.

On top of what an Operation declares, the responses that the shared HTTP edge
(``handlers.base.APIHandler``) produces for every endpoint are added where they
apply: 400/413/415 for a JSON body, 401 for bearer auth, 429 for rate-limited
handlers, 503 when the database is involved, 404 when the path has parameters.

No Tornado import: the caller passes ``(regex, handler_class)`` pairs.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from pydantic import BaseModel

from models.common import ErrorOut

REF = "#/components/schemas/{model}"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

ERROR_SCHEMA = "Error"
VALIDATION_SCHEMA = "ValidationError"
WEBSOCKET_EXTENSION = "x-websocket"

DESCRIPTION = """\
The ApraNova API: accounts and JWT tokens, per-student browser IDE workspaces,
payments and Google/GitHub sign-in.

* **Trailing slashes** are optional on every path (`/api/users/profile` and
  `/api/users/profile/` are the same endpoint).
* **Authentication**: `Authorization: Bearer <access token>` from registration,
  login or refresh. A missing, expired or revoked token is a `401` with
  `WWW-Authenticate: Bearer`.
* **Errors** always use one JSON envelope, `{"error", "message", "details"?}`;
  never an HTML page. Validation errors (`400`) also carry the contract's
  per-field format at the top level, e.g. `{"email": ["This field is required."]}`,
  and the same map under `details`.
* **Bodies** are JSON (`Content-Type: application/json`, else `415`), at most
  the server's `MAX_BODY_BYTES` (else `413`).
* **Unknown paths** answer `404`, methods an endpoint does not list answer
  `405` with an `Allow` header, both in the envelope.
* **Rate limits** answer `429` with `Retry-After` and
  `X-RateLimit-Limit`/`-Remaining`/`-Reset`. Workspace creation
  (`RATE_LIMIT_WORKSPACE`, 10/hour) counts only the requests that create a
  workspace (answered `201`); starting a stopped one does not count.
* **Request ids**: every response carries `X-Request-Id` (the caller's own,
  when it sends a well-formed one); quote it when reporting a problem.
"""


def openapi_path(pattern: str) -> tuple[str, dict[str, str]]:
    """A Tornado route regex as an OpenAPI path template.

    ``r"/api/users/profile/?"`` -> ``"/api/users/profile/"``;
    ``r"/api/x/(?P<key>[0-9]+)/?"`` -> ``"/api/x/{key}/"`` with ``{"key": "[0-9]+"}``.
    Unnamed groups become ``{arg1}``, ``{arg2}``...
    """
    text = pattern.removeprefix("^").removesuffix("$")
    params: dict[str, str] = {}
    out: list[str] = []
    i = unnamed = 0
    while i < len(text):
        char = text[i]
        if char == "(":
            end = _group_end(text, i)
            group = text[i + 1:end]
            named = re.match(r"\?P<(\w+)>", group)
            if named:
                name, regex = named.group(1), group[named.end():]
            elif group.startswith("?:"):
                raise ValueError(f"cannot express a non-capturing group as an OpenAPI path: {pattern}")
            else:
                unnamed += 1
                name, regex = f"arg{unnamed}", group
            params[name] = regex
            out.append("{" + name + "}")
            i = end + 1
        elif char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif char == "/" and text[i + 1:i + 2] == "?":
            out.append("/")  # optional slash: the canonical form has it (as the contract writes paths)
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out), params


def _group_end(text: str, start: int) -> int:
    depth = 0
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced group in route {text!r}")


def _is_websocket(handler: type) -> bool:
    return any(base.__name__ == "WebSocketHandler" for base in handler.__mro__)


class _Schemas:
    """Collects the models' JSON schemas under components/schemas."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        for name, definition in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
            # Schemas are keyed by class name: two different models of one name would
            # silently document one endpoint with the other's fields.
            if self.components.setdefault(name, definition) != definition:
                raise ValueError(f"two different schemas are named {name!r}: rename one model")
        return {"$ref": REF.format(model=model.__name__)}


def _error_schemas() -> dict[str, Any]:
    error = ErrorOut.model_json_schema(mode="serialization")
    error["title"] = ERROR_SCHEMA
    error["description"] = "The error envelope of every failed request."
    error["additionalProperties"] = True
    validation = {
        **error,
        "title": VALIDATION_SCHEMA,
        "description": "A 400: the envelope, plus per-field messages at the top level "
                       "(`{\"email\": [\"This field is required.\"]}`), as the contract shows them. "
                       "Every property besides error/message/details is such a list.",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
    }
    return {ERROR_SCHEMA: error, VALIDATION_SCHEMA: validation}


def _error_response(status: int, description: str) -> dict[str, Any]:
    schema = VALIDATION_SCHEMA if status == 400 else ERROR_SCHEMA
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}}


STANDARD = {
    400: "Invalid request: malformed JSON, or field errors",
    401: "Missing, invalid, expired or revoked access token",
    403: "Authenticated, but not allowed",
    404: "Not found",
    405: "Method not allowed (see `Allow`)",
    409: "Conflict with the current state",
    413: "Request body larger than MAX_BODY_BYTES",
    415: "Request body is not application/json",
    429: "Rate limit exceeded (see `Retry-After`)",
    503: "A dependency (database, Docker, payment or sign-in provider) is unavailable; retry later",
}


def _response(status: int, target: Any, schemas: _Schemas) -> dict[str, Any]:
    if isinstance(target, type) and issubclass(target, BaseModel):
        if target is ErrorOut or issubclass(target, ErrorOut):
            return _error_response(status, STANDARD.get(status, "Error"))
        return {"description": (target.__doc__ or "").strip().split("\n")[0] or "OK",
                "content": {"application/json": {"schema": schemas.ref(target, "serialization")}}}
    text = str(target or STANDARD.get(status, "Response"))
    if status >= 400:
        return {"description": text,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=ERROR_SCHEMA)}}}}
    return {"description": text}


def _has_required(model: type[BaseModel]) -> bool:
    return any(field.is_required() for field in model.model_fields.values())


def build_operation(method: str, handler: type, op: Any, path_params: dict[str, str],
                    schemas: _Schemas) -> dict[str, Any]:
    websocket = _is_websocket(handler)
    rate_limited = getattr(handler, "rate_limited", False) and not websocket
    touches_db = rate_limited or op.auth or op.body is not None
    doc: dict[str, Any] = {
        "operationId": f"{handler.__name__.removesuffix('Handler')}_{method}",
        "summary": op.summary,
        "tags": list(op.tags),
    }
    description = op.description or (handler.__doc__ or "").strip()
    if description:
        doc["description"] = description
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": f"^(?:{regex})$"}} for name, regex in path_params.items()]
    parameters += [{"name": name, "in": "query", "required": False, "description": text,
                    "schema": {"type": "string"}} for name, text in op.query.items()]
    if parameters:
        doc["parameters"] = parameters
    if op.auth:
        doc["security"] = [{"bearerAuth": []}]
    if getattr(op, "deprecated", False):
        doc["deprecated"] = True
    if op.body is not None:
        doc["requestBody"] = {"required": _has_required(op.body),
                              "content": {"application/json": {"schema": schemas.ref(op.body, "validation")}}}
    responses = {str(status): _response(status, target, schemas) for status, target in sorted(op.responses.items())}
    automatic = []
    if op.body is not None:
        automatic += [400, 413, 415]
    elif op.query or path_params:
        automatic.append(400)  # a query or path value that does not parse is a field error
    if op.auth:
        automatic.append(401)
    if path_params:
        automatic.append(404)
    if rate_limited:
        automatic.append(429)
    if touches_db:
        automatic.append(503)
    for status in automatic:
        responses.setdefault(str(status), _error_response(status, STANDARD[status]))
    if websocket:
        doc[WEBSOCKET_EXTENSION] = True
        responses.setdefault("101", {"description": "Switching Protocols: the WebSocket is open"})
    if not responses:
        responses["200"] = {"description": "OK"}
    doc["responses"] = dict(sorted(responses.items()))
    return doc


def build_document(routes: Iterable[tuple[str, type]], *, title: str = "ApraNova API",
                   version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``(route regex, handler class)`` pairs.
    Handlers without ``operations`` (static files, catch-alls) are left out."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, None] = {}
    for pattern, handler in routes:
        operations = getattr(handler, "operations", None)
        if not isinstance(handler, type) or not operations:
            continue
        path, params = openapi_path(pattern)
        item = paths.setdefault(path, {})
        for method, op in operations.items():
            method = method.lower()
            if method not in METHODS or method in item:
                continue
            item[method] = build_operation(method, handler, op, params, schemas)
            tags.update(dict.fromkeys(op.tags))
    components = dict(sorted({**schemas.components, **_error_schemas()}.items()))
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": DESCRIPTION},
        "tags": [{"name": name} for name in tags],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                               "description": "The `access` token of a login, registration or refresh."}},
            "responses": {"MethodNotAllowed": _error_response(405, STANDARD[405]),
                          "NotFound": _error_response(404, "No endpoint at this path")},
        },
    }
