"""Workspace hosts and origins: which user a host name belongs to, and the
origins of the API and of each workspace. Every workspace is its own origin
(``ws-<user id>.localhost:<port>`` by default), so one workspace's pages can
never read another's, or the API's, cookies and storage. Used by the
workspace facade (its URL) and by the proxy (proxy/)."""
from __future__ import annotations

import functools
import re
import types
import urllib.parse

from services.settings import Settings, workspace_host_regex


def owner_of_host(settings: Settings, host_name: str) -> int | None:
    """The user id a workspace host name belongs to, or None."""
    match = _host_pattern(settings.workspace_host_template).fullmatch(host_name.lower())
    return int(match["user_id"]) if match else None


@functools.lru_cache(maxsize=8)
def _host_pattern(template: str) -> re.Pattern:
    """Compiled once per template (asked on every proxied request)."""
    return re.compile(workspace_host_regex(types.SimpleNamespace(workspace_host_template=template)))


def public_origin(settings: Settings, scheme: str, port: int | None) -> str:
    """The API's own origin (the dashboard): PUBLIC_URL, else localhost on
    the port the request came in on (or PORT)."""
    if settings.public_url:
        return settings.public_url
    return _origin(scheme, "localhost", port or settings.port)


def workspace_origin(settings: Settings, user_id: int, scheme: str, port: int | None) -> str:
    """The workspace's own origin: its host name, with the scheme and port of
    PUBLIC_URL (or else of the request that asked)."""
    if settings.public_url:
        parts = urllib.parse.urlsplit(settings.public_url)
        scheme, port = parts.scheme, parts.port
    host = settings.workspace_host_template.strip().lower().format(user_id=user_id)
    return _origin(scheme, host, port)


def _origin(scheme: str, host: str, port: int | None) -> str:
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"
