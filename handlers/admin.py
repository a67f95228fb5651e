"""The admin API (/api/admin/...) and the trainers' student list.

Lists take `page` (from 1) and `page_size` (1-100, default 25) and answer
`{results, count, page, page_size}`. The one exception keeps the original
platform's admin pages working: `GET /api/admin/users/` without `page`
answers a plain JSON array (at most PLAIN_LIST_LIMIT users, the total in
`X-Total-Count`).
"""
from __future__ import annotations

from handlers.base import INT64_MAX, APIHandler, Operation, query_int
from models.accounts import ROLES
from models.admin import (MAX_PAGE_SIZE, MAX_QUERY, WORKSPACE_STATES, AdminUserCreate, AdminUserListOut,
                          AdminUserOut, AdminUserUpdate, AdminWorkspaceActionOut, AdminWorkspacePage, AuditPage,
                          DiskQuotaIn, DiskQuotaOut, StudentPage, WorkspaceEventPage, admin_user_model, admin_workspace_model, audit_model,
                          event_model, student_model)
from models.common import ErrorOut
from services.admin import require_admin
from services.errors import NotFound, field_error
from services.setting_parsers import byte_size

ADMIN = ("admin",)
TRAINER = ("trainer",)
PLAIN_LIST_LIMIT = 1000
PAGING = {"page": "Page number, from 1.", "page_size": f"Items per page, 1-{MAX_PAGE_SIZE} (default 25)."}
DENIED = {401: ErrorOut, 403: ErrorOut}
ACTION_OUT = {200: AdminWorkspaceActionOut, 409: ErrorOut, 502: ErrorOut, 503: ErrorOut, **DENIED}


class AdminBase(APIHandler):
    def options(self, *args, **kwargs) -> None:
        """CORS preflight; the base one takes no named path groups."""
        super().options(*args, *kwargs.values())

    async def require_admin(self) -> dict:
        user = await self.require_user()
        require_admin(user)
        return user

    async def workspace_action(self, actor: dict, user_id: str, action: str, **options: bool) -> None:
        doc = await self.services.admin.workspace_action(actor, user_id_of(user_id), action, **options)
        self.send({"message": doc["message"], "state": doc["state"]})

    def int_arg(self, name: str, default: int | None, low: int, high: int) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = query_int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise field_error(name, f"Must be an integer from {low} to {high}.")
        return value

    def paging(self) -> tuple[int, int]:
        page = self.int_arg("page", 1, 1, 10**6)
        size = self.int_arg("page_size", 25, 1, MAX_PAGE_SIZE)
        return page, size  # type: ignore[return-value]

    def text_arg(self, name: str, choices: tuple[str, ...] | None = None) -> str | None:
        value = self.get_query_argument(name, "").strip()
        if len(value) > MAX_QUERY:
            raise field_error(name, f"Ensure this field has no more than {MAX_QUERY} characters.")
        if value and choices is not None and value not in choices:
            raise field_error(name, f"Not a valid choice. Choose one of: {', '.join(choices)}.")
        return value or None

    def send_page(self, results: list, count: int, page: int, size: int) -> None:
        self.send({"results": results, "count": count, "page": page, "page_size": size})


def user_id_of(raw: str) -> int:
    """A path id beyond BSON's int64 names no user (and must not reach the driver)."""
    value = int(raw)
    if value > INT64_MAX:
        raise NotFound("No user has this id.", error="User not found")
    return value


def disk_quota_of(raw: int | str) -> int:
    """A quota from the request: bytes, or a size with a unit (1 MiB to 16 TiB)."""
    try:
        quota = raw if isinstance(raw, int) else byte_size(raw)
    except ValueError:
        quota = -1
    if not 1024 ** 2 <= quota <= 16 * 1024 ** 4:
        raise field_error("disk_quota", "Must be a size from 1MiB to 16TiB, in bytes or like '4GiB'.")
    return quota


class AdminUsersHandler(AdminBase):
    operations = {
        "get": Operation(
            "List users (admins)", auth=True, tags=ADMIN, responses={200: AdminUserListOut, **DENIED},
            query={"q": "Substring of the email or name (plain text, any case).",
                   "role": f"One of {', '.join(ROLES)}.", **PAGING},
            description="Without `page`: a plain JSON array, as the original admin pages expect (at most "
                        f"{PLAIN_LIST_LIMIT} users; the total is in `X-Total-Count`). With `page`: "
                        "`{results, count, page, page_size}`. Deleted users are not listed."),
        "post": Operation("Create a user (admins; admin roles only by a superadmin)", auth=True, tags=ADMIN,
                          body=AdminUserCreate, responses={201: AdminUserOut, 400: ErrorOut, **DENIED}),
    }

    async def get(self) -> None:
        await self.require_admin()
        q, role = self.text_arg("q"), self.text_arg("role", ROLES)
        if self.get_query_argument("page", None) is None:  # the original admin pages' plain array
            users, count = await self.services.admin.list_users(q, role, 0, PLAIN_LIST_LIMIT)
            self.set_header("X-Total-Count", str(count))
            self.send([admin_user_model(user) for user in users])
        else:
            page, size = self.paging()
            users, count = await self.services.admin.list_users(q, role, (page - 1) * size, size)
            self.send_page([admin_user_model(user) for user in users], count, page, size)

    async def post(self) -> None:
        actor = await self.require_admin()
        request = self.parse_body(AdminUserCreate)
        user = await self.services.admin.create_user(actor, **request.model_dump())
        self.send(admin_user_model(user), 201)


class AdminUserHandler(AdminBase):
    operations = {
        "get": Operation("A user's details (admins)", auth=True, tags=ADMIN, responses={200: AdminUserOut,
                                                                                       **DENIED}),
        "put": Operation(
            "Update a user's name, track, role or disabled (admins)", auth=True, tags=ADMIN, body=AdminUserUpdate,
            responses={200: AdminUserOut, 400: ErrorOut, 409: ErrorOut, **DENIED},
            description="Only the fields sent change. Role changes follow update-role: only a superadmin grants "
                        "or removes admin/superadmin. Only a superadmin edits or disables an admin account; "
                        "nobody disables themselves. Disabling or re-enabling revokes every login of the user; "
                        "disabling also stops their workspace."),
        "delete": Operation(
            "Delete a user (soft; admins)", auth=True, tags=ADMIN, responses={204: "Deleted", **DENIED},
            description="The user is disabled, their logins revoked, their workspace stopped and their email "
                        "freed; the record stays, with its payments and audit entries."),
    }

    async def get(self, user_id: str) -> None:
        await self.require_admin()
        self.send(admin_user_model(await self.services.admin.get_user(user_id_of(user_id))))

    async def put(self, user_id: str) -> None:
        actor = await self.require_admin()
        request = self.parse_body(AdminUserUpdate)
        user = await self.services.admin.update_user(actor, user_id_of(user_id), request.model_dump())
        self.send(admin_user_model(user))

    async def delete(self, user_id: str) -> None:
        actor = await self.require_admin()
        await self.services.admin.delete_user(actor, user_id_of(user_id))
        self.set_status(204)
        self.finish()


class AuditHandler(AdminBase):
    operations = {"get": Operation(
        "The audit log, newest first (admins)", auth=True, tags=ADMIN, responses={200: AuditPage, **DENIED},
        query={"action": "Only this action, e.g. user.disabled.", "target_id": "Only entries about this user.",
               **PAGING})}

    async def get(self) -> None:
        await self.require_admin()
        page, size = self.paging()
        target = self.int_arg("target_id", None, 1, INT64_MAX)
        entries, count = await self.services.admin.audit_page((page - 1) * size, size, self.text_arg("action"),
                                                               target)
        self.send_page([audit_model(entry) for entry in entries], count, page, size)


class AdminWorkspacesHandler(AdminBase):
    operations = {"get": Operation(
        "Every workspace with its owner and state (admins)", auth=True, tags=ADMIN,
        responses={200: AdminWorkspacePage, **DENIED},
        description="Running ones also carry `cpu_percent` (of one core), `memory_bytes` (without the page "
                    "cache) and `memory_limit` from the engine's stats now, asked for all at once; null when not "
                    "running or when the engine does not answer within 3 s.",
        query={"state": f"Only this state: {', '.join(WORKSPACE_STATES)} (deleted ones only when asked for).",
               **PAGING})}

    async def get(self) -> None:
        await self.require_admin()
        state = self.text_arg("state", WORKSPACE_STATES)
        page, size = self.paging()
        rows, count = await self.services.admin.workspaces_page(state, (page - 1) * size, size)
        self.send_page([admin_workspace_model(doc, owner, usage) for doc, owner, usage in rows], count, page, size)


class AdminWorkspaceHandler(AdminBase):
    operations = {"delete": Operation(
        "Delete a user's workspace (admins; files kept unless purge=true)", auth=True, tags=ADMIN,
        query={"purge": "true: delete the files volume too."}, responses=ACTION_OUT)}

    async def delete(self, user_id: str) -> None:
        actor = await self.require_admin()
        await self.workspace_action(actor, user_id, "delete", purge=self.query_flag("purge"))


class AdminWorkspaceStopHandler(AdminBase):
    action = "stop"
    operations = {"post": Operation("Stop a user's workspace (admins)", auth=True, tags=ADMIN, responses=ACTION_OUT)}

    async def post(self, user_id: str) -> None:
        await self.workspace_action(await self.require_admin(), user_id, self.action)


class AdminWorkspaceStartHandler(AdminWorkspaceStopHandler):
    action = "start"
    operations = {"post": Operation("Start (or create) a user's workspace (admins)", auth=True, tags=ADMIN,
                                    responses=ACTION_OUT)}


class AdminDiskQuotaHandler(AdminBase):
    operations = {"put": Operation(
        "Raise one student's workspace disk quota (admins)", auth=True, tags=ADMIN, body=DiskQuotaIn,
        responses={200: DiskQuotaOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut, **DENIED},
        description="Bytes or a size such as '4GiB'. A quota only grows (a file system is not shrunk under "
                    "the student's files); the home grows, its files kept, the next time the workspace starts.")}

    async def put(self, user_id: str) -> None:
        actor = await self.require_admin()
        quota = disk_quota_of(self.parse_body(DiskQuotaIn).disk_quota)
        doc = await self.services.admin.set_disk_quota(actor, user_id_of(user_id), quota)
        self.send({"disk_quota": doc["disk_quota"], "message": QUOTA_SET if doc["state"] == "running" else
                   QUOTA_SET.split(";")[0] + "."})


class AdminWorkspaceEventsHandler(AdminBase):
    operations = {"get": Operation(
        "A user's workspace event history, newest first (admins)", auth=True, tags=ADMIN, query=PAGING,
        responses={200: WorkspaceEventPage, **DENIED})}

    async def get(self, user_id: str) -> None:
        await self.require_admin()
        page, size = self.paging()
        events, count = await self.services.admin.workspace_events(user_id_of(user_id), (page - 1) * size, size)
        self.send_page([event_model(event) for event in events], count, page, size)


class TrainerStudentsHandler(AdminBase):
    operations = {"get": Operation(
        "The caller's students, with their workspace state (trainers; read-only)", auth=True,
        tags=TRAINER, responses={200: StudentPage, **DENIED},
        query={"q": "Substring of the email or name.", "track": "Admins only: this track (default: all).",
               **PAGING},
        description="A trainer sees their students and nothing else: those assigned to them, plus the "
                    "students of their track with no trainer (`trainer_id` null); the same people as "
                    "GET /api/users/my-students/. Admins see every student and may pass `track`. Students get 403.")}

    async def get(self) -> None:
        actor = await self.require_user()
        page, size = self.paging()
        rows, count = await self.services.admin.students(actor, self.text_arg("track"), self.text_arg("q"),
                                                         (page - 1) * size, size)
        self.send_page([student_model(user, workspace) for user, workspace in rows], count, page, size)


USER_ID = r"(?P<user_id>[0-9]{1,19})"
QUOTA_SET = "The new quota applies the next time the workspace starts; it is running now, so stop and start it."
routes = [
    (r"/api/admin/users/?", AdminUsersHandler),
    (rf"/api/admin/users/{USER_ID}/?", AdminUserHandler),
    (r"/api/admin/audit/?", AuditHandler),
    (r"/api/admin/workspaces/?", AdminWorkspacesHandler),
    (rf"/api/admin/workspaces/{USER_ID}/?", AdminWorkspaceHandler),
    (rf"/api/admin/workspaces/{USER_ID}/stop/?", AdminWorkspaceStopHandler),
    (rf"/api/admin/workspaces/{USER_ID}/start/?", AdminWorkspaceStartHandler),
    (rf"/api/admin/workspaces/{USER_ID}/events/?", AdminWorkspaceEventsHandler),
    (rf"/api/admin/workspaces/{USER_ID}/disk-quota/?", AdminDiskQuotaHandler),
    (r"/api/trainer/students/?", TrainerStudentsHandler),
]
