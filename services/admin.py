"""The admin console and the trainers' view: users, workspaces, the audit log.

Who may do what, each rule in one function here (`require_admin`,
`require_staff`, `check_may_manage`), plus the role rules that stay in
`AccountService.change_role`:

* admin endpoints: admins and superadmins; everyone else gets 403;
* only a superadmin grants or removes admin/superadmin (change_role), and
  only a superadmin edits, disables or deletes an admin or superadmin;
* nobody disables or deletes themselves;
* trainers read their students (services.students.trainer_students_filter:
  assigned to them, or of their track without a trainer), with their
  workspace state, and nothing else (admins may read any track's).

Every change an admin makes is written to ``audit_log`` (who, what, whom,
when, details) before the answer goes out. Deleting a user is soft: the
document stays (payments and audit entries keep pointing at it), it is
disabled, its sessions are revoked and its email is freed for a new account.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.accounts import ADMIN_ROLES, AccountService
from services.db import CREATION_ORDER
from services.errors import ApiError, Forbidden, NotFound, ValidationFailed
from services.students import NOT_DELETED, trainer_students_filter
from services.tokens import TokenService, utcnow
from services.workspaces.spec import quota_of

log = logging.getLogger("apranova.admin")
STAFF_ROLES = ("trainer", *ADMIN_ROLES)
ACTIVE_WORKSPACE = ("provisioning", "running")


def require_admin(user: dict) -> None:
    if user.get("role") not in ADMIN_ROLES:
        raise Forbidden("Only administrators may use the admin API.")


def require_staff(user: dict) -> None:
    if user.get("role") not in STAFF_ROLES:
        raise Forbidden("Only trainers and administrators may list students.")


def check_may_manage(actor: dict, target: dict, action: str) -> None:
    """May `actor` edit, disable or delete `target` (roles aside)?"""
    if action in ("disable", "delete") and target["_id"] == actor["_id"]:
        raise Forbidden(f"You cannot {action} your own account.")
    if target["role"] in ADMIN_ROLES and actor["role"] != "superadmin" and target["_id"] != actor["_id"]:
        raise Forbidden("Only a superadmin can change an admin or superadmin account.")


def text_filter(q: str | None, fields: tuple[str, ...]) -> dict:
    """A case-insensitive substring match of `q` on any of `fields`. The text
    is escaped: it is never a regular expression (no injection, no
    catastrophic patterns)."""
    if not q:
        return {}
    pattern = re.escape(q)
    return {"$or": [{name: {"$regex": pattern, "$options": "i"}} for name in fields]}


async def list_workspaces(db: AsyncDatabase, state: str | None = None, skip: int = 0,
                          limit: int = 25) -> tuple[list[tuple[dict, dict | None]], int]:
    """Workspaces (most recently changed first) with their owners' user
    documents, and the total count. Read straight from the `workspaces`
    collection: this page needs no lifecycle logic. Deleted ones are listed
    only when asked for by state."""
    query: dict[str, Any] = {"state": state} if state else {"state": {"$ne": "deleted"}}
    count = await db.workspaces.count_documents(query)
    docs = [doc async for doc in db.workspaces.find(query, {"password": 0})
            .sort([("updated_at", DESCENDING), ("_id", DESCENDING)]).skip(skip).limit(limit)]
    owners = {user["_id"]: user async for user in
              db.users.find({"_id": {"$in": [doc["owner_id"] for doc in docs]}}, {"password_hash": 0})}
    return [(doc, owners.get(doc["owner_id"])) for doc in docs], count


class AdminService:
    def __init__(self, db: AsyncDatabase, accounts: AccountService, tokens: TokenService, services: Any):
        self.db = db
        self.users = db.users
        self.accounts = accounts
        self.tokens = tokens
        self.services = services  # workspaces are reached through it (its starter may run later)

    # -- audit -------------------------------------------------------------------------
    async def audit(self, actor: dict, action: str, target: dict | None = None, **details: Any) -> None:
        await self.db.audit_log.insert_one({
            "at": utcnow(), "actor_id": actor["_id"], "actor_email": actor.get("email"), "action": action,
            "target_id": target["_id"] if target else None, "target_email": target.get("email") if target else None,
            "details": details})
        log.info("admin action %s by %s on %s", action, actor["_id"], target["_id"] if target else "-")

    async def audit_acting_for(self, actor: dict, target_id: int, action: str, **details: Any) -> None:
        """An admin's request on another user's workspace through the student
        endpoints' `?user_id=`, in the same log as the console's actions."""
        target = await self.users.find_one({"_id": target_id}, {"email": 1})
        await self.audit(actor, action, target or {"_id": target_id}, via="user_id", **details)

    async def audit_page(self, skip: int, limit: int, action: str | None = None,
                         target_id: int | None = None) -> tuple[list[dict], int]:
        query: dict[str, Any] = {}
        if action:
            query["action"] = action
        if target_id is not None:
            query["target_id"] = target_id
        count = await self.db.audit_log.count_documents(query)
        entries = [entry async for entry in self.db.audit_log.find(query)
                   .sort([("at", DESCENDING), ("_id", DESCENDING)]).skip(skip).limit(limit)]
        return entries, count

    # -- users ---------------------------------------------------------------------------
    async def list_users(self, q: str | None, role: str | None, skip: int, limit: int | None) -> tuple[list[dict], int]:
        query: dict[str, Any] = {**NOT_DELETED, **text_filter(q, ("email", "name"))}
        if role:
            query["role"] = role
        count = await self.users.count_documents(query)
        cursor = self.users.find(query, {"password_hash": 0}).sort(CREATION_ORDER).skip(skip)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [user async for user in cursor], count

    async def get_user(self, user_id: int) -> dict:
        user = await self.users.find_one({"_id": user_id, **NOT_DELETED}, {"password_hash": 0})
        if user is None:
            raise NotFound("No user has this id.", error="User not found")
        return user

    async def create_user(self, actor: dict, *, email: str, name: str, password: str, role: str,
                          track: str | None) -> dict:
        require_admin(actor)
        if role in ADMIN_ROLES and actor["role"] != "superadmin":
            raise Forbidden("Only a superadmin can create an admin or superadmin account.")
        self.accounts.check_track(track)
        user = await self.accounts.create_user(email=email, name=name, role=role, password=password, track=track)
        await self.audit(actor, "user.created", user, role=role)
        return user

    async def change_role(self, actor: dict, target_id: int, role: str) -> dict:
        """AccountService.change_role (its rules), audited."""
        before = actor if target_id == actor["_id"] else await self.accounts.get(target_id)
        changed = await self.accounts.change_role(actor, target_id, role)
        if before is not None and before["role"] != role:
            await self.audit(actor, "user.role_changed", before, **{"from": before["role"], "to": role})
        return changed

    async def update_user(self, actor: dict, target_id: int, changes: dict[str, Any]) -> dict:
        """Name, track, role and disabled, all checked before any is applied."""
        require_admin(actor)
        target = await self.get_user(target_id)
        profile = {key: changes[key] for key in ("name", "track") if changes.get(key) is not None}
        disabled = changes.get("disabled")
        if profile:
            check_may_manage(actor, target, "edit")
            if "name" in profile and not profile["name"].strip():
                raise ValidationFailed({"name": ["This field may not be blank."]})
            self.accounts.check_track(profile.get("track"))
        if disabled is not None:
            check_may_manage(actor, target, "disable")
        role = changes.get("role")
        if role is not None and role != target["role"]:
            await self.change_role(actor, target_id, role)
        if profile:
            await self.accounts.update_profile(target_id, profile)
            await self.audit(actor, "user.updated", target, **profile)
        if disabled is not None and disabled != bool(target.get("disabled")):
            await self.set_disabled(actor, target, disabled)
        return await self.get_user(target_id)

    async def set_disabled(self, actor: dict, target: dict, disabled: bool) -> None:
        await self.accounts.set_disabled(target["_id"], disabled)
        await self.tokens.revoke_all(target["_id"], "account disabled" if disabled else "account re-enabled")
        details = await self._stop_workspace(target["_id"]) if disabled else {}
        await self.audit(actor, "user.disabled" if disabled else "user.enabled", target, **details)

    async def delete_user(self, actor: dict, target_id: int) -> None:
        require_admin(actor)
        target = await self.get_user(target_id)
        check_may_manage(actor, target, "delete")
        await self.accounts.set_fields(target_id, {"disabled": True,
                                                   "email_key": f"deleted:{target_id}:{target['email_key']}"},
                                       stamp=("deleted_at",))
        await self.tokens.revoke_all(target_id, "account deleted")
        details = await self._stop_workspace(target_id)
        await self.audit(actor, "user.deleted", target, **details)

    async def _stop_workspace(self, user_id: int) -> dict:
        """A disabled or deleted user's running workspace is stopped (its
        files stay). Docker being away does not block the account change;
        the audit entry says so."""
        doc = await self.db.workspaces.find_one({"owner_id": user_id}, {"state": 1})
        if doc is None or doc["state"] not in ACTIVE_WORKSPACE:
            return {}
        try:
            await self.services.workspaces.stop(user_id, "disabled")
            return {"workspace": "stopped"}
        except ApiError as exc:
            return {"workspace": f"not stopped: {exc.message}"}

    # -- workspaces ------------------------------------------------------------------------
    async def workspaces_page(self, state: str | None, skip: int,
                              limit: int) -> tuple[list[tuple[dict, dict | None, Any]], int]:
        """list_workspaces' rows, each with its CPU and memory now (a Usage,
        or None: not running, or the engine did not tell in time)."""
        rows, count = await list_workspaces(self.db, state, skip, limit)
        usage = await self.services.workspaces.usage([doc for doc, _ in rows])
        settings = self.services.settings  # the quota in effect (quota.py), not only an admin's own
        rows = [({**doc, "disk_quota": quota_of(doc, settings)}, owner) for doc, owner in rows]
        return [(doc, owner, usage.get(doc["_id"])) for doc, owner in rows], count

    async def set_disk_quota(self, actor: dict, user_id: int, quota: int) -> dict:
        """Give one student's workspace a larger disk quota (quota.py), audited."""
        require_admin(actor)
        target = await self.accounts.get(user_id)
        if target is None:
            raise NotFound("No user has this id.", error="User not found")
        doc = await self.services.workspaces.disk.set_quota(user_id, quota)
        await self.audit(actor, "workspace.disk_quota", target, disk_quota=quota)
        return doc

    async def workspace_events(self, user_id: int, skip: int, limit: int) -> tuple[list[dict], int]:
        doc = await self.db.workspaces.find_one({"owner_id": user_id}, {"_id": 1})
        if doc is None:
            raise NotFound("This user has no workspace.", error="Workspace not found")
        query = {"workspace_id": doc["_id"]}
        count = await self.db.workspace_events.count_documents(query)
        events = [event async for event in self.db.workspace_events.find(query, {"_id": 0})
                  .sort("seq", DESCENDING).skip(skip).limit(limit)]
        return events, count

    async def workspace_action(self, actor: dict, user_id: int, action: str, purge: bool = False) -> dict:
        """stop, start or delete a user's workspace through the workspace
        service (its rules and state machine), audited."""
        require_admin(actor)
        if action == "start":  # a deleted user's workspace may be stopped or removed, not started
            target = await self.get_user(user_id)
        else:
            target = await self.accounts.get(user_id)
        if target is None:
            raise NotFound("No user has this id.", error="User not found")
        workspaces = self.services.workspaces
        if action == "stop":
            doc = await workspaces.stop(user_id, "admin")
        elif action == "start":
            doc, _ = await workspaces.create(user_id)
        else:
            doc = await workspaces.delete(user_id, purge=purge)
        await self.audit(actor, f"workspace.{action}", target, **({"purge": True} if purge else {}))
        return doc

    # -- trainers ----------------------------------------------------------------------------
    async def students(self, actor: dict, track: str | None, q: str | None, skip: int,
                       limit: int) -> tuple[list[tuple[dict, dict | None]], int]:
        """A trainer's students (the rule of my-students too), or for admins
        every student (of `track` when given), each with their workspace
        document (or None)."""
        require_staff(actor)
        if actor["role"] == "trainer":
            query: dict[str, Any] = trainer_students_filter(actor)
        else:
            query = {"role": "student", **NOT_DELETED, **({"track": track} if track else {})}
        if q:
            query = {"$and": [query, text_filter(q, ("email", "name"))]}
        count = await self.users.count_documents(query)
        users = [user async for user in self.users.find(query, {"password_hash": 0})
                 .sort([("name", 1), *CREATION_ORDER])
                 .skip(skip).limit(limit)]
        workspaces = {doc["owner_id"]: doc async for doc in self.db.workspaces.find(
            {"owner_id": {"$in": [user["_id"] for user in users]}}, {"password": 0})}
        return [(user, workspaces.get(user["_id"])) for user in users], count


async def start(services: Any) -> None:
    services.admin = AdminService(services.db, services.accounts, services.tokens, services)
