"""Email verification and password reset: request shapes (the reset bodies
are the ones the original platform's clients send, dj-rest-auth style)."""
from __future__ import annotations

from pydantic import Field

from models.accounts import EmailField
from models.base import RequestModel


class VerifyEmailRequest(RequestModel):
    key: str = Field(min_length=1, max_length=256, description="The `key` from the verification link.")


class ResendVerificationRequest(EmailField):
    pass


class PasswordResetRequest(EmailField):
    pass


class PasswordResetConfirmRequest(RequestModel):
    uid: str = Field(min_length=1, max_length=64, description="The `uid` from the reset link.")
    token: str = Field(min_length=1, max_length=256, description="The `token` from the reset link.")
    new_password1: str = Field(max_length=1024)
    new_password2: str = Field(max_length=1024)
