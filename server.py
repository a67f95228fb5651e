"""ApraNova server: settings -> services -> app -> listen; graceful SIGTERM.

    python server.py [--port 8000 ...]                run the API
    python server.py --workers 2                        the same, as 2 processes (see serve_workers)
    python server.py create-user --email E --role admin   make a user (password from a prompt or stdin)
    python server.py settings-table                    print the README's settings table
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
import time

from tornado.httpserver import HTTPServer

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


async def serve(settings, reuse_port: bool = False) -> int:
    from handlers import make_app
    from services.container import Services

    services = await Services(settings).start()
    app = make_app(services)
    server = HTTPServer(app, max_body_size=64 * 1024 * 1024, idle_connection_timeout=75)
    try:
        server.listen(settings.port, settings.host, reuse_port=reuse_port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        await services.close()
        return 2
    log.info("ApraNova listening on http://%s:%s (%s mode)", settings.host, settings.port, settings.apranova_env)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutting down: no new connections, draining %d in-flight request(s)", app.inflight)
    server.stop()
    deadline = time.monotonic() + settings.shutdown_timeout
    while app.inflight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if app.inflight:
        log.warning("%d request(s) still running after %.0fs; closing anyway", app.inflight,
                    settings.shutdown_timeout)
    await server.close_all_connections()
    await services.close()
    log.info("stopped")
    return 0


async def create_user(settings, args) -> int:
    from services.container import Services
    from services.errors import ApiError

    if not args.email:
        print("create-user needs --email", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            print("passwords do not match", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    services = await Services(settings).start()
    try:
        name = args.name or args.email.split("@", 1)[0]
        services.accounts.check_track(args.track)
        user = await services.accounts.create_user(email=args.email, name=name, role=args.role,
                                                   password=password, track=args.track)
    except (ApiError, ValueError) as exc:
        detail = exc.body() if isinstance(exc, ApiError) else str(exc)
        print(f"could not create the user: {json.dumps(detail)}", file=sys.stderr)
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
        return asyncio.run(create_user(settings, args))
    if settings.workers > 1:
        from services.workers import serve_workers
        return serve_workers(settings, lambda child_settings: asyncio.run(serve(child_settings, reuse_port=True)))
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
