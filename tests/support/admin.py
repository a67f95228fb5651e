"""Admin API test helpers: user paths and workspace documents written as
the lifecycle leaves them."""
from __future__ import annotations

USERS = "/api/admin/users/"


def user_path(user_id: int) -> str:
    return f"{USERS}{user_id}/"


async def insert_workspace(server, owner: int, state: str, updated: str, events: int = 2) -> str:
    workspace_id = f"ws{owner}"
    await server.db.workspaces.insert_one({
        "_id": workspace_id, "owner_id": owner, "state": state, "progress": 100, "version": events, "seq": events,
        "message": f"now {state}", "password": "secret-pw", "run": 1, "provision_started": "2026-01-01T00:00:00Z",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": updated, "port": 20000 + owner})
    await server.db.workspace_events.insert_many([
        {"workspace_id": workspace_id, "seq": seq, "state": state, "progress": seq, "message": f"step {seq}",
         "at": f"2026-01-01T00:00:0{seq}Z"} for seq in range(1, events + 1)])
    return workspace_id
