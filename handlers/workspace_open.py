"""The ticket endpoint of the workspace proxy, on the API's origin: a
one-time URL that opens a workspace on its own host (proxy/access.py
issues and redeems the tickets)."""
from __future__ import annotations

from urllib.parse import urlencode

from handlers.base import Operation
from handlers.workspaces import WorkspaceBase
from models.common import ErrorOut
from models.proxy import WorkspaceOpenOut
from proxy.headers import request_port, request_scheme
from services.workspace_hosts import workspace_origin


class OpenWorkspaceHandler(WorkspaceBase):
    operations = {"post": Operation(
        "A one-time URL that opens the caller's workspace (admins: ?user_id=) through the proxy", auth=True,
        query={"user_id": "Admins only: open this user's workspace (logged)."}, tags=("workspaces",),
        description="Answers {\"url\": \"http://ws-<id>.localhost:<port>/?ticket=...\"}: the ticket works once, "
                    "within PROXY_TICKET_SECONDS, and becomes a cookie for that workspace's host only.",
        responses={200: WorkspaceOpenOut, 404: ErrorOut, 401: ErrorOut, 403: ErrorOut})}

    async def post(self) -> None:
        target = await self.target_user()
        await self.services.workspaces.get(target)  # 404 when there is none
        ticket = await self.services.proxy.issue_ticket(self.user, target)
        await self.audit("workspace.open")
        scheme = request_scheme(self.request, self.config.trusted_proxies)
        origin = workspace_origin(self.config, target, scheme, request_port(self.request))
        self.send(WorkspaceOpenOut(url=f"{origin}/?{urlencode({'ticket': ticket})}").model_dump())


routes = [
    (r"/api/users/workspace/open/?", OpenWorkspaceHandler),
]
