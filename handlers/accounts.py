"""Accounts and tokens: registration, login, refresh, logout, profile, roles."""
from __future__ import annotations

from handlers.base import APIHandler, Operation
from models.accounts import (AuthOut, CheckEmailRequest, ExistsOut, LoginOut, LoginRequest, MessageOut,
                             ProfileOut, ProfileUpdate, RefreshRequest, RegisterRequest, RoleUpdateOut,
                             TokenPairOut, UpdateRoleRequest, email_key, profile_model, user_model)
from models.common import ErrorOut
from services.accounts import InvalidCredentials

AUTH = ("auth",)
USERS = ("users",)


class RegisterHandler(APIHandler):
    operations = {"post": Operation("Register a student or trainer", body=RegisterRequest,
                                    responses={201: AuthOut, 400: ErrorOut, 429: ErrorOut}, tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(RegisterRequest)
        user, tokens = await self.services.accounts.register(**request.model_dump())
        self.user_id = user["_id"]
        await self.services.email_links.send_verification(user)
        self.send({**tokens.as_dict(), "user": user_model(user)}, 201)


class LoginHandler(APIHandler):
    operations = {"post": Operation(
        "Log in under a role", body=LoginRequest,
        responses={200: LoginOut, 400: ErrorOut, 401: ErrorOut, 403: "Role mismatch: "
                   "{error, detail, actual_role}; or a disabled account", 429: ErrorOut}, tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(LoginRequest)
        async with self.services.ratelimits.attempt("login_failures", email_key(request.email), InvalidCredentials,
                                                    "Too many failed logins for this account. Try again later."):
            user, tokens = await self.services.accounts.login(request.email, request.password, request.role)
        self.user_id = user["_id"]
        self.send({**tokens.as_dict(), "user": user_model(user), "redirect_url": f"/{request.role}/dashboard"})


class RefreshHandler(APIHandler):
    operations = {"post": Operation("Exchange a refresh token for a new pair (the old one dies)",
                                    body=RefreshRequest, responses={200: TokenPairOut, 400: ErrorOut,
                                                                    401: ErrorOut}, tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(RefreshRequest)
        pair = await self.services.accounts.refresh(request.refresh)
        self.send(pair.as_dict())


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
        self.send(profile_model(user))

    async def patch(self) -> None:
        user = await self.require_user()
        request = self.parse_body(ProfileUpdate)
        updated = await self.services.accounts.update_profile(user["_id"], request.model_dump())
        self.send(profile_model(updated))


class UpdateRoleHandler(APIHandler):
    operations = {"post": Operation(
        "Change a user's role (admins; admin roles only by a superadmin)", body=UpdateRoleRequest, auth=True,
        responses={200: RoleUpdateOut, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut,
                   409: ErrorOut}, tags=USERS)}

    async def post(self) -> None:
        user = await self.require_user()
        request = self.parse_body(UpdateRoleRequest)
        target = request.user_id if request.user_id is not None else user["_id"]
        changed = await self.services.accounts.change_role(user, target, request.role)
        self.send({"message": "Role updated successfully", "user": changed})


routes = [
    (r"/api/auth/registration/?", RegisterHandler),
    (r"/api/users/login/?", LoginHandler),
    (r"/api/auth/token/refresh/?", RefreshHandler),
    (r"/api/users/logout/?", LogoutHandler),
    (r"/api/users/check-email/?", CheckEmailHandler),
    (r"/api/users/profile/?", ProfileHandler),
    (r"/api/users/update-role/?", UpdateRoleHandler),
]
