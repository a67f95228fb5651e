"""ApraNova server: settings -> services -> app -> listen; graceful SIGTERM.

    python server.py [--port 8000 ...]                run the API
    python server.py --workers 2                        the same, as 2 processes (see serve_workers)
    python server.py create-user --email E --role admin   make a user (password from a prompt or stdin)
    python server.py settings-table                    print the README's settings table
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import json
import logging
import os
import signal
import sys
import time

from services import settings as settings_mod
from services.settings import SettingsError

log = logging.getLogger("apranova")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        for key in ("method", "path", "status", "ms", "user_id", "request_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # we log our own access lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="server.py", description="ApraNova server: accounts, workspaces, payments.",
        epilog="Every setting is an environment variable; a flag overrides it. "
               "Commands: 'create-user' makes a user (e.g. the first admin); "
               "'settings-table' prints the settings as a Markdown table.")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "create-user", "settings-table"],
                        help="what to do (default: serve)")
    parser.add_argument("--email", help="create-user: the email")
    parser.add_argument("--name", help="create-user: the name (default: the email's local part)")
    parser.add_argument("--role", default="student", choices=["student", "trainer", "admin", "superadmin"],
                        help="create-user: the role (default student)")
    parser.add_argument("--track", help="create-user: the track")
    settings_mod.add_arguments(parser)
    return parser


def browser_url(host: str, port: int) -> str:
    """The address to open in a browser on this machine for HOST and PORT."""
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def freeze_startup_objects() -> None:
    """Put what start-up made (modules, routes, services: about 95,000
    objects, all living as long as the process) out of the collector's
    reach. Under load a full collection ran every ~2 s and took 45-170 ms
    (the p99 of issue 10); it now scans only what requests left, ~1 ms."""
    gc.collect()
    gc.freeze()


async def serve(settings, reuse_port: bool = False) -> int:
    import proxy
    from handlers import make_app
    from proxy.server import ProxyHTTPServer
    from services.container import Services

    try:
        services = await Services(settings).start()
    except RuntimeError as exc:  # the embedded database cannot start, or DATA_DIR is in use (DatabaseInUse)
        log.error("cannot start: %s", exc)
        return 2
    proxy.start(services)  # the workspace proxy, above the services; its listener is below
    app = make_app(services)
    server = ProxyHTTPServer(app, max_body_size=64 * 1024 * 1024, idle_connection_timeout=75)
    try:
        server.listen(settings.port, settings.host, reuse_port=reuse_port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        await services.close()
        return 2
    freeze_startup_objects()
    log.info("ApraNova listening on http://%s:%s (%s mode)", settings.host, settings.port, settings.apranova_env)
    if settings.log_format == "json":  # every output line stays JSON
        log.info("open %s", browser_url(settings.host, settings.port))
    else:  # where to go, whatever the log level
        print(f"open {browser_url(settings.host, settings.port)}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutting down: no new connections, draining %d in-flight request(s)", app.inflight)
    server.stop()
    # The whole exit fits in SHUTDOWN_TIMEOUT: draining gets it minus what
    # closing needs (the embedded database's SIGTERM -> SIGKILL grace and a
    # little more), and closing gets the rest (Services.close).
    deadline = time.monotonic() + settings.shutdown_timeout
    closing = min(settings.shutdown_timeout / 2, (services.embedded.term_grace if services.embedded else 0) + 1.0)
    while app.inflight > 0 and time.monotonic() < deadline - closing:
        await asyncio.sleep(0.05)
    if app.inflight:
        log.warning("%d request(s) still running after %.1fs; closing anyway", app.inflight,
                    settings.shutdown_timeout - closing)
        services.hasher.shed()  # logins still waiting for bcrypt answer 503 now, while they can be answered
        await asyncio.sleep(0.1)
    await server.close_all_connections()
    await services.close(deadline)
    log.info("stopped")
    return 0


FIELD_NAMES = {"password1": "the password", "email": "the email", "track": "the track", "name": "the name"}


def as_sentence(exc: Exception) -> str:
    """An error of create-user as one line for a person, not a JSON envelope."""
    from services.errors import ApiError, ValidationFailed

    if isinstance(exc, ValidationFailed):
        return " ".join(f"{FIELD_NAMES.get(field, field).capitalize()} is not accepted: {' '.join(messages)}"
                        for field, messages in exc.fields.items())
    return exc.message if isinstance(exc, ApiError) else str(exc)


def database_for_create_user(settings, data_dir_given: bool) -> str | None:
    """Why create-user must not run here (None: it may). It never makes a
    second database by accident: with the default DATA_DIR holding no
    database while a server's embedded database runs elsewhere, the user
    surely meant that one."""
    from pathlib import Path

    from services.db import running_embedded_databases

    if settings.mongodb_uri or data_dir_given or (Path(settings.data_dir) / "db").exists():
        return None
    others = [str(path) for path in running_embedded_databases()
              if path.resolve() != Path(settings.data_dir).resolve()]
    if not others:
        return None  # nothing runs: this makes the first database (e.g. the first admin before the first start)
    return (f"there is no database in {settings.data_dir} yet, but a server's database is running with "
            f"DATA_DIR {' or '.join(others[:3])}: pass --data-dir (or set DATA_DIR) to add the user there")


async def create_user(settings, args, data_dir_given: bool) -> int:
    from services.container import Services
    from services.errors import ApiError

    if not args.email:
        print("create-user needs --email", file=sys.stderr)
        return 2
    refusal = database_for_create_user(settings, data_dir_given)
    if refusal:
        print(f"create-user: {refusal}", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            print("passwords do not match", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:  # with a server running on this DATA_DIR, its database is used
        services = await Services(settings, share_embedded=True, features=False).start()
    except RuntimeError as exc:
        print(f"create-user: cannot open the database: {exc}", file=sys.stderr)
        return 2
    try:
        name = args.name or args.email.split("@", 1)[0]
        services.accounts.check_track(args.track)
        user = await services.accounts.create_user(email=args.email, name=name, role=args.role,
                                                   password=password, track=args.track)
    except (ApiError, ValueError) as exc:
        print(f"could not create the user: {as_sentence(exc)}", file=sys.stderr)
        return 1
    finally:
        await services.close()
    print(f"created user {user['_id']} <{user['email']}> with role {user['role']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "settings-table":
        print(settings_mod.settings_table())
        return 0
    try:
        settings = settings_mod.load(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "create-user":
        data_dir_given = args.data_dir is not None or "DATA_DIR" in os.environ
        return asyncio.run(create_user(settings, args, data_dir_given))
    if settings.workers > 1:
        from services.workers import serve_workers
        return serve_workers(settings, lambda child_settings: asyncio.run(serve(child_settings, reuse_port=True)))
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
