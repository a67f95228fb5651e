"""django-allauth's sign-in paths, which the original frontend's Google and
GitHub buttons navigate to: `/accounts/<provider>/login/` starts our own
OAuth flow (services/oauth.py: signed state bound to provider, redirect URI,
PKCE S256 challenge and Google's nonce) and sends the browser to the
provider; `/accounts/<provider>/login/callback/` finishes it.

A browser that navigates keeps no `code_verifier` of its own, so the server
keeps it for this browser in a cookie (HttpOnly, SameSite=Lax, 10 minutes,
only under /accounts/<provider>/login/), next to the state it belongs to:
the callback refuses a state this browser did not start (login CSRF) and
spends the cookie. The tokens then go to OAUTH_LOGIN_REDIRECT in the URL
*fragment* (never sent to a server, so in no access log), which the page
there reads and removes."""
from __future__ import annotations

import hmac
import json
from urllib.parse import urlencode, urljoin

from handlers.base import APIHandler, Operation
from models.accounts import user_model
from models.common import ErrorOut
from services.errors import ApiError
from proxy.headers import request_scheme

COOKIE = "apranova_oauth"
COOKIE_SECONDS = 600  # the state's own lifetime
OAUTH = ("oauth",)


class AliasBase(APIHandler):
    def callback_uri(self, provider: str) -> str:
        """This server's callback, on the origin the browser came to (PUBLIC_URL's when set)."""
        base = self.config.public_url or f"{request_scheme(self.request, self.config.trusted_proxies)}://" \
                                         f"{self.request.host}"
        return f"{base.rstrip('/')}/accounts/{provider}/login/callback/"

    def cookie_path(self, provider: str) -> str:
        return f"/accounts/{provider}/login/"


class AllauthLoginHandler(AliasBase):
    operations = {"get": Operation(
        "django-allauth's sign-in path (the original frontend's buttons): redirect to the provider", tags=OAUTH,
        description="302 to the provider's authorization URL from our own start (signed state, PKCE S256), with "
                    "the code_verifier kept for this browser in an HttpOnly cookie. The callback "
                    "`/accounts/<provider>/login/callback/` must be listed in OAUTH_REDIRECT_URIS.",
        responses={302: "To the provider", 400: ErrorOut, 503: ErrorOut})}

    async def get(self, provider: str) -> None:
        start = self.services.oauth.authorization_url(provider, self.callback_uri(provider))
        self.set_cookie(COOKIE, f"{start['state']}~{start['code_verifier']}", path=self.cookie_path(provider),
                        expires_days=None, max_age=COOKIE_SECONDS, httponly=True, samesite="Lax",
                        secure=self.callback_uri(provider).startswith("https:"))
        self.set_header("Cache-Control", "no-store")
        self.redirect(start["authorization_url"])


class AllauthCallbackHandler(AliasBase):
    operations = {"get": Operation(
        "Where the provider sends the browser back after /accounts/<provider>/login/", tags=OAUTH,
        query={"code": "From the provider.", "state": "From the provider; must be the one this browser started."},
        description="Signs in (as POST /api/auth/<provider>/ does) and redirects to OAUTH_LOGIN_REDIRECT with "
                    "`#access=...&refresh=...&user=...` in the fragment. 400 `OAuth failed` for a state this "
                    "browser did not start, a reused or wrong code, or a refusal at the provider.",
        responses={302: "To OAUTH_LOGIN_REDIRECT, the tokens in the fragment", 400: ErrorOut, 403: ErrorOut,
                   502: ErrorOut, 503: ErrorOut})}

    async def get(self, provider: str) -> None:
        kept = self.get_cookie(COOKIE) or ""
        self.clear_cookie(COOKIE, path=self.cookie_path(provider))
        state, _, verifier = kept.partition("~")
        returned = self.get_query_argument("state", "")
        code = self.get_query_argument("code", "")
        if not state or not hmac.compare_digest(state.encode(), returned.encode()):
            raise ApiError(400, "OAuth failed", "This sign-in was not started in this browser, or took too long. "
                                                "Start again.")
        if not code:
            raise ApiError(400, "OAuth failed", "The provider did not sign you in.")
        result = await self.services.oauth.sign_in(provider, code, self.callback_uri(provider), state=state,
                                                   code_verifier=verifier)
        self.user_id = result.user["_id"]
        fragment = urlencode({"access": result.tokens.access, "refresh": result.tokens.refresh,
                              "user": json.dumps(user_model(result.user), separators=(",", ":")),
                              "new_user": str(result.created).lower()})
        target = urljoin(self.config.public_url or f"{request_scheme(self.request, self.config.trusted_proxies)}://"
                                                    f"{self.request.host}/", self.config.oauth_login_redirect)
        self.set_header("Cache-Control", "no-store")
        self.redirect(f"{target.split('#', 1)[0]}#{fragment}")


routes = [
    (r"/accounts/(google|github)/login/?", AllauthLoginHandler),
    (r"/accounts/(google|github)/login/callback/?", AllauthCallbackHandler),
]
