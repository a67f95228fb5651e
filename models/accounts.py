"""Account request and response shapes."""
from __future__ import annotations

import re
import unicodedata
from typing import Literal, Optional, get_args

from pydantic import Field, field_validator

from models.base import RequestModel, ResponseModel, iso
from models.enrollment import EnrollmentStatus, enrollment_of

# local@domain.tld; unicode letters allowed; no spaces or control characters; one @.
EMAIL_RE = re.compile(r"^[^\s@\x00-\x1f\x7f]{1,64}@[^\s@.\x00-\x1f\x7f]+(\.[^\s@.\x00-\x1f\x7f]+)+$")
Role = Literal["student", "trainer", "admin", "superadmin"]
ROLES: tuple[str, ...] = get_args(Role)
SELF_SERVICE_ROLES = ("student", "trainer")


def normalize_email(value: str) -> str:
    value = unicodedata.normalize("NFC", value.strip())
    # Control, format (Cf: zero-width space, right-to-left override, ...),
    # surrogate, private-use and unassigned characters: invisible or
    # ambiguous, they make look-alikes of real addresses.
    if len(value) > 254 or not EMAIL_RE.match(value) or any(unicodedata.category(c)[0] == "C" for c in value):
        raise ValueError("Enter a valid email address.")
    return value


def email_key(email: str) -> str:
    """The uniqueness key: the same address in any case, or with its accents
    written as combining characters, is one account."""
    return unicodedata.normalize("NFKC", email.strip()).casefold()


def not_blank(value: str) -> str:
    """A name as typed, stripped; blank is refused (the contract's message)."""
    value = value.strip()
    if not value:
        raise ValueError("This field may not be blank.")
    return value


class EmailField(RequestModel):
    email: str = Field(max_length=254, description="Email address (trimmed; unique ignoring case).")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)


class RegisterRequest(EmailField):
    name: str = Field(min_length=1, max_length=150)
    password1: str = Field(max_length=1024)
    password2: str = Field(max_length=1024)
    role: str = "student"
    track: Optional[str] = Field(default=None, max_length=32, description="One of the configured TRACKS codes.")
    # The original sign-up page's consent fields; optional, as the contract has
    # them absent. (Its `payment_verified` is ignored: payment is never a client's claim.)
    privacy_accepted: Optional[bool] = Field(default=None,
                                             description="Privacy policy accepted (recorded with the time).")
    privacy_version: Optional[str] = Field(default=None, min_length=1, max_length=32,
                                           description="Version of the privacy policy shown.")
    marketing_consent: Optional[bool] = Field(default=None, description="Marketing consent (recorded with the time).")

    _name = field_validator("name")(not_blank)

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in SELF_SERVICE_ROLES:
            raise ValueError("Role must be 'student' or 'trainer'.")
        return value


class LoginRequest(RequestModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)
    role: Role


class AuthLoginRequest(RequestModel):
    """The original client's login: the role may be left out (then the
    stored role is the one logged in)."""
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)
    role: Optional[Role] = None


class RefreshRequest(RequestModel):
    refresh: str = Field(max_length=4096)


class CheckEmailRequest(RequestModel):
    email: str = Field(max_length=254)


class ProfileUpdate(RequestModel):
    name: Optional[str] = Field(default=None, min_length=1, max_length=150)
    track: Optional[str] = Field(default=None, max_length=32)


class UpdateRoleRequest(RequestModel):
    role: Role
    user_id: Optional[int] = Field(default=None, ge=1, le=2**63 - 1)  # BSON int64


class UserOut(ResponseModel):
    id: int
    email: str
    name: str
    role: str
    track: Optional[str] = None


class TokenPairOut(ResponseModel):
    access: str
    refresh: str


class AuthOut(TokenPairOut):
    user: UserOut


class RegisterOut(AuthOut):
    trainer_assigned: bool = Field(description="A trainer of the student's track was assigned.")
    trainer_name: Optional[str] = None


class TrainerOut(ResponseModel):
    id: int
    name: str
    email: str


class StudentOut(ResponseModel):
    id: int
    name: str
    email: str
    track: Optional[str] = None
    enrollment_status: EnrollmentStatus


class StudentListOut(ResponseModel):
    students: list[StudentOut]


class LoginOut(AuthOut):
    redirect_url: str


class ProfileOut(UserOut):
    created_at: str
    updated_at: str
    enrollment_status: EnrollmentStatus = Field(description="The original platform's vocabulary; PENDING_PAYMENT "
                                                            "until a confirmed payment makes it ENROLLED.")
    enrolled_at: Optional[str] = Field(default=None, description="When the first confirmed payment enrolled the user.")
    payment_verified: bool = False
    privacy_accepted: bool = Field(default=False, description="The sign-up accepted the privacy policy.")
    privacy_accepted_at: Optional[str] = None
    username: str = Field(description="The sign-in name: the email address (there is no other).")
    workspace_url: str = Field(default="", description="The student's workspace origin; empty without a workspace.")
    assigned_trainer: Optional[TrainerOut] = Field(default=None, description="A student's trainer (none: null).")


class MessageOut(ResponseModel):
    message: str


class ExistsOut(ResponseModel):
    exists: bool


class RoleUpdateUser(ResponseModel):
    id: int
    role: str


class RoleUpdateOut(ResponseModel):
    message: str
    user: RoleUpdateUser


def user_model(user: dict) -> dict:
    """The one place a stored user becomes the short `user` object."""
    return {"id": user["_id"], "email": user["email"], "name": user["name"], "role": user["role"],
            "track": user.get("track")}


def profile_model(user: dict) -> dict:
    """The profile without the parts other services know (trainer, workspace_url)."""
    consent = user.get("consent") or {}
    model = user_model(user)
    model.update({
        "created_at": iso(user["created_at"]),
        "updated_at": iso(user["updated_at"]),
        "enrollment_status": enrollment_of(user),
        "enrolled_at": iso(user.get("enrolled_at")),
        "payment_verified": bool(user.get("payment_verified", False)),
        "privacy_accepted": bool(consent.get("privacy_accepted")),
        "privacy_accepted_at": iso(consent.get("privacy_accepted_at")),
        "username": user["email"],
    })
    return model
