"""The workspace `url` of the owner's own create/GET answers, made to open
the IDE by itself (issue 21 §5): the original frontend's "Open workspace"
button does `window.open(url)` and never asks /api/users/workspace/open/ for
a ticket, so under WORKSPACE_EXPOSURE=network the bare origin lands on the
proxy's sign-in page. A one-time ticket is minted into that url instead.

The ticket is the one /open/ issues (access.py): single use,
bound to the caller's login session, stored only as its SHA-256. Its life is
PROXY_URL_TICKET_SECONDS (0: bare urls). Only the owner's own answers get
one: an admin's ?user_id= read never does (that stays the logged /open/
call), and response bodies are never logged."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode


async def owner_url(services: Any, viewer: dict, doc: dict, url: str | None) -> str | None:
    """`url` (the contract's, the workspace's origin) for `viewer`: with a
    fresh ticket when `viewer` owns the workspace and the proxy serves it."""
    settings = services.settings
    if (not url or settings.workspace_exposure != "network" or settings.proxy_url_ticket_seconds <= 0
            or viewer["_id"] != doc["owner_id"] or doc.get("state") == "deleted"):
        return url
    ticket = await services.proxy.issue_ticket(viewer, doc["owner_id"], seconds=settings.proxy_url_ticket_seconds)
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'ticket': ticket})}"
