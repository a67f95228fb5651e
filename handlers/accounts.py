"""Accounts and tokens: registration, login, refresh, logout, profile, roles."""
from __future__ import annotations

from handlers.base import APIHandler, Operation
from models.accounts import (AuthLoginRequest, CheckEmailRequest, ExistsOut, LoginOut, LoginRequest, MessageOut,
                             ProfileOut, ProfileUpdate, RefreshRequest, RegisterOut, RegisterRequest, RoleUpdateOut,
                             StudentListOut, TokenPairOut, UpdateRoleRequest, email_key, profile_model, user_model)
from models.common import ErrorOut
from services.accounts import InvalidCredentials
from services.students import CONSENT_FIELDS, consent_record, trainer_model
from services.tokens import utcnow

AUTH = ("auth",)
USERS = ("users",)


class RegisterHandler(APIHandler):
    operations = {"post": Operation("Register a student or trainer", body=RegisterRequest,
                                    responses={201: RegisterOut, 400: ErrorOut, 429: ErrorOut}, tags=AUTH,
                                    description="A new student gets the trainer of their track with the fewest "
                                                "students (`trainer_assigned`, `trainer_name`).")}

    async def post(self) -> None:
        request = self.parse_body(RegisterRequest)
        consent = consent_record(utcnow(), **request.model_dump(include=CONSENT_FIELDS))
        user, tokens = await self.services.accounts.register(**request.model_dump(exclude=CONSENT_FIELDS),
                                                             **({"consent": consent} if consent else {}))
        self.user_id = user["_id"]
        trainer = await self.services.students.assign(user)
        await self.services.email_links.send_verification(user)
        self.send({**tokens.as_dict(), "user": user_model(user), "trainer_assigned": trainer is not None,
                   "trainer_name": trainer["name"] if trainer else None}, 201)


LOGIN_RESPONSES = {200: LoginOut, 400: ErrorOut, 401: ErrorOut,
                   403: "Role mismatch: {error, detail, actual_role}; or a disabled account", 429: ErrorOut}


class LoginHandler(APIHandler):
    body_model: type[LoginRequest] | type[AuthLoginRequest] = LoginRequest
    operations = {"post": Operation("Log in under a role", body=LoginRequest, responses=LOGIN_RESPONSES,
                                    tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(self.body_model)
        async with self.services.ratelimits.attempt("login_failures", email_key(request.email), InvalidCredentials,
                                                    "Too many failed logins for this account. Try again later."):
            user, tokens = await self.services.accounts.login(request.email, request.password, request.role)
        self.user_id = user["_id"]
        role = request.role or user["role"]
        self.send({**tokens.as_dict(), "user": user_model(user), "redirect_url": f"/{role}/dashboard"})


class AuthLoginHandler(LoginHandler):
    """The original platform's login path; the role is optional (left out:
    the stored role). Otherwise the same as POST /api/users/login/."""
    body_model = AuthLoginRequest
    operations = {"post": Operation("Log in (alias of /api/users/login/; role optional)", body=AuthLoginRequest,
                                    responses=LOGIN_RESPONSES, tags=AUTH, deprecated=True)}


class RefreshHandler(APIHandler):
    operations = {"post": Operation("Exchange a refresh token for a new pair (the old one dies)",
                                    body=RefreshRequest, responses={200: TokenPairOut, 400: ErrorOut,
                                                                    401: ErrorOut}, tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(RefreshRequest)
        pair = await self.services.accounts.refresh(request.refresh)
        self.send(pair.as_dict())


class UsersRefreshHandler(RefreshHandler):
    """The original platform's refresh path; the same as POST /api/auth/token/refresh/."""
    operations = {"post": Operation("Refresh (alias of /api/auth/token/refresh/)", body=RefreshRequest,
                                    responses=RefreshHandler.operations["post"].responses, tags=AUTH,
                                    deprecated=True)}


class LogoutHandler(APIHandler):
    operations = {"post": Operation("Log out: revoke this login's tokens", body=RefreshRequest, auth=True,
                                    responses={200: MessageOut, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut},
                                    tags=AUTH)}

    async def post(self) -> None:
        user = await self.require_user()
        request = self.parse_body(RefreshRequest)
        await self.services.tokens.logout(request.refresh, user["_id"])
        self.send({"message": "Logout successful"})


class CheckEmailHandler(APIHandler):
    operations = {"post": Operation("Is an email registered?", body=CheckEmailRequest,
                                    responses={200: ExistsOut, 400: ErrorOut}, tags=USERS)}

    async def post(self) -> None:
        request = self.parse_body(CheckEmailRequest)
        self.send({"exists": await self.services.accounts.email_exists(request.email)})


class ProfileHandler(APIHandler):
    operations = {
        "get": Operation("The caller's profile", auth=True, responses={200: ProfileOut, 401: ErrorOut},
                         tags=USERS),
        "patch": Operation("Change the caller's name or track", body=ProfileUpdate, auth=True,
                           responses={200: ProfileOut, 400: ErrorOut, 401: ErrorOut}, tags=USERS),
    }

    async def get(self) -> None:
        user = await self.require_user()
        self.send(await self.profile(user))

    async def patch(self) -> None:
        user = await self.require_user()
        request = self.parse_body(ProfileUpdate)
        updated = await self.services.accounts.update_profile(user["_id"], request.model_dump())
        self.send(await self.profile(updated))

    async def profile(self, user: dict) -> dict:
        trainer = await self.services.students.trainer_of(user)
        return {**profile_model(user), "assigned_trainer": trainer_model(trainer) if trainer else None,
                "workspace_url": await self.services.workspaces.origin_of(user["_id"])}


class MyStudentsHandler(APIHandler):
    operations = {"get": Operation("A trainer's students (assigned to them, or of their track with no trainer)",
                                   auth=True, responses={200: StudentListOut, 401: ErrorOut, 403: ErrorOut},
                                   tags=USERS)}

    async def get(self) -> None:
        user = await self.require_user()
        self.send({"students": await self.services.students.students_of(user)})


class UpdateRoleHandler(APIHandler):
    operations = {"post": Operation(
        "Change a user's role (admins; admin roles only by a superadmin)", body=UpdateRoleRequest, auth=True,
        responses={200: RoleUpdateOut, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut,
                   409: ErrorOut}, tags=USERS)}

    async def post(self) -> None:
        user = await self.require_user()
        request = self.parse_body(UpdateRoleRequest)
        target = request.user_id if request.user_id is not None else user["_id"]
        changed = await self.services.admin.change_role(user, target, request.role)  # audited
        self.send({"message": "Role updated successfully", "user": changed})


routes = [
    (r"/api/auth/registration/?", RegisterHandler),
    (r"/api/users/login/?", LoginHandler),
    (r"/api/auth/token/refresh/?", RefreshHandler),
    (r"/api/users/logout/?", LogoutHandler),
    (r"/api/users/check-email/?", CheckEmailHandler),
    (r"/api/users/profile/?", ProfileHandler),
    (r"/api/users/update-role/?", UpdateRoleHandler),
    (r"/api/users/my-students/?", MyStudentsHandler),
    # Aliases the original platform's clients call (deprecated in the OpenAPI document).
    (r"/api/auth/login/?", AuthLoginHandler),
    (r"/api/users/refresh/?", UsersRefreshHandler),
]
