"""Workspaces: REST lifecycle endpoints and the live status WebSocket."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from tornado import httputil, web, websocket

from handlers.base import APIHandler, Operation, error_of, query_int, render_error
from models.common import ErrorOut
from models.workspaces import (CREATED_MSG, EXISTS_MSG, CreateWorkspaceIn, WorkspaceCreatedOut, WorkspaceDeletedOut,
                               WorkspaceOut, event_message, snapshot_message, workspace_model)
from services.errors import ApiError, NotFound, field_error
from proxy.owner_url import owner_url
from services.workspaces.events import SubscriptionEnded

log = logging.getLogger("apranova.workspaces")
TAGS = ("workspaces",)
AS_USER = {"user_id": "Admins only: act on this user's workspace (each such request is in the audit log)."}
COMMON = {401: ErrorOut, 403: ErrorOut, 502: ErrorOut, 503: ErrorOut}
OWNER_URL = ("Behind the proxy (WORKSPACE_EXPOSURE=network) the owner's `url` carries a one-time `?ticket=` "
             "(PROXY_URL_TICKET_SECONDS, bound to this login), so opening it signs in to the IDE; an admin's "
             "?user_id= read gets the bare origin.")
class WorkspaceBase(APIHandler):
    acting_for: int | None = None  # the other user an admin acts for through ?user_id=

    async def target_user(self) -> int:
        """The caller's id, or (admins) the ``?user_id=`` one."""
        user = await self.require_user()
        try:
            user_id = query_int(self.get_query_argument("user_id", None))
        except ValueError:
            raise field_error("user_id", "Must be a positive integer.") from None
        if user_id is None:
            return user["_id"]
        target = self.services.workspaces.target_user(user, user_id)
        if target != user["_id"] and await self.services.accounts.get(target) is None:
            raise NotFound("No user has this id.", error="User not found")
        if target != user["_id"]:
            self.acting_for = target
        return target

    async def audit(self, action: str, **details: Any) -> None:
        """Log an admin's ?user_id= request once it has succeeded: writes, and
        reads too, since each answer hands out the IDE's password or a way in."""
        if self.acting_for is not None:
            await self.services.admin.audit_acting_for(self.user, self.acting_for, action, **details)

    async def render(self, doc: dict, msg: str | None = None, status: int = 200, ticket: bool = False) -> None:
        """`ticket`: the owner's url opens the IDE by itself (proxy/owner_url.py)."""
        workspaces = self.services.workspaces
        url, port = workspaces.address(doc)
        if ticket:
            url = await owner_url(self.services, self.user, doc, url)
        self.send(workspace_model(doc, (url, port), workspaces.password(doc), msg, workspaces.estimate()), status)


class CreateWorkspaceHandler(WorkspaceBase):
    operations = {"post": Operation(
        "Create the caller's workspace, or start the existing one", body=CreateWorkspaceIn, auth=True,
        query=AS_USER, tags=TAGS,
        description="Answers at once; watch progress on the status WebSocket, or send {\"wait\": true} to wait "
                    "(bounded by WORKSPACE_WAIT_TIMEOUT) for running or failed. RATE_LIMIT_WORKSPACE (10/hour) "
                    "counts only the requests that create a workspace (answered 201: none existed, or it was "
                    "deleted or failed); starting a stopped one and repeating the request on a provisioning or "
                    "running one (200) do not count. " + OWNER_URL,
        responses={201: WorkspaceCreatedOut, 200: WorkspaceCreatedOut, 400: ErrorOut, 404: ErrorOut,
                   409: ErrorOut, 429: ErrorOut, **COMMON})}

    async def post(self) -> None:
        target = await self.target_user()
        request = self.parse_body(CreateWorkspaceIn)
        doc, created = await self.services.workspaces.create_counted(target, request.wait, self.services.ratelimits,
                                                                     str(self.user_id))
        await self.audit("workspace.start", created=created)
        await self.render(doc, CREATED_MSG if created else EXISTS_MSG, 201 if created else 200, ticket=True)


class WorkspaceHandler(WorkspaceBase):
    operations = {
        "get": Operation("The caller's workspace", auth=True, query=AS_USER, tags=TAGS, description=OWNER_URL,
                         responses={200: WorkspaceOut, 404: ErrorOut, **COMMON}),
        "delete": Operation("Delete the workspace container (the files volume stays unless purge=true)",
                            auth=True, tags=TAGS, query={**AS_USER, "purge": "true: delete the files volume too."},
                            responses={200: WorkspaceDeletedOut, 400: ErrorOut, 404: ErrorOut, **COMMON}),
    }

    async def get(self) -> None:
        target = await self.target_user()
        doc = await self.services.workspaces.get(target)
        await self.audit("workspace.read")
        await self.render(doc, ticket=True)

    async def delete(self) -> None:
        target = await self.target_user()
        purge = self.query_flag("purge")
        doc = await self.services.workspaces.delete(target, purge=purge)
        await self.audit("workspace.delete", **({"purge": True} if purge else {}))
        self.send({"message": doc["message"] + ".", "state": doc["state"]})


class StopWorkspaceHandler(WorkspaceBase):
    operations = {"post": Operation("Stop the workspace container, keeping everything", auth=True, query=AS_USER,
                                    tags=TAGS, responses={200: WorkspaceOut, 404: ErrorOut, **COMMON})}

    async def post(self) -> None:
        target = await self.target_user()
        doc = await self.services.workspaces.stop(target, "student" if target == self.user_id else "admin")
        await self.audit("workspace.stop")
        await self.render(doc)


class KeepAliveHandler(WorkspaceBase):
    operations = {"post": Operation(
        "Keep the running workspace running (counts as activity now)", auth=True, query=AS_USER, tags=TAGS,
        description="Resets the idle timer (WORKSPACE_IDLE_TIMEOUT) and logs an info event \"Kept running\" "
                    "that replaces a pending idle warning on the status socket. It does not extend "
                    "WORKSPACE_MAX_LIFETIME. 409 when the workspace is not running.",
        responses={200: WorkspaceOut, 404: ErrorOut, 409: ErrorOut, 401: ErrorOut, 403: ErrorOut})}

    async def post(self) -> None:
        target = await self.target_user()
        doc = await self.services.workspaces.keep_running(target)
        await self.audit("workspace.keepalive")
        await self.render(doc)


STATUS_SOCKET_TEXT = """A WebSocket (`ws://` or `wss://`): open it with an `Upgrade: websocket` GET.

**Authentication**: an `Authorization: Bearer <access token>` header, or, within 5 s of opening, a first
message `{"type": "auth", "token": "<access token>"}`. The token never goes in the URL. `Origin` must be one
of the allowed origins (or this server's own).

**Server messages** (JSON text frames):
- first `{"type": "snapshot", "state", "progress", "url", "port", "password", "seq", "message", "at", "run",
  "run_started", "estimate_seconds"}` (`estimate_seconds`: the median of this server's recent successful
  starts, or null);
- then every persisted event after `?after=<seq>` (none without it), then live events as they happen:
  `{"type": "event", "seq", "state", "progress" (0-100), "message", "at", "run"}`, with the change's
  `kind` (step, warning, failure, info), `step` (a short id), `reason`, `stop_at` and `internal` (true: a
  step students need not see) when it has them. `message` is always written for the student; the
  operator's detail is in the admin API's event history. `seq` increases by one per
  event, so a client that reconnects with `after=<last seq it saw>` loses and duplicates nothing.
- `state` is one of provisioning, running, stopping, stopped, failed, deleting; pull progress never goes
  backwards. The server pings every 20 s.
- Idle culling: an event with `kind: "warning"`, `reason` (`idle` or `lifetime`) and `stop_at` (ISO time)
  announces a stop; `POST /api/users/workspace/keepalive/` answers an idle one (an event with `kind: "info"`
  follows). The stop's events carry the same `reason`, and their `message` says why.

**Close codes**: 4400 bad query value, 4401 missing or bad token, 4403 another user's workspace (admins may
use `?user_id=`), 4404 no workspace, 1001 server shutting down, 1011 internal error.

A plain HTTP request here (no upgrade) answers 400, and a refused `Origin` 403, in the error envelope."""


class WorkspaceStatusSocket(websocket.WebSocketHandler):
    """Live provisioning status: a snapshot, the persisted events after
    ``?after=<seq>``, then live events. Authenticated by an Authorization
    header or by a first message ``{"type": "auth", "token": ...}``."""
    AUTH_TIMEOUT = 5.0
    operations = {"get": Operation(
        "Live workspace status (WebSocket)", tags=TAGS, description=STATUS_SOCKET_TEXT,
        query={"after": "Replay the persisted events after this seq, then go live.", **AS_USER},
        responses={400: ErrorOut, 403: ErrorOut})}

    def initialize(self) -> None:
        self.services = self.application.settings["services"]
        self.workspaces = self.services.workspaces
        self.auth_token: asyncio.Future | None = None
        self.task: asyncio.Task | None = None

    # Not an APIHandler, but the same header rules: its methods read only the request and settings.
    bearer_token = APIHandler.bearer_token
    origin_allowed = APIHandler.origin_allowed

    def check_origin(self, origin: str) -> bool:
        return self.origin_allowed(origin) or urlsplit(origin).netloc == self.request.host

    def open(self) -> None:
        self.counted = True
        self.services.metrics.websockets_open.inc()
        try:
            after, user_id = query_int(self.get_query_argument("after", None)), \
                query_int(self.get_query_argument("user_id", None))
        except ValueError:
            self.close(4400, "after and user_id must be non-negative integers")
            return
        token = self.bearer_token()
        if token is None:
            # Created here, not in the task: the browser's auth message may be
            # read before the task first runs, and must not be dropped.
            self.auth_token = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._serve(token, after, user_id))

    def on_message(self, message: Any) -> None:
        if self.auth_token is None or self.auth_token.done():
            return  # nothing else is expected from the client
        try:
            data = json.loads(message)
            token = data["token"] if data.get("type") == "auth" and isinstance(data.get("token"), str) else None
        except (ValueError, TypeError, AttributeError, KeyError):
            token = None
        self.auth_token.set_result(token)

    async def _serve(self, token: str | None, after: int | None, user_id: int | None) -> None:
        try:
            if token is None:
                try:
                    token = await asyncio.wait_for(self.auth_token, self.AUTH_TIMEOUT)
                except asyncio.TimeoutError:
                    token = None
            if not token:
                self.close(4401, "Authentication required")
                return
            try:
                user = await self.services.accounts.authenticate(token)
            except ApiError:
                self.close(4401, "Invalid token")
                return
            try:
                target = self.workspaces.target_user(user, user_id)
            except ApiError:
                self.close(4403, "Forbidden")
                return
            doc = await self.workspaces.find(target)
            if doc is None:
                self.close(4404, "No workspace")
                return
            if target != user["_id"]:  # an admin watching another's (the snapshot carries the IDE password)
                await self.services.admin.audit_acting_for(user, target, "workspace.watch")
            await self._stream(doc, after)
        except websocket.WebSocketClosedError:
            pass
        except Exception:  # noqa: BLE001 - one socket's failure must not go unnoticed, nor spread
            log.exception("workspace status socket failed")
            self.close(1011, "Internal error")

    async def _stream(self, doc: dict, after: int | None) -> None:
        """The snapshot, then the subscription from the snapshot's seq (or
        the client's `after`): replayed, then live, each event once."""
        workspaces = self.workspaces  # `doc` was just read by `find`: reading it again cost 1,000 opening sockets a round trip each
        await self.write_message(snapshot_message(doc, workspaces.address(doc), workspaces.password(doc),
                                                  workspaces.estimate()))
        start = doc["seq"] if after is None else min(after, doc["seq"])
        try:
            async with contextlib.aclosing(workspaces.subscribe(doc["_id"], start)) as events:
                async for event in events:
                    await self.write_message(event_message(event))
        except SubscriptionEnded:
            self.close(1001, "Server shutting down")

    # -- plain HTTP answers (no upgrade): the envelope, not Tornado's text or HTML ---------
    _enveloped = False

    def finish(self, chunk: Any = None) -> Any:
        if self.get_status() >= 400 and not self._enveloped:
            text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk or self._reason
            status = self.get_status()
            return self._finish_error(ApiError(status, httputil.responses.get(status, "Error"),
                                               f"This endpoint is a WebSocket: {text}"))
        return super().finish(chunk)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 405:
            self.set_header("Allow", "GET")
        if isinstance(exc, web.HTTPError) and exc.log_message and status_code < 500:
            exc = web.HTTPError(status_code, exc.log_message)
        elif status_code < 500:
            exc = web.HTTPError(status_code, "Open this path as a WebSocket.")
        self._finish_error(error_of(exc, status_code))

    def _finish_error(self, error: ApiError) -> Any:
        self._enveloped = True
        return render_error(self, error, super().finish)

    def on_close(self) -> None:
        if getattr(self, "counted", False):
            self.counted = False
            self.services.metrics.websockets_open.dec()
        if self.task and not self.task.done():
            self.task.cancel()


routes = [
    (r"/api/users/workspace/create/?", CreateWorkspaceHandler),
    (r"/api/users/workspace/stop/?", StopWorkspaceHandler),
    (r"/api/users/workspace/keepalive/?", KeepAliveHandler),
    (r"/api/users/workspace/status/?", WorkspaceStatusSocket),
    (r"/api/users/workspace/?", WorkspaceHandler),
]
