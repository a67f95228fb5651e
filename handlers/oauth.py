"""Sign-in with Google and GitHub: the authorization URL, and the code
exchange that answers with the same token pair as a password login."""
from __future__ import annotations

from handlers.base import APIHandler, Operation
from models.accounts import user_model
from models.common import ErrorOut
from models.oauth import AuthorizeUrlOut, OAuthLoginOut, OAuthLoginRequest
from services.errors import field_error

OAUTH = ("oauth",)
SECURED_NOTICE = ("An account with this email already existed, but its email address had never been verified. "
                  "To keep it yours alone, its password has been removed and every other session signed out. "
                  "Sign in with this provider, or set a new password with 'forgot password'.")


def _login_operation(title: str) -> Operation:
    return Operation(
        f"Sign in with {title}: exchange an authorization code for tokens", body=OAuthLoginRequest, tags=OAUTH,
        description=f"Signs in the user whose {title} account this is: a known {title} account signs in its "
                    "user; else a verified email that matches a user links to that user; else a new student "
                    "account is made (no password). Send `state` and `code_verifier` from authorize-url to "
                    "have them checked. 400 `OAuth failed` when the code, state or email is refused; 502 when "
                    f"{title} is unreachable; 503 when {title} sign-in is not configured.",
        responses={200: OAuthLoginOut, 400: ErrorOut, 403: ErrorOut, 429: ErrorOut, 502: ErrorOut, 503: ErrorOut})


def _authorize_operation(title: str) -> Operation:
    return Operation(
        f"{title}'s authorization URL, with a signed state and a PKCE challenge", tags=OAUTH,
        query={"redirect_uri": "Where the provider sends the browser back; one of OAUTH_REDIRECT_URIS."},
        responses={200: AuthorizeUrlOut, 400: ErrorOut, 429: ErrorOut, 503: ErrorOut})


class OAuthLoginHandler(APIHandler):
    provider = ""

    async def post(self) -> None:
        request = self.parse_body(OAuthLoginRequest)
        result = await self.services.oauth.sign_in(self.provider, request.code, request.redirect_uri,
                                                   state=request.state, code_verifier=request.code_verifier)
        self.user_id = result.user["_id"]
        self.send({**result.tokens.as_dict(), "user": user_model(result.user), "new_user": result.created,
                   "account_secured": result.secured, "notice": SECURED_NOTICE if result.secured else None})


class AuthorizeUrlHandler(APIHandler):
    provider = ""

    async def get(self) -> None:
        redirect_uri = self.get_query_argument("redirect_uri", None, strip=False)
        if not redirect_uri:
            raise field_error("redirect_uri", "This field is required.")
        self.send(self.services.oauth.authorization_url(self.provider, redirect_uri))


class GoogleLoginHandler(OAuthLoginHandler):
    provider = "google"
    operations = {"post": _login_operation("Google")}


class GitHubLoginHandler(OAuthLoginHandler):
    provider = "github"
    operations = {"post": _login_operation("GitHub")}


class GoogleAuthorizeUrlHandler(AuthorizeUrlHandler):
    provider = "google"
    operations = {"get": _authorize_operation("Google")}


class GitHubAuthorizeUrlHandler(AuthorizeUrlHandler):
    provider = "github"
    operations = {"get": _authorize_operation("GitHub")}


routes = [
    (r"/api/auth/google/?", GoogleLoginHandler),
    (r"/api/auth/github/?", GitHubLoginHandler),
    (r"/api/auth/google/authorize-url/?", GoogleAuthorizeUrlHandler),
    (r"/api/auth/github/authorize-url/?", GitHubAuthorizeUrlHandler),
]
