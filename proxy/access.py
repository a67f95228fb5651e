"""Who may pass the workspace proxy: tickets, cookies and the checks made
on every proxied request and, every second, for every open WebSocket.

* ``POST /api/users/workspace/open/`` issues a one-time ticket (stored as its
  SHA-256 in ``workspace_tickets``, TTL-indexed) for the caller's workspace or,
  for an admin, a student's (that call is logged in ``workspace_access_log``).
* The proxy redeems it once (``find_one_and_delete``: atomic, so it works
  across processes) and sets a cookie on that workspace's host only: a signed
  token naming the viewer, the login session (``sid``) and the workspace owner.
* Every request re-checks the session (`AccountService.session_user`), the
  viewer's right to the workspace and the workspace's state, so logout, token
  reuse revocation, a role change or a delete end access at once.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Callable
from urllib.parse import urlsplit

from services.accounts import ADMIN_ROLES
from services.tokens import utcnow
from proxy.conn import LanePool
from proxy.headers import cookie_values
from proxy.runtime import OpenSockets, UpstreamPool, WorkspaceCache

log = logging.getLogger("apranova.proxy")
COOKIE_KEY_LABEL = b"apranova workspace proxy cookie"  # derives the cookie key from JWT_SECRET
SWEEP_SECONDS = 1.0
GRANT_CACHE_SIZE = 10_000
_UNKNOWN = object()


def cross_site(method: str, header: Callable[[str], str | None], host: str) -> bool:
    """A request another site's page made that is not a top-level page load.
    Under a wildcard domain every workspace is the same *site* as its
    siblings, so SameSite=Lax cookies go with a sibling's fetch, img or
    iframe; the browser says who asked in Sec-Fetch-Site/-Mode/-Dest (all
    current browsers), else Origin, else Referer (then only a GET or HEAD
    that asks for a page passes)."""
    site = (header("Sec-Fetch-Site") or "").lower()
    if site:
        if site in ("same-origin", "none"):  # the workspace's own page, or the user typing the URL
            return False
        navigation = (header("Sec-Fetch-Mode") or "").lower() == "navigate" \
            and (header("Sec-Fetch-Dest") or "document").lower() == "document"
        return not (navigation and method in ("GET", "HEAD"))
    own = host.lower()
    origin = header("Origin")
    if origin is not None:
        return urlsplit(origin).netloc.lower() != own  # "null" (a sandboxed or opaque origin) too
    referer = header("Referer")
    if referer and urlsplit(referer).netloc.lower() != own:
        return method not in ("GET", "HEAD") or "text/html" not in (header("Accept") or "")
    return False


class Denied(Exception):
    """Why nothing is forwarded: `reason` (login, forbidden, none, stopped,
    provisioning, failed, busy) picks the page the user sees."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Grant:
    viewer_id: int
    session_id: str
    owner_id: int
    admin: bool  # opened by an admin through the logged API call
    expires: int = 0  # the cookie's expiry (epoch seconds), when the grant came from one


@dataclass(frozen=True)
class Access:
    grant: Grant
    doc: dict  # the workspace, running


class ProxyAccess:
    def __init__(self, services: Any):
        self.services = services
        self.settings = services.settings
        db = services.db
        self.tickets = db.workspace_tickets
        self.access_log = db.workspace_access_log
        self.key = hmac.new(services.tokens.secret.encode(), COOKIE_KEY_LABEL, hashlib.sha256).digest()
        self.sockets = OpenSockets(self.settings.proxy_max_sockets_per_login)  # open proxied WebSockets
        self.pool = UpstreamPool()
        self.lane_pool = LanePool()  # the fast lane's (proxy/lane.py)
        self.workspaces = WorkspaceCache(services)
        self.grants: dict[tuple[str, int], Grant | None] = {}  # verified cookies (see cached_grant)
        # Called with the workspace id once per proxied request and per relayed
        # chunk or WebSocket read (activity for idle culling); no-op by default.
        self.on_activity: Callable[[Any], None] = _no_activity
        self._sweeper: asyncio.Task | None = None

    # -- tickets ---------------------------------------------------------------------------
    async def issue_ticket(self, viewer: dict, owner_id: int, seconds: int | None = None) -> str:
        """A one-time ticket for `viewer` (an authenticated user) to open
        `owner_id`'s workspace, for `seconds` (default PROXY_TICKET_SECONDS);
        an admin opening someone else's is logged."""
        admin = viewer["_id"] != owner_id
        ticket = secrets.token_urlsafe(32)
        now = utcnow()
        await self.tickets.insert_one({
            "_id": _digest(ticket), "user_id": viewer["_id"], "session_id": viewer["_session_id"],
            "owner_id": owner_id, "admin": admin,
            "expires_at": now + dt.timedelta(seconds=seconds or self.settings.proxy_ticket_seconds)})
        if admin:
            await self.access_log.insert_one({"action": "open workspace", "actor_id": viewer["_id"],
                                              "actor_email": viewer.get("email"), "owner_id": owner_id, "at": now})
            log.warning("admin %s <%s> opened the workspace of user %s", viewer["_id"], viewer.get("email"), owner_id)
        return ticket

    async def redeem(self, ticket: str, owner_id: int) -> Grant | None:
        """The ticket's grant, once; None when unknown, used, expired or for
        another workspace. Deleted whatever the outcome: one try per ticket."""
        doc = await self.tickets.find_one_and_delete({"_id": _digest(ticket)})
        if doc is None or doc["owner_id"] != owner_id or _aware(doc["expires_at"]) <= utcnow():
            return None
        return Grant(doc["user_id"], doc["session_id"], owner_id, bool(doc.get("admin")))

    # -- cookies ----------------------------------------------------------------------------
    def cookie_for(self, grant: Grant) -> str:
        """`v1.<viewer>.<owner>.<admin>.<expiry>.<session>.<HMAC-SHA256>`: a
        plain HMAC, not a JWT, because it is checked on every proxied request
        (PyJWT's decoding costs several times more)."""
        expires = int(time.time() + self.settings.proxy_cookie_hours * 3600)
        payload = f"v1.{grant.viewer_id}.{grant.owner_id}.{int(grant.admin)}.{expires}.{grant.session_id}"
        return f"{payload}.{self._sign(payload)}"

    def grant_of(self, cookie: str | None, owner_id: int) -> Grant | None:
        """The grant a cookie carries, only for this workspace's host."""
        payload, _, signature = (cookie or "").rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        parts = payload.split(".")
        if len(parts) != 6 or parts[0] != "v1" or not all(p.isdigit() for p in parts[1:5]) or not parts[5]:
            return None
        _, viewer, owner, admin, expires, session = parts
        if int(owner) != owner_id or int(expires) <= time.time():
            return None
        return Grant(int(viewer), session, owner_id, admin == "1", int(expires))

    def cached_grant(self, cookie: str | None, owner_id: int) -> Grant | None:
        """`grant_of`, remembered per cookie value: the HMAC and the parsing
        are the same for every request of a page load. The expiry is still
        checked each time; the login and the workspace by `check`."""
        if cookie is None:
            return None
        key = (cookie, owner_id)
        grant = self.grants.get(key, _UNKNOWN)
        if grant is _UNKNOWN:
            if len(self.grants) >= GRANT_CACHE_SIZE:
                self.grants.clear()
            grant = self.grants[key] = self.grant_of(cookie, owner_id)
        if grant is not None and grant.expires <= time.time():
            return None
        return grant

    def grant_in(self, cookie_header: str, owner_id: int) -> Grant | None:
        """The first valid grant among the workspace cookies a Cookie header
        carries: a sibling workspace's script may set a junk one for the
        parent domain, which must not lock the owner out."""
        for value in cookie_values(cookie_header):
            grant = self.cached_grant(value, owner_id)
            if grant is not None:
                return grant
        return None

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self.key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    # -- the check --------------------------------------------------------------------------
    async def check(self, grant: Grant | None, fresh: bool = False) -> Access:
        """Raise Denied unless the grant's login is live, its viewer may see
        the workspace now, and the workspace runs (`fresh`: read from the
        database, not the cache)."""
        if grant is None:
            raise Denied(401, "login")
        viewer = await self.services.accounts.session_user(grant.session_id)
        if viewer is None or viewer["_id"] != grant.viewer_id:
            raise Denied(401, "login")
        if viewer["_id"] != grant.owner_id and not (grant.admin and viewer.get("role") in ADMIN_ROLES):
            raise Denied(403, "forbidden")
        doc = await self.workspaces.find(grant.owner_id, fresh)
        if doc is None:
            raise Denied(404, "none")
        if doc["state"] != "running":
            state = doc["state"] if doc["state"] in ("stopped", "provisioning", "failed") else "busy"
            raise Denied(503, state)
        return Access(grant, doc)

    # -- open WebSockets ---------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="workspace-proxy-sweeper")

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for socket in list(self.sockets):
            socket.close(1001, "Server shutting down")
        self.pool.close()
        self.lane_pool.close()
        self.workspaces.clear()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.pool.prune()
            self.lane_pool.prune()
            self.workspaces.prune()
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the sweeping
                log.warning("workspace proxy sweep failed", exc_info=True)

    async def sweep(self) -> None:
        """Close every proxied WebSocket whose grant no longer passes (one
        check per login and workspace, however many sockets or cookies share
        it, and one database read per workspace: the first check's fresh
        read refills the cache the others use)."""
        verdicts: dict[Grant, Denied | None] = {}
        read: set[int] = set()
        for socket in list(self.sockets):
            grant = replace(socket.grant, expires=0)  # `check` does not look at the cookie's expiry
            if grant not in verdicts:
                try:
                    await self.check(grant, fresh=grant.owner_id not in read)
                    verdicts[grant] = None
                except Denied as denied:
                    verdicts[grant] = denied
                if verdicts[grant] is None or verdicts[grant].status not in (401, 403):
                    read.add(grant.owner_id)  # the check got as far as the workspace
            denied = verdicts[grant]
            if denied is not None and socket in self.sockets:
                socket.close(4000 + denied.status, f"Workspace access ended ({denied.reason})")


def _no_activity(workspace_id: Any) -> None:
    """The default activity hook: nothing."""


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def start(services: Any) -> None:
    """``services.proxy``, once (server.py calls it; so does the proxy's
    listener, for servers built without server.py)."""
    if getattr(services, "proxy", None) is not None:
        return
    services.proxy = ProxyAccess(services)
    services.proxy.on_activity = services.workspaces.activity.touch  # idle culling counts proxied traffic
    services.proxy.start()
    services.on_close(services.proxy.close)
