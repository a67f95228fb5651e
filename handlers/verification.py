"""Email verification and password reset by emailed links (services/verification.py)."""
from __future__ import annotations

from handlers.base import APIHandler, Operation
from models.accounts import MessageOut
from models.common import ErrorOut
from models.verification import (PasswordResetConfirmRequest, PasswordResetRequest, ResendVerificationRequest,
                                 VerifyEmailRequest)

AUTH = ("auth",)
RESET_SENT = "If an account with this email exists, a password reset link has been sent to it."
VERIFY_SENT = "If an account with this email needs verifying, a verification link has been sent to it."
NO_MAIL = " 503 when the server has no SMTP settings."


class VerifyEmailHandler(APIHandler):
    operations = {"post": Operation("Verify an email address with the key from the mailed link",
                                    body=VerifyEmailRequest, responses={200: MessageOut, 400: ErrorOut}, tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(VerifyEmailRequest)
        await self.services.email_links.verify(request.key)
        self.send({"message": "Email verified."})


class ResendVerificationHandler(APIHandler):
    operations = {"post": Operation("Mail a new verification link (the same answer for any email)",
                                    body=ResendVerificationRequest, description=NO_MAIL.strip(),
                                    responses={200: MessageOut, 400: ErrorOut, 503: ErrorOut}, tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(ResendVerificationRequest)
        await self.services.email_links.resend_verification(request.email)
        self.send({"message": VERIFY_SENT})


class PasswordResetHandler(APIHandler):
    operations = {"post": Operation("Mail a password-reset link (the same answer whether or not the email exists)",
                                    body=PasswordResetRequest, description=NO_MAIL.strip(),
                                    responses={200: MessageOut, 400: ErrorOut, 503: ErrorOut}, tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(PasswordResetRequest)
        await self.services.email_links.request_reset(request.email)
        self.send({"message": RESET_SENT})


class PasswordResetConfirmHandler(APIHandler):
    operations = {"post": Operation(
        "Set a new password with the uid and token from the mailed link; every session is signed out",
        body=PasswordResetConfirmRequest, responses={200: MessageOut, 400: ErrorOut}, tags=AUTH)}

    async def post(self) -> None:
        request = self.parse_body(PasswordResetConfirmRequest)
        await self.services.email_links.confirm_reset(**request.model_dump())
        self.send({"message": "Your password has been reset. Log in with the new password."})


routes = [
    (r"/api/auth/registration/verify-email/?", VerifyEmailHandler),
    (r"/api/auth/registration/resend-email/?", ResendVerificationHandler),
    (r"/api/auth/password/reset/?", PasswordResetHandler),
    (r"/api/auth/password/reset/confirm/?", PasswordResetConfirmHandler),
]
