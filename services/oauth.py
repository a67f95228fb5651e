"""Sign-in with Google and GitHub (OAuth 2.0 authorization code flow, PKCE).

Rules, each in one place:

* `OAuthService.authorization_url`: the provider's URL with a signed `state`
  (HS256 with the server's JWT secret, 10 minutes, bound to the provider,
  the redirect_uri, the PKCE challenge and, for Google, the OIDC nonce).
* `OAuthService.check_state`: a posted `state` must be ours, fresh, for this
  provider and redirect_uri, and match the posted `code_verifier`.
* `GoogleProvider.identity`: code -> id_token verified with joserfc: RS256
  signature against Google's JWKS (cached; refetched once for an unknown
  kid), `iss`, `aud`, `exp`, the nonce, and `email_verified`.
* `GitHubProvider.identity`: code -> `/user` and the primary verified email
  from `/user/emails`.
* `OAuthService.account_for`: a known (provider, subject) signs in its user
  (even if the email changed at the provider); else a verified email that
  matches a user links to it (and when that user's email was never
  verified, hands the account over: old password removed, every session
  revoked); else a new student with no usable password.

Errors: not configured -> 503; the user's code, state or email refused ->
400 "OAuth failed"; the provider unreachable, failing or refusing this
server's credentials -> 502. Codes, tokens and secrets are never logged.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import re
import secrets
import ssl
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import jwt as pyjwt
from joserfc import jwt as josejwt
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError, MissingClaimError
from joserfc.jwk import KeySet, RSAKey
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from models.accounts import normalize_email
from services.accounts import AccountService
from services.errors import ApiError, Forbidden, ServiceUnavailable, ValidationFailed, field_error
from services.settings import Settings
from services.tokens import TokenPair, TokenService, utcnow

with warnings.catch_warnings():
    # Authlib 1.9 announces a move to the httpx2 package; this project pins httpx.
    # (authlib.deprecate installs an "always" filter when imported: import it first.)
    import authlib.deprecate  # noqa: F401
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

log = logging.getLogger("apranova.oauth")

STATE_LIFETIME = 600  # seconds between authorize-url and the POST of the code
STATE_TYPE = "oauth_state"  # never an access/refresh token (TokenService checks `type`)
CLOCK_LEEWAY = 60  # seconds of clock skew allowed on id_token times
JWKS_DEFAULT_MAX_AGE = 3600
JWKS_MAX_AGE_RANGE = (60, 86400)
ID_TOKEN_ALGORITHMS = ["RS256"]
# Token-endpoint errors that mean this server's client id/secret is wrong:
# the operator's problem (502), not the user's (400).
CLIENT_ERRORS = {"invalid_client", "unauthorized_client", "incorrect_client_credentials"}
PROVIDER_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_NAME = 150


class OAuthFailed(ApiError):
    """The provider refused the user's code, or what it says about the user
    is not enough to sign them in."""

    def __init__(self, message: str, provider_error: str | None = None):
        details = {"provider_error": provider_error} if provider_error else None
        super().__init__(400, "OAuth failed", message, details)


def provider_unreachable(title: str) -> ApiError:
    return ApiError(502, "OAuth provider unreachable", f"{title} could not be reached. Try again shortly.")


def provider_failed(title: str, why: str = "failed to answer") -> ApiError:
    return ApiError(502, "OAuth provider error", f"{title} {why}. Try again shortly.")


def s256(code_verifier: str) -> str:
    """The PKCE S256 code challenge (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _error_code(value: Any) -> str | None:
    """A provider's error code, only when it looks like one (safe to echo and log)."""
    return value if isinstance(value, str) and PROVIDER_ERROR_CODE.match(value) else None


def _clean_name(name: Any, email: str) -> str:
    if isinstance(name, str) and name.strip():
        return " ".join(name.split())[:MAX_NAME]
    return email.split("@", 1)[0][:MAX_NAME]


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in (email already verified by it)."""
    provider: str
    subject: str
    email: str
    name: str


@dataclass(frozen=True)
class SignIn:
    user: dict
    tokens: TokenPair
    created: bool
    secured: bool = False  # an unverified account was handed over to the email's owner


# -- providers ---------------------------------------------------------------------

class OAuthProvider:
    name = ""
    title = ""
    scope = ""

    def __init__(self, client_id: str, client_secret: str, authorize_url: str, token_url: str,
                 http: httpx.AsyncClient, timeout: httpx.Timeout):
        self.client_id = client_id
        self.client_secret = client_secret
        self.authorize_url = authorize_url
        self.token_url = token_url
        self.http = http
        self.timeout = timeout

    @property
    def configured(self) -> bool:
        return bool(self.client_id and self.client_secret)

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        # client_secret_post: GitHub documents only body credentials; Google takes both.
        return AsyncOAuth2Client(client_id=self.client_id, client_secret=self.client_secret, scope=self.scope,
                                 redirect_uri=redirect_uri, token_endpoint_auth_method="client_secret_post",
                                 code_challenge_method="S256", timeout=self.timeout, follow_redirects=False,
                                 verify=_tls())  # not a CA bundle loaded per sign-in (~60 ms)

    def authorization_url(self, redirect_uri: str, state: str, code_verifier: str, nonce: str) -> str:
        client = self._client(redirect_uri)  # only builds a URL; never sends
        url, _ = client.create_authorization_url(self.authorize_url, state=state, code_verifier=code_verifier,
                                                 **self.authorize_params(nonce))
        return url

    def authorize_params(self, nonce: str) -> dict[str, str]:
        return {}

    async def exchange(self, code: str, redirect_uri: str, code_verifier: str | None) -> dict:
        """The token endpoint's answer for an authorization code."""
        extra = {"code_verifier": code_verifier} if code_verifier else {}
        try:
            async with self._client(redirect_uri) as client:
                return dict(await client.fetch_token(self.token_url, grant_type="authorization_code", code=code,
                                                     **extra))
        except OAuthError as exc:
            error = _error_code(exc.error)
            if error in CLIENT_ERRORS:
                log.error("%s refused this server's client credentials (%s)", self.name, error)
                raise provider_failed(self.title, "refused this server's client credentials") from None
            log.info("%s token exchange refused: %s", self.name, error or "unknown error")
            raise OAuthFailed(f"{self.title} did not accept the authorization code: it is wrong, expired, "
                              "already used, or was issued for another redirect_uri.", error) from None
        except httpx.HTTPStatusError as exc:
            log.warning("%s token endpoint answered HTTP %d", self.name, exc.response.status_code)
            raise provider_failed(self.title) from None
        except httpx.HTTPError as exc:  # connect errors, timeouts, broken connections
            log.warning("%s token endpoint unreachable: %s", self.name, type(exc).__name__)
            raise provider_unreachable(self.title) from None
        except ValueError:  # a 2xx that is not a JSON object
            log.warning("%s token endpoint answered something that is not JSON", self.name)
            raise provider_failed(self.title, "gave an unexpected answer") from None

    async def identity(self, code: str, redirect_uri: str, code_verifier: str | None,
                       nonce: str | None) -> Identity:
        raise NotImplementedError


class JWKSCache:
    """A provider's signing keys: cached for the max-age it announces, and
    fetched again (once per verification) when a token names an unknown kid;
    concurrent refetches share one request."""

    def __init__(self, url: str, http: httpx.AsyncClient, timeout: httpx.Timeout, title: str):
        self.url = url
        self.http = http
        self.timeout = timeout
        self.title = title
        self.keys: KeySet | None = None
        self.expires = 0.0
        self.lock = asyncio.Lock()

    async def get(self, refresh_after: KeySet | None = None) -> KeySet:
        """The current keys; with `refresh_after`, keys newer than that set."""
        async with self.lock:
            current = self.keys
            if current is not None:
                if refresh_after is not None and current is not refresh_after:
                    return current  # someone else refetched while we waited
                if refresh_after is None and time.monotonic() < self.expires:
                    return current
            try:
                self.keys, max_age = await self._fetch()
            except ApiError:
                if current is not None and refresh_after is None:
                    log.warning("using expired %s keys: the JWKS could not be fetched", self.title)
                    return current
                raise
            self.expires = time.monotonic() + max_age
            return self.keys

    async def _fetch(self) -> tuple[KeySet, int]:
        try:
            response = await self.http.get(self.url, timeout=self.timeout)
        except httpx.HTTPError as exc:
            log.warning("%s JWKS unreachable: %s", self.title, type(exc).__name__)
            raise provider_unreachable(self.title) from None
        if response.status_code != 200:
            log.warning("%s JWKS answered HTTP %d", self.title, response.status_code)
            raise provider_failed(self.title)
        try:
            document = response.json()
            entries = document["keys"]
            if not isinstance(entries, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise provider_failed(self.title, "published unreadable signing keys") from None
        keys = []
        for entry in entries:
            try:
                keys.append(RSAKey.import_key(entry))
            except (JoseError, ValueError, TypeError, KeyError):
                continue  # a key type we do not use
        if not keys:
            raise provider_failed(self.title, "published no usable signing keys")
        return KeySet(keys), _max_age(response.headers.get("Cache-Control", ""))


def _max_age(cache_control: str) -> int:
    match = re.search(r"max-age=(\d+)", cache_control)
    low, high = JWKS_MAX_AGE_RANGE
    return min(max(int(match.group(1)), low), high) if match else JWKS_DEFAULT_MAX_AGE


class GoogleProvider(OAuthProvider):
    name = "google"
    title = "Google"
    scope = "openid email profile"

    def __init__(self, *args: Any, jwks_url: str, issuer: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.jwks = JWKSCache(jwks_url, self.http, self.timeout, self.title)
        # Google documents both spellings of its issuer.
        self.issuers = [issuer]
        if issuer == "https://accounts.google.com":
            self.issuers.append("accounts.google.com")

    def authorize_params(self, nonce: str) -> dict[str, str]:
        return {"nonce": nonce}

    async def identity(self, code: str, redirect_uri: str, code_verifier: str | None,
                       nonce: str | None) -> Identity:
        token = await self.exchange(code, redirect_uri, code_verifier)
        id_token = token.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OAuthFailed("Google returned no id_token (was the 'openid' scope requested?).")
        claims = await self.verify_id_token(id_token, nonce)
        if claims.get("email_verified") not in (True, "true"):
            raise OAuthFailed("Google has not verified this account's email address.")
        try:
            email = normalize_email(claims["email"])
        except (KeyError, TypeError, ValueError):
            raise OAuthFailed("Google did not share a usable email address (was the 'email' scope "
                              "requested?).") from None
        return Identity(self.name, claims["sub"], email, _clean_name(claims.get("name"), email))

    async def verify_id_token(self, id_token: str, nonce: str | None) -> dict:
        keys = await self.jwks.get()
        try:
            try:
                token = josejwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
            except InvalidKeyIdError:  # Google rotated its keys since we fetched them
                keys = await self.jwks.get(refresh_after=keys)
                token = josejwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
        except InvalidKeyIdError:
            raise OAuthFailed("The id_token is signed with a key Google does not publish.") from None
        except (JoseError, ValueError, TypeError):
            raise OAuthFailed("The id_token signature is invalid.") from None
        claims = token.claims
        registry = josejwt.JWTClaimsRegistry(
            leeway=CLOCK_LEEWAY,
            iss={"essential": True, "values": self.issuers},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise OAuthFailed("The id_token has expired.") from None
        except MissingClaimError as exc:
            raise OAuthFailed(f"The id_token lacks required claims ({exc.claim}).") from None
        except JoseError as exc:
            claim = getattr(exc, "claim", "")
            reason = {"iss": "was not issued by Google", "aud": "was issued for another application"}.get(
                claim, f"has an invalid '{claim}' claim")
            raise OAuthFailed(f"The id_token {reason}.") from None
        if "azp" in claims and claims["azp"] != self.client_id:
            raise OAuthFailed("The id_token was issued for another application.")
        if nonce is not None and claims.get("nonce") != nonce:
            raise OAuthFailed("The id_token does not belong to this sign-in attempt (nonce).")
        return claims


class GitHubProvider(OAuthProvider):
    name = "github"
    title = "GitHub"
    scope = "read:user user:email"

    def __init__(self, *args: Any, api_base: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.api_base = api_base.rstrip("/")

    async def identity(self, code: str, redirect_uri: str, code_verifier: str | None,
                       nonce: str | None) -> Identity:
        token = await self.exchange(code, redirect_uri, code_verifier)
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise provider_failed(self.title, "returned no access token")
        user = await self.api(access, "/user")
        emails = await self.api(access, "/user/emails")
        if not isinstance(user, dict) or not isinstance(user.get("id"), int) or not isinstance(emails, list):
            raise provider_failed(self.title, "gave an unexpected answer")
        primary = next((e for e in emails if isinstance(e, dict) and e.get("primary") is True), None)
        if primary is None or primary.get("verified") is not True:
            raise OAuthFailed("GitHub has no verified primary email address for this account.")
        try:
            email = normalize_email(primary["email"])
        except (KeyError, TypeError, ValueError):
            raise OAuthFailed("GitHub's primary email address is not usable.") from None
        return Identity(self.name, str(user["id"]), email, _clean_name(user.get("name") or user.get("login"), email))

    async def api(self, access_token: str, path: str) -> Any:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "ApraNova-server"}
        try:
            response = await self.http.get(self.api_base + path, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            log.warning("GitHub API %s unreachable: %s", path, type(exc).__name__)
            raise provider_unreachable(self.title) from None
        if response.status_code in (401, 403, 404) and response.headers.get("X-RateLimit-Remaining") != "0":
            log.info("GitHub API %s refused the access token: HTTP %d", path, response.status_code)
            raise OAuthFailed("GitHub did not share the account's profile and email addresses "
                              "(the 'read:user' and 'user:email' scopes are needed).")
        if response.status_code != 200:
            log.warning("GitHub API %s answered HTTP %d", path, response.status_code)
            raise provider_failed(self.title)
        try:
            return response.json()
        except ValueError:
            raise provider_failed(self.title, "gave an unexpected answer") from None


# -- the service ---------------------------------------------------------------------

class OAuthService:
    def __init__(self, db: AsyncDatabase, settings: Settings, accounts: AccountService, tokens: TokenService,
                 http: httpx.AsyncClient, on_provider_error: Callable[[str], None] = lambda name: None):
        self.identities = db.oauth_identities
        self.accounts = accounts
        self.tokens = tokens
        self.redirect_uris = frozenset(settings.oauth_redirect_uris)
        self.on_provider_error = on_provider_error
        timeout = httpx.Timeout(settings.oauth_timeout)
        self.providers: dict[str, OAuthProvider] = {
            "google": GoogleProvider(settings.google_client_id, settings.google_client_secret,
                                     settings.google_authorize_url, settings.google_token_url, http, timeout,
                                     jwks_url=settings.google_jwks_url, issuer=settings.google_issuer),
            "github": GitHubProvider(settings.github_client_id, settings.github_client_secret,
                                     settings.github_authorize_url, settings.github_token_url, http, timeout,
                                     api_base=settings.github_api_base),
        }

    def provider(self, name: str) -> OAuthProvider:
        provider = self.providers[name]
        if not provider.configured:
            raise ServiceUnavailable("OAuth provider not configured",
                                     f"{provider.title} sign-in is not configured on this server.")
        return provider

    def check_redirect_uri(self, redirect_uri: str) -> None:
        if redirect_uri not in self.redirect_uris:
            raise field_error("redirect_uri", "This redirect URI is not allowed (see OAUTH_REDIRECT_URIS).")

    # -- state and PKCE ------------------------------------------------------------
    def authorization_url(self, name: str, redirect_uri: str) -> dict:
        provider = self.provider(name)
        self.check_redirect_uri(redirect_uri)
        code_verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43-128
        nonce = secrets.token_urlsafe(16)
        now = int(time.time())
        state = pyjwt.encode({"type": STATE_TYPE, "provider": name, "redirect_uri": redirect_uri,
                              "code_challenge": s256(code_verifier), "nonce": nonce,
                              "iat": now, "exp": now + STATE_LIFETIME}, self.tokens.secret, algorithm="HS256")
        return {"authorization_url": provider.authorization_url(redirect_uri, state, code_verifier, nonce),
                "state": state, "code_verifier": code_verifier, "code_challenge_method": "S256",
                "expires_in": STATE_LIFETIME}

    def check_state(self, state: str, name: str, redirect_uri: str, code_verifier: str | None) -> str:
        """Verify a posted state; returns the OIDC nonce it carries."""
        try:
            claims = pyjwt.decode(state, self.tokens.secret, algorithms=["HS256"],
                                  options={"require": ["exp", "type", "provider", "redirect_uri", "code_challenge",
                                                       "nonce"]})
        except pyjwt.ExpiredSignatureError:
            raise OAuthFailed("This sign-in attempt has expired; start again.") from None
        except pyjwt.PyJWTError:
            raise OAuthFailed("The state is invalid.") from None
        if claims["type"] != STATE_TYPE or claims["provider"] != name:
            raise OAuthFailed("The state is invalid.")
        if claims["redirect_uri"] != redirect_uri:
            raise OAuthFailed("The state was issued for another redirect_uri.")
        if code_verifier is None:
            raise OAuthFailed("code_verifier is required with state.")
        if not secrets.compare_digest(s256(code_verifier), str(claims["code_challenge"])):
            raise OAuthFailed("code_verifier does not match the state.")
        return str(claims["nonce"])

    # -- sign-in ---------------------------------------------------------------------
    async def sign_in(self, name: str, code: str, redirect_uri: str, state: str | None = None,
                      code_verifier: str | None = None) -> SignIn:
        provider = self.provider(name)
        self.check_redirect_uri(redirect_uri)
        nonce = self.check_state(state, name, redirect_uri, code_verifier) if state is not None else None
        try:
            identity = await provider.identity(code, redirect_uri, code_verifier, nonce)
        except ApiError as exc:
            if exc.status >= 500:
                self.on_provider_error(name)
            raise
        user, created, secured = await self.account_for(identity)
        tokens = await self.tokens.start_session(user["_id"])
        log.info("%s sign-in: user %s%s%s", name, user["_id"], " (new account)" if created else "",
                 " (unverified account handed over: password removed, sessions revoked)" if secured else "")
        return SignIn(user, tokens, created, secured)

    async def account_for(self, identity: Identity) -> tuple[dict, bool, bool]:
        """The user an identity signs in as, creating or linking as needed,
        and whether an existing account with an unverified email was handed
        over to the provider's (verified) owner of that email."""
        key = {"provider": identity.provider, "subject": identity.subject}
        link = await self.identities.find_one(key)
        if link is not None:
            user = await self.accounts.get(link["user_id"])
            if user is not None:
                return await self._signed_in(user, identity), False, False
            await self.identities.delete_one({"_id": link["_id"]})  # its user was deleted
        created = False
        user = await self.accounts.find_by_email(identity.email)
        if user is None:
            try:
                user = await self.accounts.create_user(email=identity.email, name=identity.name, role="student",
                                                       password=None, check_password=False, email_verified=True)
                created = True
            except ValidationFailed:  # registered at this very moment, by a form or a parallel sign-in
                user = await self.accounts.find_by_email(identity.email)
                if user is None:
                    raise
        if user.get("disabled"):
            raise Forbidden("This account is disabled.")
        try:
            await self.identities.insert_one({**key, "user_id": user["_id"], "email": identity.email,
                                              "created_at": utcnow()})
        except DuplicateKeyError:  # the same identity, linked by a parallel sign-in
            link = await self.identities.find_one(key)
            if link is None or link["user_id"] != user["_id"]:
                raise OAuthFailed("This account is being linked by another sign-in; try again.") from None
        secured = not created and not user.get("email_verified")
        if secured:
            await self.accounts.hand_over_to_email_owner(user["_id"], f"email verified by {identity.provider}")
        return await self._signed_in(user, identity), created, secured

    async def _signed_in(self, user: dict, identity: Identity) -> dict:
        if user.get("disabled"):
            raise Forbidden("This account is disabled.")
        await self.accounts.record_login(user["_id"])
        await self.identities.update_one({"provider": identity.provider, "subject": identity.subject},
                                         {"$set": {"email": identity.email}, "$currentDate": {"last_used_at": True}})
        return user


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default trust (SSL_CERT_FILE, SSL_CERT_DIR, else certifi's
    bundle), made once a process: loading the bundle costs about 60 ms."""
    return httpx.create_ssl_context()


async def start(services: Any) -> None:
    """One HTTP client for the providers' JWKS and APIs (the token exchange
    uses Authlib's own client per sign-in, on the same TLS context), closed
    with the server."""
    http = httpx.AsyncClient(timeout=httpx.Timeout(services.settings.oauth_timeout), follow_redirects=False,
                             verify=_tls())
    services.on_close(http.aclose)
    services.oauth = OAuthService(services.db, services.settings, services.accounts, services.tokens, http,
                                  services.record_dependency_error)
