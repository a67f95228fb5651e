"""All settings in one place.

Every setting is read from an environment variable and may be overridden by a
command-line flag of the same name (``PORT`` -> ``--port``). ``python server.py
--help`` lists them all; the README's settings table is generated from the same
list (``python server.py settings-table``).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import shlex
import secrets
from pathlib import Path
from typing import Any, Callable

from services.setting_parsers import (boolean, byte_size, csv_list, http_url, link_template, networks, number,
                                      optional_http_url, origins, port, prices, rate, statuses, tracks, whole_number)

DEFAULT_TRACKS = "DP=Data Professional,FSD=Full-Stack Developer"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message says which."""


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str  # environment variable name
    default: str
    help: str
    parse: Callable[[str], Any] = str
    secret: bool = False
    group: str = "server"

    @property
    def attr(self) -> str:
        return self.name.lower()

    @property
    def flag(self) -> str:
        return "--" + self.name.lower().replace("_", "-")


S = Setting
SETTINGS: list[Setting] = [
    # server
    S("APRANOVA_ENV", "development", "'development' or 'production'. Production refuses a missing or weak JWT_SECRET."),
    S("HOST", "0.0.0.0", "Address to listen on."),
    S("PORT", "8000", "Port to listen on.", port),
    S("DATA_DIR", "./data", "Directory for the embedded database and the development signing key."),
    S("WORKERS", "1", "Server processes, all on PORT (SO_REUSEPORT) and one database; more than 1 also sets "
      "RATE_LIMIT_STORAGE=mongodb so that the limits hold across them.", whole_number),
    S("SHUTDOWN_TIMEOUT", "10", "Seconds SIGTERM waits for in-flight requests before closing.", number),
    S("MAX_BODY_BYTES", "1048576", "Largest accepted request body (larger: 413).", whole_number),
    S("CORS_ORIGINS", "http://localhost:3000,http://localhost:8000,http://127.0.0.1:8000",
      "Comma-separated origins allowed by CORS and by the WebSocket Origin check ('*' allows any).", origins),
    S("TRUSTED_PROXIES", "", "Comma-separated proxy networks whose X-Forwarded-For is believed (e.g. 10.0.0.0/8).", networks),
    S("LOG_LEVEL", "INFO", "Logging level."),
    S("LOG_FORMAT", "text", "'text' or 'json' (one JSON object per line)."),
    S("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1", "Comma-separated networks that may read /metrics (default: this "
      "host only; add your Prometheus network, e.g. 10.0.0.0/8; empty: anyone).", networks),
    # database
    S("MONGODB_URI", "", "MongoDB URI. Empty: start the embedded nx-27017 server under DATA_DIR.", group="database"),
    S("MONGODB_DB", "apranova", "Database name.", group="database"),
    S("DB_TIMEOUT_MS", "2000", "How long a request waits for the database before answering 503.", whole_number, group="database"),
    # retention (services/retention.py)
    S("RETENTION_INTERVAL", "900", "Seconds between two retention sweeps (one process of several does each); 0: no "
      "sweeps (expired sessions, tickets and mail links still go by their TTL index).", number, group="database"),
    S("SESSION_REVOKED_KEEP_HOURS", "24", "Hours a revoked session (logout, password change, reused refresh token) is "
      "kept after its last refresh; expired sessions are deleted at once.", whole_number, group="database"),
    S("WORKSPACE_EVENT_RUNS", "10", "Runs (a start to its stop) of each workspace whose events are kept; older runs' "
      "events are deleted. 0: keep them all.", whole_number, group="database"),
    S("AUDIT_LOG_DAYS", "0", "Days an admin audit log entry is kept; 0: forever.", whole_number, group="database"),
    # auth
    S("JWT_SECRET", "", "HS256 signing key. Empty in development: generated once and kept in DATA_DIR.", secret=True, group="auth"),
    S("JWT_ACCESS_MINUTES", "60", "Access-token lifetime in minutes.", whole_number, group="auth"),
    S("JWT_REFRESH_DAYS", "7", "Refresh-token lifetime in days.", whole_number, group="auth"),
    S("JWT_REFRESH_REUSE_SECONDS", "10", "Seconds after a refresh token's rotation during which it (any token of "
      "the login's recent chain) gets the login's current pair again (concurrent refreshes, several tabs); later "
      "reuse revokes the login. 0: off.", whole_number, group="auth"),
    S("BCRYPT_ROUNDS", "12", "bcrypt cost factor (4-31).", whole_number, group="auth"),
    S("AUTH_CACHE_SIZE", "10000", "Sessions (and as many users) whose auth state each process caches; 0: read the "
      "database on every request. Other processes' changes reach the cache within 1 s.", whole_number, group="auth"),
    S("TOKEN_CACHE_SIZE", "4096", "Access tokens each process remembers as verified, so that a token's signature is "
      "checked once (about 570 bytes each: 2.3 MiB at 4096); its expiry and its login's revocation are still "
      "checked on every request. 0: verify every request.", whole_number, group="auth"),
    S("TRACKS", DEFAULT_TRACKS, "Comma-separated CODE=Title learning tracks.", tracks, group="auth"),
    # rate limits
    S("RATE_LIMIT_ANON", "100/hour", "Requests per client IP without a token.", rate, group="rate limits"),
    S("RATE_LIMIT_USER", "1000/hour", "Requests per authenticated user.", rate, group="rate limits"),
    S("RATE_LIMIT_WORKSPACE", "10/hour", "Workspace creations per user.", rate, group="rate limits"),
    S("RATE_LIMIT_LOGIN_FAILURES", "10/hour", "Failed logins per account before login is refused.", rate, group="rate limits"),
    S("RATE_LIMIT_MAIL", "5/hour", "Verification and reset mails per account (more are silently not sent).", rate, group="rate limits"),
    S("RATE_LIMIT_STORAGE", "memory", "'memory' (one process) or 'mongodb' (shared by several processes).", group="rate limits"),
    # email
    S("SMTP_HOST", "", "SMTP server for verification and password-reset mail (empty: no mail; see the README's "
      "'Email' for what is then not protected).", group="email"),
    S("SMTP_PORT", "587", "SMTP port (587 for STARTTLS, 465 for TLS).", port, group="email"),
    S("SMTP_TLS", "starttls", "'starttls', 'tls' (implicit, e.g. port 465) or 'none' (loopback or tests only).", group="email"),
    S("SMTP_USER", "", "SMTP user name (empty: no login).", group="email"),
    S("SMTP_PASSWORD", "", "SMTP password.", secret=True, group="email"),
    S("SMTP_FROM", "ApraNova <no-reply@localhost>", "From address of the mail the server sends.", group="email"),
    S("SMTP_TIMEOUT", "10", "Seconds one mail may take to send.", number, group="email"),
    S("PUBLIC_BASE_URL", "http://localhost:8000", "Address users reach the site at; links in mail start with it.",
      http_url, group="email"),
    S("EMAIL_VERIFY_URL", "/verify-email?key={key}", "Link mailed to verify an email address; {key} is filled in. "
      "A path is put after PUBLIC_BASE_URL; a full http(s) URL is used as it is.", link_template("key"),
      group="email"),
    S("PASSWORD_RESET_URL", "/reset-password?uid={uid}&token={token}", "Link mailed to reset a password; {uid} "
      "and {token} are filled in (the original frontend: /reset-password/confirm?uid={uid}&token={token}).",
      link_template("uid", "token"), group="email"),
    S("EMAIL_VERIFY_HOURS", "48", "Lifetime of an email-verification link.", whole_number, group="email"),
    S("PASSWORD_RESET_MINUTES", "60", "Lifetime of a password-reset link.", whole_number, group="email"),
    # workspaces
    S("INSTANCE_NAME", "apranova", "Names this deployment: containers are '<name>-ws-<user id>' and carry it as a label, "
      "with the deployment's id (kept in its database); reconciliation only touches containers with both.",
      group="workspaces"),
    S("WORKSPACE_TAKE_OVER", "false", "A server refuses to start when another deployment (another database) has "
      "workspaces under its INSTANCE_NAME; true: take them over instead (reconciled as its own: those its database "
      "does not know are removed, their files kept).", boolean, group="workspaces"),
    S("WORKSPACE_BACKEND", "docker", "Container engine that runs workspaces: 'docker', or a 'module:Class' path to a class "
      "implementing services/workspaces/backend.py's Backend.", group="workspaces"),
    S("WORKSPACE_IMAGE", "apranova/workspace:latest", "Image of the per-user code-server container.", group="workspaces"),
    S("WORKSPACE_IMAGE_BUILD_DIR", "/var/cache/apranova-build", "Where ./scripts/run's build of the workspace image "
      "(workspace-image/build-offline.sh) keeps its cache and says how it goes: while it builds WORKSPACE_IMAGE, a "
      "create waits for it with progress instead of failing. Empty: never wait for a build.", group="workspaces"),
    S("WORKSPACE_PULL_POLICY", "if-not-present", "'if-not-present', 'always' or 'never'.", group="workspaces"),
    S("WORKSPACE_CONTAINER_PORT", "8080", "The IDE's port inside the container.", port, group="workspaces"),
    S("WORKSPACE_URL_TEMPLATE", "http://localhost:{port}", "URL shown to the user; {port}, {host_ip}, {user_id} are filled in.", group="workspaces"),
    S("WORKSPACE_CPUS", "1", "CPU limit per workspace.", number, group="workspaces"),
    S("WORKSPACE_MEMORY", "2g", "Memory limit per workspace (bytes, or with k/m/g).", group="workspaces"),
    S("WORKSPACE_PIDS", "512", "Process limit per workspace.", whole_number, group="workspaces"),
    S("WORKSPACE_CMD", "", "Command override for the container, split like shell words (quotes work; empty: the image's own).", group="workspaces"),
    S("WORKSPACE_READY_TIMEOUT", "120", "Seconds to wait for the IDE to answer HTTP before failing.", number, group="workspaces"),
    S("WORKSPACE_WAIT_TIMEOUT", "180", "Longest a create with {\"wait\": true} waits.", number, group="workspaces"),
    S("WORKSPACE_EXPOSURE", "network", "'direct': each IDE published on a host port from WORKSPACE_PORT_RANGE (the contract's "
      "literal url/port; anyone who reaches that port reaches the IDE's login). 'network': no published port; workspaces on a "
      "Docker network the server makes with inter-container traffic off, reachable only from the server (for the proxy).",
      group="workspaces"),
    S("WORKSPACE_HOST_WALL", "false", "With WORKSPACE_EXPOSURE=network: drop what workspace containers send to this host's own "
      "addresses (iptables INPUT on the network's bridge), except replies to the server's connections; their internet "
      "access is unchanged. Needs root and iptables on the host (README, 'The host behind the gateway').", boolean,
      group="workspaces"),
    S("WORKSPACE_IDE_PASSWORD", "auto", "'auto': code-server's own password only with WORKSPACE_EXPOSURE=direct; with "
      "'network' the IDE runs with --auth none, as only the server reaches it and the proxy checks every request. "
      "'always': the password in both (two locks; students type it once per browser).", group="workspaces"),
    S("WORKSPACE_USER", "1000:1000", "uid:gid the IDE runs as (never root: all capabilities are dropped).", group="workspaces"),
    S("WORKSPACE_READY_PATH", "/healthz", "Path the readiness probe requests (code-server answers /healthz).", group="workspaces"),
    S("WORKSPACE_READY_STATUSES", "200", "Comma-separated HTTP statuses of WORKSPACE_READY_PATH that mean ready.",
      statuses, group="workspaces"),
    # workspace disk quotas (services/workspaces/quota.py; the Docker side: docker/disk.py)
    S("WORKSPACE_DISK_QUOTA", "", "Disk space per workspace home, with a unit (e.g. 2GiB, 512MiB); the kernel enforces it "
      "(an ext4 image per home on a loop device). Empty or 0: unlimited, as before. Homes made before it was set stay "
      "unlimited (README: moving a home onto a quota).", byte_size, group="workspaces"),
    S("WORKSPACE_DISK_LOW_WATER", "2GiB", "Below this much free space on the file system of WORKSPACE_DISK_DIR, new "
      "workspaces are refused (existing ones keep running). 0: never refuse.", byte_size, group="workspaces"),
    S("WORKSPACE_IDLE_TIMEOUT", "1800", "Seconds without activity (proxied traffic, a start, a keep-running call) after "
      "which a running workspace is stopped, its files kept. 0: never.", number, group="workspaces"),
    S("WORKSPACE_MAX_LIFETIME", "0", "Seconds a workspace may run from its start, active or not, before it is stopped. "
      "0: no limit.", number, group="workspaces"),
    S("WORKSPACE_IDLE_WARNING", "300", "Seconds before an idle or lifetime stop that the student is warned (with a "
      "keep-running action for idleness); when it is not shorter than the limit it warns of, "
      "the warning comes halfway instead. 0: no warning.", number, group="workspaces"),
    S("WORKSPACE_CULL_INTERVAL", "60", "Seconds between two checks for workspaces to warn or stop; each process also "
      "writes a workspace's proxied activity to the database at most once per interval.", number, group="workspaces"),
    # workspace proxy
    S("PUBLIC_URL", "", "The API's own origin, e.g. https://apranova.example.edu (links back to the dashboard, and the "
      "scheme and port of workspace URLs). Empty: http://localhost:<PORT>, or the port a request came in on.",
      optional_http_url, group="workspace proxy"),
    S("WORKSPACE_HOST_TEMPLATE", "ws-{user_id}.localhost", "Host name of each workspace's own origin, served by this "
      "server's port through the proxy; production: a wildcard DNS name such as ws-{user_id}.example.edu.",
      group="workspace proxy"),
    S("PROXY_MAX_BODY_BYTES", "1073741824", "Largest request body (upload) the workspace proxy forwards (larger: 413).",
      whole_number, group="workspace proxy"),
    S("PROXY_CONNECT_TIMEOUT", "10", "Seconds the proxy waits to connect to a workspace before answering 502.", number,
      group="workspace proxy"),
    S("PROXY_IDLE_TIMEOUT", "300", "Seconds a proxied HTTP exchange may go without any byte before it is cut.", number,
      group="workspace proxy"),
    S("PROXY_TICKET_SECONDS", "60", "Lifetime of the one-time ticket in a workspace URL from /api/users/workspace/open/.",
      whole_number, group="workspace proxy"),
    S("PROXY_URL_TICKET_SECONDS", "300", "Lifetime of the one-time ticket minted into the workspace url of its "
      "owner's create and GET answers, so that opening that url signs in (the original frontend's Open button); "
      "0: bare urls, open through /api/users/workspace/open/.", whole_number, group="workspace proxy"),
    S("PROXY_FAST_LANE", "true", "Serve plain GET/HEAD requests of workspace hosts below Tornado's HTTP layer (C "
      "parser, same checks); false: every proxied request through Tornado.", boolean, group="workspace proxy"),
    S("PROXY_COOKIE_HOURS", "12", "Lifetime of the workspace cookie (it also dies with the login session).", number,
      group="workspace proxy"),
    S("PROXY_MAX_SOCKETS_PER_LOGIN", "32", "Most proxied WebSockets one login may hold open at once, across its "
      "workspaces and tabs (one more: 429). An IDE window uses two or three.", int, group="workspace proxy"),
    # payments
    S("STRIPE_SECRET_KEY", "", "Stripe secret key (empty: payments answer 503).", secret=True, group="payments"),
    S("STRIPE_PUBLISHABLE_KEY", "", "Stripe publishable key returned to clients.", group="payments"),
    S("STRIPE_WEBHOOK_SECRET", "", "Signing secret of the Stripe webhook endpoint.", secret=True, group="payments"),
    S("STRIPE_API_BASE", "https://api.stripe.com", "Stripe API base URL.", group="payments"),
    S("PAYMENT_CURRENCIES", "usd", "Comma-separated allowed currencies.", csv_list, group="payments"),
    S("PAYMENT_MAX_AMOUNT", "10000", "Largest amount accepted, in major units.", group="payments"),
    S("TRACK_PRICES", "DP=499.00,FSD=599.00", "Comma-separated TRACK=price in the first allowed currency.", prices, group="payments"),
    S("CHECKOUT_RETURN_ORIGINS", "", "Comma-separated origins a Stripe Checkout success_url or cancel_url may lead "
      "to (empty: the origins named in CORS_ORIGINS and PUBLIC_BASE_URL's).", origins, group="payments"),
    # oauth
    S("GOOGLE_CLIENT_ID", "", "Google OAuth client id (empty: Google sign-in answers 503).", group="oauth"),
    S("GOOGLE_CLIENT_SECRET", "", "Google OAuth client secret.", secret=True, group="oauth"),
    S("GOOGLE_AUTHORIZE_URL", "https://accounts.google.com/o/oauth2/v2/auth", "Google authorization endpoint.", http_url, group="oauth"),
    S("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token", "Google token endpoint.", http_url, group="oauth"),
    S("GOOGLE_JWKS_URL", "https://www.googleapis.com/oauth2/v3/certs", "Google JWKS URL.", http_url, group="oauth"),
    S("GOOGLE_ISSUER", "https://accounts.google.com", "Expected id_token issuer.", group="oauth"),
    S("GITHUB_CLIENT_ID", "", "GitHub OAuth client id (empty: GitHub sign-in answers 503).", group="oauth"),
    S("GITHUB_CLIENT_SECRET", "", "GitHub OAuth client secret.", secret=True, group="oauth"),
    S("GITHUB_AUTHORIZE_URL", "https://github.com/login/oauth/authorize", "GitHub authorization endpoint.", http_url, group="oauth"),
    S("GITHUB_TOKEN_URL", "https://github.com/login/oauth/access_token", "GitHub token endpoint.", http_url, group="oauth"),
    S("GITHUB_API_BASE", "https://api.github.com", "GitHub API base URL.", http_url, group="oauth"),
    S("OAUTH_REDIRECT_URIS", "http://localhost:3000/auth/callback,http://localhost:8000/auth/callback",
      "Comma-separated redirect URIs that OAuth sign-in accepts.", csv_list, group="oauth"),
    S("OAUTH_LOGIN_REDIRECT", "/login", "Page that /accounts/<provider>/login/callback/ sends a signed-in browser "
      "to, with the tokens in the URL fragment (relative: on PUBLIC_URL or this server).", group="oauth"),
    S("OAUTH_TIMEOUT", "10", "Seconds each call to Google or GitHub may take before sign-in answers 502.", number, group="oauth"),
]
del S

# WORKSPACE_BACKEND's names; any other value is a 'module:Class' path. A
# backend class declares the settings it alone reads in `SETTINGS` (a list
# of Setting): they are parsed once with these, and listed in --help and the
# README's table (a module:Class backend's when WORKSPACE_BACKEND names it).
BACKENDS = {"docker": "services.workspaces.docker.backend:DockerBackend",
            "swarm": "services.workspaces.swarm.backend:SwarmBackend"}
_SECRETS = {s.attr for s in SETTINGS if s.secret}


def backend_class(name: str) -> Any:
    """The class WORKSPACE_BACKEND names (imported here, at load time: the
    backend modules import this one)."""
    module, _, attr = BACKENDS.get(name, name).partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SettingsError(f"WORKSPACE_BACKEND {name!r} cannot be loaded: {exc}") from None


def declared(backend: str | None = None) -> list[Setting]:
    """Every setting: the server's, the built-in backends', and those of
    `backend` when it is a 'module:Class' path (a name declared twice, as by
    a subclass, counts once)."""
    found, names = list(SETTINGS), {s.name for s in SETTINGS}
    classes = [backend_class(name) for name in BACKENDS]
    if backend and backend not in BACKENDS:
        classes.append(backend_class(backend))
    for cls in classes:
        for setting in getattr(cls, "SETTINGS", ()):
            if setting.name not in names:
                found.append(setting)
                names.add(setting.name)
                if setting.secret:
                    _SECRETS.add(setting.attr)
    return found


WEAK_SECRETS = {"secret", "changeme", "change-me", "dev", "development", "jwt-secret", "your-secret-key"}


class Settings:
    """Parsed settings; attributes are the lower-case setting names."""

    def __init__(self, values: dict[str, Any]):
        self.__dict__.update(values)
        if "workspace_port_range" in values:  # typed once here, never re-parsed by the workspace code
            self.workspace_ports = workspace_port_range(self)
            self.workspace_memory_bytes = workspace_memory_bytes(self)
            self.workspace_argv = workspace_argv(self)

    def replace(self, **changes: Any) -> "Settings":
        values = dict(self.__dict__)
        values.update(changes)
        return Settings(values)

    @property
    def production(self) -> bool:
        return self.apranova_env == "production"

    def __repr__(self) -> str:  # never print secrets
        shown = {key: ("***" if key in _SECRETS and value else value) for key, value in self.__dict__.items()}
        return f"Settings({shown})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; defaults come from the environment."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    try:
        listed = declared(os.environ.get("WORKSPACE_BACKEND"))
    except SettingsError:
        listed = declared()  # load() then says what is wrong with WORKSPACE_BACKEND
    for setting in listed:
        group = groups.setdefault(setting.group, parser.add_argument_group(setting.group))
        shown_default = "(secret)" if setting.secret else (setting.default or "''")
        group.add_argument(setting.flag, dest=setting.attr, default=None, metavar=setting.name,
                           help=f"{setting.help} [env {setting.name}, default {shown_default}]")


def load(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults < environment < CLI flags < keyword overrides.

    Keyword overrides take raw strings or already-parsed values (tests use them).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    def raw_value(setting: Setting) -> Any:
        cli = getattr(args, setting.attr, None) if args is not None else None
        if setting.attr in overrides:
            return overrides.pop(setting.attr)
        return cli if cli is not None else environ.get(setting.name, setting.default)

    backend = next(s for s in SETTINGS if s.name == "WORKSPACE_BACKEND")
    values[backend.attr] = raw_value(backend)
    for setting in declared(values[backend.attr]):
        raw = values.pop(setting.attr) if setting is backend else raw_value(setting)
        if isinstance(raw, str):
            try:
                values[setting.attr] = setting.parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{setting.name}: {exc}") from None
        else:
            values[setting.attr] = raw
    if overrides:
        raise SettingsError(f"unknown settings: {', '.join(sorted(overrides))}")
    settings = Settings(values)
    validate(settings)
    check = getattr(backend_class(settings.workspace_backend), "check_settings", None)
    if check is not None:  # a backend's own rules about its settings (and the others it reads)
        check(settings)
    return settings


def validate(settings: Settings) -> None:
    if settings.apranova_env not in {"development", "production"}:
        raise SettingsError("APRANOVA_ENV must be 'development' or 'production'")
    if settings.log_format not in {"text", "json"}:
        raise SettingsError("LOG_FORMAT must be 'text' or 'json'")
    if settings.rate_limit_storage not in {"memory", "mongodb"}:
        raise SettingsError("RATE_LIMIT_STORAGE must be 'memory' or 'mongodb'")
    if settings.workspace_pull_policy not in {"if-not-present", "always", "never"}:
        raise SettingsError("WORKSPACE_PULL_POLICY must be 'if-not-present', 'always' or 'never'")
    if not 0 <= settings.jwt_refresh_reuse_seconds <= 300:
        raise SettingsError("JWT_REFRESH_REUSE_SECONDS must be between 0 and 300")
    if not 1 <= settings.workers <= 64:
        raise SettingsError("WORKERS must be between 1 and 64")
    if settings.auth_cache_size < 0:
        raise SettingsError("AUTH_CACHE_SIZE must be 0 or more")
    if settings.workspace_ide_password not in {"auto", "always"}:
        raise SettingsError("WORKSPACE_IDE_PASSWORD must be 'auto' or 'always'")
    if settings.workspace_exposure not in {"direct", "network"}:
        raise SettingsError("WORKSPACE_EXPOSURE must be 'direct' or 'network'")
    if not re.fullmatch(r"\d+(:\d+)?", settings.workspace_user) or settings.workspace_user.split(":")[0] == "0":
        raise SettingsError("WORKSPACE_USER must be a non-root uid or uid:gid, like 1000:1000")
    if not settings.workspace_ready_path.startswith("/") or any(c in settings.workspace_ready_path for c in " \r\n"):
        raise SettingsError("WORKSPACE_READY_PATH must be a path starting with '/'")
    if not 4 <= settings.bcrypt_rounds <= 31:
        raise SettingsError("BCRYPT_ROUNDS must be between 4 and 31")
    if settings.smtp_tls not in {"starttls", "tls", "none"}:
        raise SettingsError("SMTP_TLS must be 'starttls', 'tls' or 'none'")
    if settings.email_verify_hours < 1 or settings.password_reset_minutes < 1:
        raise SettingsError("EMAIL_VERIFY_HOURS and PASSWORD_RESET_MINUTES must be at least 1")
    if not 0 < settings.oauth_timeout <= 300:
        raise SettingsError("OAUTH_TIMEOUT must be more than 0 and at most 300 seconds")
    if not 0 < settings.workspace_cull_interval <= 3600:
        raise SettingsError("WORKSPACE_CULL_INTERVAL must be more than 0 and at most 3600 seconds")
    workspace_host_regex(settings)
    if settings.workspace_disk_quota and settings.workspace_disk_quota < 16 * 1024 ** 2:
        raise SettingsError("WORKSPACE_DISK_QUOTA must be empty (unlimited) or at least 16MiB")
    if settings.proxy_max_body_bytes < 0 or not 0 < settings.proxy_connect_timeout <= 300 \
            or settings.proxy_idle_timeout <= 0 or not 1 <= settings.proxy_ticket_seconds <= 3600 \
            or not 1 <= settings.proxy_max_sockets_per_login <= 100_000:
        raise SettingsError("PROXY_MAX_BODY_BYTES must be >= 0, PROXY_CONNECT_TIMEOUT in (0, 300], "
                            "PROXY_IDLE_TIMEOUT > 0, PROXY_TICKET_SECONDS between 1 and 3600 and "
                            "PROXY_MAX_SOCKETS_PER_LOGIN between 1 and 100000")
    if settings.production:
        secret = settings.jwt_secret
        if not secret or secret.lower() in WEAK_SECRETS or len(secret) < 32:
            raise SettingsError(
                "refusing to start in production without JWT_SECRET set to a random value of at least 32 characters")


def workspace_port_range(settings: Settings) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", settings.workspace_port_range)
    if not match or not 1 <= int(match[1]) <= int(match[2]) <= 65535:
        raise SettingsError("WORKSPACE_PORT_RANGE must look like 8081-9999")
    return int(match[1]), int(match[2])


def workspace_memory_bytes(settings: Settings) -> int:
    """WORKSPACE_MEMORY ('2g', '512m', bytes) in bytes, as `docker run --memory` reads it."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*", settings.workspace_memory.lower())
    if not match:
        raise SettingsError("WORKSPACE_MEMORY must be a size like 2g, 512m or a number of bytes")
    return int(float(match[1]) * {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[match[2]])


def workspace_argv(settings: Settings) -> list[str] | None:
    """WORKSPACE_CMD as the container's argv, split as a POSIX shell splits
    words (quotes keep a `sh -c '...'` script one argument); None: the
    image's own command."""
    try:
        return shlex.split(settings.workspace_cmd) or None
    except ValueError as exc:
        raise SettingsError(f"WORKSPACE_CMD cannot be read as shell words: {exc}") from None


def ide_password_on(settings: Settings) -> bool:
    """Whether code-server keeps its own password (WORKSPACE_IDE_PASSWORD)."""
    return settings.workspace_ide_password == "always" or settings.workspace_exposure == "direct"


def without_ide_password(argv: list[str]) -> list[str]:
    """code-server's argv with `--auth none` in place of its `--auth` value;
    an argv without --auth (not code-server's, e.g. a test stand-in) is kept."""
    out, replace_next = [], False
    for arg in argv:
        if replace_next:
            out.append("none")
            replace_next = False
        elif arg == "--auth":
            out.append(arg)
            replace_next = True
        elif arg.startswith("--auth="):
            out.append("--auth=none")
        else:
            out.append(arg)
    return out


def workspace_host_regex(settings: Settings) -> str:
    """WORKSPACE_HOST_TEMPLATE as a regex whose group `user_id` is the
    workspace owner's id (Tornado matches it against the request's host)."""
    template = settings.workspace_host_template.strip().lower()
    before, found, after = template.partition("{user_id}")
    label = re.compile(r"^[a-z0-9.-]*$")
    if not found or "{" in before + after or not label.match(before) or not label.match(after) or not after:
        raise SettingsError("WORKSPACE_HOST_TEMPLATE must be a host name holding {user_id} once, "
                            "e.g. ws-{user_id}.example.edu")
    return f"{re.escape(before)}(?P<user_id>[0-9]{{1,18}}){re.escape(after)}"


def resolve_jwt_secret(settings: Settings) -> str:
    """Return the signing key: the configured one, or (development only) one
    generated once and kept in DATA_DIR so that tokens survive a restart."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.production:
        raise SettingsError("JWT_SECRET is required in production")
    path = Path(settings.data_dir) / "jwt_secret"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # DATA_DIR is private (see db.make_private)
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


def settings_table() -> str:
    """The README's settings table, generated from SETTINGS."""
    rows = ["| Variable | Flag | Default | Meaning |", "|---|---|---|---|"]
    for s in declared():
        default = "" if s.secret else s.default
        rows.append(f"| `{s.name}` | `{s.flag}` | `{default}` | {s.help.replace('|', '/')} |")
    return "\n".join(rows)
