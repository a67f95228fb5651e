"""Sign-in with Google and GitHub: request and response shapes."""
from __future__ import annotations

import re
from typing import Optional

from pydantic import Field, field_validator

from models.accounts import AuthOut
from models.base import RequestModel, ResponseModel

# RFC 7636 section 4.1: 43-128 characters of [A-Z] [a-z] [0-9] "-" "." "_" "~".
CODE_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


class OAuthLoginRequest(RequestModel):
    code: str = Field(min_length=1, max_length=2048, description="The authorization code from the provider's redirect.")
    redirect_uri: str = Field(min_length=1, max_length=2048,
                              description="The redirect URI the code was issued for; one of OAUTH_REDIRECT_URIS.")
    state: Optional[str] = Field(default=None, min_length=1, max_length=4096,
                                 description="The `state` from authorize-url; when sent, it is checked.")
    code_verifier: Optional[str] = Field(default=None, max_length=128,
                                         description="The PKCE verifier from authorize-url (required with `state`).")

    @field_validator("code_verifier")
    @classmethod
    def _verifier(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not CODE_VERIFIER.match(value):
            raise ValueError("Must be 43-128 characters of letters, digits, '-', '.', '_' or '~'.")
        return value


class OAuthLoginOut(AuthOut):
    new_user: bool = Field(description="True when this sign-in created the account.")
    account_secured: bool = Field(
        default=False, description="True when this sign-in linked an existing account whose email had never been "
                                   "verified: its password was removed and every other session signed out.")
    notice: Optional[str] = Field(default=None, description="A message to show the user, when there is one.")


class AuthorizeUrlOut(ResponseModel):
    authorization_url: str = Field(description="Send the browser here.")
    state: str = Field(description="Signed, short-lived; bound to the provider and redirect_uri. "
                                   "Compare it with the `state` on the redirect, then send it with the code.")
    code_verifier: str = Field(description="PKCE verifier: keep it (e.g. in sessionStorage) and send it with the code.")
    code_challenge_method: str
    expires_in: int = Field(description="Seconds the state stays valid.")
