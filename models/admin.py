"""Admin console and trainer request/response shapes, and the one place a
stored user, workspace or audit entry becomes an admin response."""
from __future__ import annotations

from typing import Any, Generic, Optional, TypeVar, Union

from pydantic import Field, RootModel, field_validator

from models.accounts import EmailField, Role, not_blank
from models.base import RequestModel, ResponseModel, iso
from models.enrollment import EnrollmentStatus, enrollment_of
from services.workspaces.quota import disk_fields

MAX_PAGE_SIZE = 100
MAX_QUERY = 100  # characters of a search text
# The workspace service's states (services.workspaces.STATES; a test keeps them equal).
WORKSPACE_STATES = ("provisioning", "running", "stopping", "stopped", "failed", "deleting", "deleted")
Item = TypeVar("Item")


class Page(ResponseModel, Generic[Item]):
    """One page of a list: `{results, count, page, page_size}` (each subclass names its items)."""
    results: list[Item]
    count: int
    page: int
    page_size: int


class AdminUserCreate(EmailField):
    name: str = Field(min_length=1, max_length=150)
    password: str = Field(max_length=1024, description="Checked like a registration password.")
    role: Role = "student"
    track: Optional[str] = Field(default=None, max_length=32, description="One of the configured TRACKS codes.")

    _name = field_validator("name")(not_blank)


class AdminUserUpdate(RequestModel):
    """Only the fields sent change. `role` follows the update-role rules;
    `disabled` true or false revokes every login of the user."""
    name: Optional[str] = Field(default=None, min_length=1, max_length=150)
    track: Optional[str] = Field(default=None, max_length=32)
    role: Optional[Role] = None
    disabled: Optional[bool] = None


class AdminUserOut(ResponseModel):
    """A user as the admin console sees it."""
    id: int
    email: str
    name: str
    role: str
    track: Optional[str] = None
    enrollment_status: EnrollmentStatus = "PENDING_PAYMENT"
    payment_verified: bool = False
    disabled: bool = False
    created_at: Optional[str] = None
    last_login: Optional[str] = None
    trainer_id: Optional[int] = None


class AdminUserPage(Page[AdminUserOut]):
    """One page of users (when `page` is given)."""


class AdminUserListOut(RootModel[Union[list[AdminUserOut], AdminUserPage]]):
    """Users: a plain array without `page`, else one page of them.

    The plain JSON array is what the original platform's admin pages expect;
    with `page` the answer is `{results, count, page, page_size}`."""


class AuditEntryOut(ResponseModel):
    id: str
    at: Optional[str]
    actor_id: Optional[int]
    actor_email: Optional[str] = None
    action: str
    target_id: Optional[int] = None
    target_email: Optional[str] = None
    details: dict[str, Any] = {}


class AuditPage(Page[AuditEntryOut]):
    """One page of the audit log, newest first."""


class OwnerOut(ResponseModel):
    id: int
    email: Optional[str] = None
    name: Optional[str] = None
    role: Optional[str] = None


class AdminWorkspaceOut(ResponseModel):
    workspace_id: str
    owner: OwnerOut
    state: str
    since: Optional[str] = None
    progress: int = 0
    message: str = ""
    port: Optional[int] = None
    created_at: Optional[str] = None
    updated_at: Optional[str] = None
    last_activity: Optional[str] = None
    stop_reason: Optional[str] = None  # student, admin, disabled, idle, lifetime: why it last stopped
    stopped_at: Optional[str] = None
    cpu_percent: Optional[float] = Field(default=None, description="CPU now, % of one core (running only).")
    memory_bytes: Optional[int] = Field(default=None, description="Memory now, without the page cache.")
    memory_limit: Optional[int] = None
    disk_used_bytes: Optional[int] = Field(default=None, description="Home use at the latest reading (on a quota).")
    disk_size_bytes: Optional[int] = Field(default=None, description="The home's file system size at that reading.")
    disk_quota: Optional[int] = Field(default=None, description="The quota in bytes; null: unlimited.")


class DiskQuotaIn(RequestModel):
    disk_quota: Union[int, str] = Field(description="Bytes, or a size with a unit such as '4GiB'.")


class DiskQuotaOut(ResponseModel):
    disk_quota: int
    message: str


class AdminWorkspacePage(Page[AdminWorkspaceOut]):
    """One page of workspaces, most recently changed first."""


class WorkspaceEventOut(ResponseModel):
    seq: int
    state: str
    progress: int
    message: str
    at: Optional[str] = None
    run: Optional[int] = None  # the provisioning run (the student's reference is ws-<user id>-<run>)
    kind: Optional[str] = None
    reason: Optional[str] = None
    detail: Optional[str] = None  # the operator's text (engine errors, ports, image names); never a student's


class WorkspaceEventPage(Page[WorkspaceEventOut]):
    """One page of a workspace's events, newest first."""


class AdminWorkspaceActionOut(ResponseModel):
    message: str
    state: str


class TrainerStudentOut(ResponseModel):
    id: int
    name: str
    email: str
    track: Optional[str] = None
    enrollment_status: EnrollmentStatus = "PENDING_PAYMENT"
    created_at: Optional[str] = None
    last_login: Optional[str] = None
    trainer_id: Optional[int] = None
    workspace_state: Optional[str] = None
    workspace_since: Optional[str] = None


class StudentPage(Page[TrainerStudentOut]):
    """One page of a trainer's students."""


def admin_user_model(user: dict) -> dict:
    return {"id": user["_id"], "email": user["email"], "name": user["name"], "role": user["role"],
            "track": user.get("track"), "enrollment_status": enrollment_of(user),
            "payment_verified": bool(user.get("payment_verified", False)), "disabled": bool(user.get("disabled")),
            "created_at": iso(user.get("created_at")), "last_login": iso(user.get("last_login_at")),
            "trainer_id": user.get("trainer_id")}


def audit_model(entry: dict) -> dict:
    return {"id": str(entry["_id"]), "at": iso(entry.get("at")), "actor_id": entry.get("actor_id"),
            "actor_email": entry.get("actor_email"), "action": entry["action"],
            "target_id": entry.get("target_id"), "target_email": entry.get("target_email"),
            "details": entry.get("details") or {}}


def workspace_since(doc: dict) -> Optional[str]:
    """Since when the workspace is in its state: provisioning runs from their
    start; every other state is entered by its last change (settled states
    log no further events)."""
    if doc.get("state") == "provisioning":
        return doc.get("provision_started") or doc.get("updated_at")
    return doc.get("updated_at")


def admin_workspace_model(doc: dict, owner: Optional[dict], usage: Any = None) -> dict:
    owner_out = {"id": doc["owner_id"]}
    if owner is not None:
        owner_out.update(email=owner.get("email"), name=owner.get("name"), role=owner.get("role"))
    return {"workspace_id": doc["_id"], "owner": owner_out, "state": doc["state"], "since": workspace_since(doc),
            "progress": doc.get("progress", 0), "message": doc.get("message", ""), "port": doc.get("port"),
            "created_at": doc.get("created_at"), "updated_at": doc.get("updated_at"),
            **{key: doc.get(key) for key in ("last_activity", "stop_reason", "stopped_at")},
            **usage_fields(usage), **disk_fields(doc), "disk_quota": doc.get("disk_quota") or None}


def usage_fields(usage: Any) -> dict:
    """A backend Usage (or None: unknown) as the list's three fields."""
    return {"cpu_percent": getattr(usage, "cpu_percent", None), "memory_bytes": getattr(usage, "memory_bytes", None),
            "memory_limit": getattr(usage, "memory_limit", None)}


def event_model(event: dict) -> dict:
    return {"seq": event["seq"], "state": event["state"], "progress": event.get("progress", 0),
            "message": event.get("message", ""), "at": event.get("at"),
            **{key: event[key] for key in ("run", "kind", "reason", "detail") if key in event}}


def student_model(user: dict, workspace: Optional[dict]) -> dict:
    state = None if workspace is None or workspace["state"] == "deleted" else workspace["state"]
    return {"id": user["_id"], "name": user["name"], "email": user["email"], "track": user.get("track"),
            "enrollment_status": enrollment_of(user),
            "created_at": iso(user.get("created_at")), "last_login": iso(user.get("last_login_at")),
            "trainer_id": user.get("trainer_id"), "workspace_state": state,
            "workspace_since": workspace_since(workspace) if state else None}
