"""Google and GitHub on loopback, as real HTTP servers.

* `FakeGoogle`: an OpenID Connect provider. Its authorization endpoint
  "consents" at once for `next_user` and redirects with a code; its token
  endpoint checks client credentials, the code (single use), the
  redirect_uri and PKCE, like Google, and answers with an RS256 `id_token`
  signed by one of its own RSA keys; `/certs` publishes its JWKS.
* `FakeGitHub`: GitHub's OAuth endpoints (errors as 200 + `{"error"}`, as
  GitHub does) and the REST API's `/user` and `/user/emails`.

Tokens are signed with PyJWT + cryptography, not with joserfc, so the
server's verification is checked against an independent implementation.
The server reaches these only through its *_URL / *_API_BASE settings.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado import web

from tests.support.fake_server import close, listen, Recorded

_KEY_POOL: list[rsa.RSAPrivateKey] = []


def new_rsa_key() -> rsa.RSAPrivateKey:
    """RSA keys are slow to make; tests reuse a few (each fake still has its own kids)."""
    if len(_KEY_POOL) < 4:
        _KEY_POOL.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _KEY_POOL[-1]
    return _KEY_POOL[secrets.randbelow(len(_KEY_POOL))]


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Grant:
    identity: dict
    redirect_uri: str
    code_challenge: str | None = None
    nonce: str | None = None
    used: bool = False


class FakeProvider:
    authorize_path = ""
    token_path = ""

    def __init__(self, client_id: str = "test-client-id", client_secret: str = "test-client-secret"):
        self.client_id = client_id
        self.client_secret = client_secret
        self.codes: dict[str, Grant] = {}
        self.requests: list[Recorded] = []
        self.next_user: dict = {}
        self.fail_status: int | None = None  # answer every request with this HTTP status
        self.delay = 0.0  # seconds each request waits before answering
        self.url = ""

    def routes(self) -> list[tuple]:
        return []

    async def start(self) -> "FakeProvider":
        # No access log: `requests` records what arrived, and requests cut off
        # when a test stops the fake are expected.
        self._http, self.url = listen(web.Application(self.routes(), fake=self, log_function=lambda handler: None))
        return self

    async def stop(self) -> None:
        await close(self._http)

    def issue_code(self, redirect_uri: str, identity: dict | None = None, code_challenge: str | None = None,
                   nonce: str | None = None) -> str:
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(dict(identity or self.next_user), redirect_uri, code_challenge, nonce)
        return code

    def token_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == self.token_path]

    def check_grant(self, params: dict[str, str]) -> tuple[Grant | None, str]:
        """(grant, "") or (None, error code) for a token request, with the
        checks both providers make."""
        grant = self.codes.get(params.get("code", ""))
        if grant is None or grant.used:
            return None, "bad_code"
        grant.used = True  # single use, even when the rest is wrong
        if params.get("redirect_uri") != grant.redirect_uri:
            return None, "redirect_uri_mismatch"
        if grant.code_challenge is not None:
            verifier = params.get("code_verifier")
            if not verifier or s256(verifier) != grant.code_challenge:
                return None, "bad_verifier"
        return grant, ""


class FakeHandler(web.RequestHandler):
    @property
    def fake(self) -> Any:
        return self.application.settings["fake"]

    def params(self) -> dict[str, str]:
        return {name: self.get_argument(name) for name in self.request.arguments}

    async def prepare(self) -> None:
        self.fake.requests.append(Recorded(self.request.method, self.request.path, self.params(),
                                           dict(self.request.headers)))
        if self.fake.delay:
            await asyncio.sleep(self.fake.delay)
        if self.fake.fail_status:
            self.set_status(self.fake.fail_status)
            self.finish("<html><body>Server Error</body></html>")

    def json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.finish(json.dumps(body))

    def authorize_redirect(self, nonce: str | None = None) -> None:
        """Consent at once for `next_user`: back to redirect_uri with a code."""
        params = self.params()
        if params.get("client_id") != self.fake.client_id or params.get("response_type") != "code":
            return self.json({"error": "invalid_request"}, 400)
        challenge = params.get("code_challenge")
        if challenge and params.get("code_challenge_method") != "S256":
            return self.json({"error": "invalid_request"}, 400)
        code = self.fake.issue_code(params["redirect_uri"], code_challenge=challenge, nonce=nonce)
        query = urllib.parse.urlencode({"code": code, "state": params.get("state", "")})
        self.redirect(f"{params['redirect_uri']}?{query}")


# -- Google -----------------------------------------------------------------------

class FakeGoogle(FakeProvider):
    authorize_path = "/o/oauth2/v2/auth"
    token_path = "/token"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []  # kids in the JWKS, in order
        self.signing_kid = self.rotate()
        self.jwks_fetches = 0
        # Changes to the next id_tokens: claims to set (None removes), a
        # function of the signed token string, the kid to sign with.
        self.claim_changes: dict[str, Any] = {}
        self.mangle: Callable[[str], str] | None = None
        self.next_user = {"sub": "1098765432101234567890", "email": "ada@gmail.com", "email_verified": True,
                          "name": "Ada Lovelace"}

    @property
    def issuer(self) -> str:
        return self.url

    def routes(self) -> list[tuple]:
        return [(self.authorize_path, GoogleAuthorize), (self.token_path, GoogleToken), ("/certs", GoogleCerts)]

    def rotate(self, publish: bool = True) -> str:
        """A new signing key; id_tokens are signed with it from now on."""
        kid = secrets.token_hex(8)
        self.keys[kid] = new_rsa_key()
        if publish:
            self.published.append(kid)
        self.signing_kid = kid
        return kid

    def jwks(self) -> dict:
        keys = []
        for kid in self.published:
            key = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**key, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": keys}

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "azp": self.client_id, "aud": self.client_id, "iat": now, "exp": now + 3600,
                  **grant.identity}
        if grant.nonce:
            claims["nonce"] = grant.nonce
        for name, value in self.claim_changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        token = jwt.encode(claims, self.keys[self.signing_kid], algorithm="RS256",
                           headers={"kid": self.signing_kid})
        return self.mangle(token) if self.mangle else token


class GoogleAuthorize(FakeHandler):
    def get(self) -> None:
        self.authorize_redirect(nonce=self.get_argument("nonce", None))


class GoogleToken(FakeHandler):
    def post(self) -> None:
        params = self.params()
        if (params.get("client_id"), params.get("client_secret")) != (self.fake.client_id, self.fake.client_secret):
            return self.json({"error": "invalid_client", "error_description": "Unauthorized"}, 401)
        if params.get("grant_type") != "authorization_code":
            return self.json({"error": "unsupported_grant_type"}, 400)
        grant, problem = self.fake.check_grant(params)
        if grant is None:
            return self.json({"error": "invalid_grant", "error_description": "Bad Request"}, 400)
        self.json({"access_token": "ya29." + secrets.token_urlsafe(32), "expires_in": 3599, "token_type": "Bearer",
                   "scope": "openid https://www.googleapis.com/auth/userinfo.email", "id_token": self.fake.id_token(grant)})


class GoogleCerts(FakeHandler):
    def get(self) -> None:
        self.fake.jwks_fetches += 1
        self.json(self.fake.jwks(), headers={"Cache-Control": "public, max-age=19800, must-revalidate"})


# -- GitHub -----------------------------------------------------------------------

class FakeGitHub(FakeProvider):
    authorize_path = "/login/oauth/authorize"
    token_path = "/login/oauth/access_token"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.access_tokens: dict[str, dict] = {}
        self.next_user = {"id": 583231, "login": "octocat", "name": "The Octocat",
                          "emails": [{"email": "octocat@github.com", "primary": True, "verified": True,
                                      "visibility": "public"}]}

    @property
    def api_base(self) -> str:
        return self.url + "/api"

    def routes(self) -> list[tuple]:
        return [(self.authorize_path, GitHubAuthorize), (self.token_path, GitHubToken),
                ("/api/user", GitHubUser), ("/api/user/emails", GitHubEmails)]


ERROR_DESCRIPTIONS = {
    "bad_verification_code": "The code passed is incorrect or expired.",
    "redirect_uri_mismatch": "The redirect_uri MUST match the registered callback URL for this application.",
    "incorrect_client_credentials": "The client_id and/or client_secret passed are incorrect.",
}


class GitHubAuthorize(FakeHandler):
    def get(self) -> None:
        self.authorize_redirect()


class GitHubToken(FakeHandler):
    def post(self) -> None:
        params = self.params()
        if (params.get("client_id"), params.get("client_secret")) != (self.fake.client_id, self.fake.client_secret):
            return self.error("incorrect_client_credentials")
        grant, problem = self.fake.check_grant(params)
        if grant is None:
            return self.error("redirect_uri_mismatch" if problem == "redirect_uri_mismatch" else "bad_verification_code")
        token = "gho_" + secrets.token_urlsafe(27)
        self.fake.access_tokens[token] = grant.identity
        self.json({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})

    def error(self, code: str) -> None:
        # GitHub answers 200 with an error object.
        self.json({"error": code, "error_description": ERROR_DESCRIPTIONS[code],
                   "error_uri": "https://docs.github.com/apps/troubleshooting-oauth-app-access-token-request-errors"})


class GitHubApi(FakeHandler):
    def account(self) -> dict | None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        account = self.fake.access_tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if account is None:
            self.json({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                       "status": "401"}, 401)
        return account


class GitHubUser(GitHubApi):
    def get(self) -> None:
        account = self.account()
        if account is not None:
            self.json({key: value for key, value in account.items() if key != "emails"}
                      | {"type": "User", "site_admin": False})


class GitHubEmails(GitHubApi):
    def get(self) -> None:
        account = self.account()
        if account is not None:
            self.json(account["emails"])
