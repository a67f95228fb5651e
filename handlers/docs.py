"""The API's own description: GET /api/openapi.json and a readable
/api/docs page (our own small JS and CSS from static/docs/, inlined; no CDN).

The document is generated (services.openapi) from the application's route
table when first asked for, so it always matches the running code. Neither
endpoint is rate limited: client generators and docs pages poll them.
"""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from handlers.base import APIHandler, Operation
from models.common import OpenAPIOut
from services.openapi import build_document

DOCS_DIR = Path(__file__).resolve().parent.parent / "static" / "docs"
VERSION = "0.1.0"


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def route_rules(application) -> list[tuple[str, type]]:
    """(regex, handler class) of each of the application's routes, in order."""
    return [(rule.matcher.regex.pattern, rule.target) for rule in application.wildcard_router.rules
            if hasattr(rule.matcher, "regex")]


def openapi_document(application) -> dict:
    """The document of this application's routes, built once per application."""
    cached = application.settings.get("_openapi")
    if cached is None:
        cached = application.settings["_openapi"] = build_document(route_rules(application), version=VERSION)
    return cached


class OpenAPIHandler(APIHandler):
    rate_limited = False
    operations = {"get": Operation("This OpenAPI 3.1 document", responses={200: OpenAPIOut}, tags=("meta",))}

    def get(self) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.send(openapi_document(self.application))


class DocsHandler(APIHandler):
    rate_limited = False
    operations = {"get": Operation("This API's reference, as an HTML page", responses={200: "An HTML page"},
                                   tags=("meta",))}

    def page(self) -> tuple[str, str]:
        cached = self.application.settings.get("_docs_page")
        if cached is None:
            css = (DOCS_DIR / "docs.css").read_text(encoding="utf-8")
            script = (DOCS_DIR / "docs.js").read_text(encoding="utf-8")
            html = (DOCS_DIR / "index.html").read_text(encoding="utf-8")
            html = html.replace("/*STYLE*/", css).replace("/*SCRIPT*/", script)
            csp = (f"default-src 'none'; connect-src 'self'; img-src 'self' data:; style-src {_csp_hash(css)}; "
                   f"script-src {_csp_hash(script)}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
            cached = self.application.settings["_docs_page"] = (html, csp)
        return cached

    def get(self) -> None:
        html, csp = self.page()
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy", csp)
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(html)


class DocsRedirectHandler(APIHandler):
    """`/docs` is where people guess the reference lives; it lives at /api/docs.
    A temporary redirect (302), so the short path stays free for later use.
    An APIHandler without operations: other methods get the 405 envelope,
    and the OpenAPI document leaves it out."""
    rate_limited = False

    def get(self) -> None:
        self.redirect("/api/docs", permanent=False)

    head = get


routes = [
    (r"/api/openapi\.json", OpenAPIHandler),
    (r"/api/docs/?", DocsHandler),
    (r"/docs/?", DocsRedirectHandler),
]
