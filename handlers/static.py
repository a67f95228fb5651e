"""The browser client: static/ served at `/`.

* `/` and the client-side routes (`/login`, `/student/dashboard`, ...) all
  answer static/index.html; the single-page app picks the view from the URL.
  The page is never cached (`no-cache`), so a new release is seen at once.
* Assets are referenced from index.html as `/static/v-<hash>/...`, where the
  hash covers every file under static/ (computed at start-up). A versioned
  URL therefore never changes content and is cached for a year
  (`immutable`); ES-module imports are relative, so they inherit the version.
  Unversioned `/static/...` URLs also work and are revalidated (ETag).
* Strict security headers: a Content-Security-Policy without inline scripts
  or styles, no framing, no referrer, nosniff.
* Errors (404 of a missing asset, 405) use the API's JSON envelope; unknown
  paths elsewhere, `/api/*` included, fall through to the catch-all 404.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
from pathlib import Path
from typing import Any

from tornado import web

from handlers.base import render_error
from services.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
VERSIONED_CACHE = "public, max-age=31536000, immutable"
SPA_ROUTES = (r"/(?:login|signup|profile|(?:student|trainer|admin|superadmin)/dashboard"
              r"|verify-email|reset-password|forgot-password)?/?")  # the last three: pages of mailed links
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def static_version(root: Path = STATIC_DIR) -> str:
    """A short hash of every file's path and bytes under static/."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return "v-" + digest.hexdigest()[:12]


def security_headers(handler: web.RequestHandler) -> None:
    handler.clear_header("Server")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")
    handler.set_header("X-Frame-Options", "DENY")
    handler.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)


def json_error(handler: web.RequestHandler, status_code: int, kwargs: dict[str, Any]) -> None:
    """Static errors through the API's one renderer (never Tornado's HTML
    page), with messages that do not echo file-system paths."""
    exc = kwargs.get("exc_info", (None, None, None))[1]
    messages = {403: ("Forbidden", "This path is outside the static files."),
                404: ("Not found", f"No file at {handler.request.path}."),
                405: ("Method Not Allowed", "This method is not allowed on this resource.")}
    error, message = messages.get(status_code, ("Error", "Request failed."))
    if status_code >= 500 or not isinstance(exc, web.HTTPError):
        status_code, error, message = 500, "Internal server error", "Something went wrong on our side."
    handler.set_header("Cache-Control", "no-store")
    if status_code == 405:
        handler.set_header("Allow", "GET, HEAD")
    render_error(handler, ApiError(status_code, error, message))


class PageHandler(web.RequestHandler):
    """index.html for `/` and every client-side route, with the asset version
    and the public configuration (tracks) filled in."""
    SUPPORTED_METHODS = ("GET", "HEAD")

    def initialize(self) -> None:
        self.settings_obj = self.application.settings["services"].settings

    def set_default_headers(self) -> None:
        security_headers(self)

    def page(self) -> bytes:
        cached = self.application.settings.get("_index_html")
        if cached is None:
            version = static_version()
            config = {"tracks": self.settings_obj.tracks, "version": version}
            text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
            text = text.replace('"/static/', f'"/static/{version}/')
            text = text.replace('content="{config}"', f'content="{html.escape(json.dumps(config), quote=True)}"')
            cached = self.application.settings["_index_html"] = text.encode()
        return cached

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(self.page())

    def head(self) -> None:
        body = self.page()
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Length", str(len(body)))
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        json_error(self, status_code, kwargs)


class AssetHandler(web.StaticFileHandler):
    """Files under static/; `/static/v-<hash>/app.js` is cached forever."""

    def set_default_headers(self) -> None:
        security_headers(self)

    async def get(self, version: str | None, path: str, include_body: bool = True) -> None:
        self.versioned = version is not None
        if "\x00" in path:  # os.stat/open raise ValueError on a NUL: no file has one in its name
            raise web.HTTPError(404)
        await super().get(path, include_body)

    async def head(self, version: str | None, path: str) -> None:  # type: ignore[override]
        await self.get(version, path, include_body=False)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", VERSIONED_CACHE if self.versioned else "no-cache")

    def get_content_type(self) -> str:
        if self.absolute_path.endswith(".js"):
            return "text/javascript; charset=UTF-8"
        return super().get_content_type()

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if os.path.basename(absolute_path).startswith("."):
            raise web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        json_error(self, status_code, kwargs)


routes = [
    (SPA_ROUTES, PageHandler),
    (r"/static/(v-[0-9a-f]{12}/)?(.+)", AssetHandler, {"path": str(STATIC_DIR)}),
]
