"""The database: a PyMongo async client, its indexes, and the embedded server.

With no MONGODB_URI the server starts ``nx-27017`` (a MongoDB-wire server on
SQLite) as a child process on a free loopback port, with its files under
DATA_DIR, so a fresh machine runs with zero set-up over the same driver and
wire protocol as production.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, PyMongoError

log = logging.getLogger("apranova.db")

# Every index the data layer relies on, in one place. Unique indexes are the
# rules ("one workspace per user"), not just speed.
INDEXES: dict[str, list[IndexModel]] = {
    "users": [IndexModel([("email_key", ASCENDING)], unique=True),
              IndexModel([("trainer_id", ASCENDING)])],  # each trainer's students (services/students.py)
    "sessions": [IndexModel([("user_id", ASCENDING)]),
                 IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "rate_limits": [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "workspaces": [IndexModel([("owner_id", ASCENDING)], unique=True),
                   IndexModel([("port", ASCENDING)], unique=True, sparse=True)],
    # nx-27017 enforces a compound unique index but never reads by one (a
    # query on its first field scans the collection: pinned in
    # tests/test_mongo_conformance.py), so the field queried by equality also
    # gets an index of its own (redundant on MongoDB, which uses the prefix).
    "workspace_events": [IndexModel([("workspace_id", ASCENDING), ("seq", ASCENDING)], unique=True),
                         IndexModel([("workspace_id", ASCENDING)])],
    "payments": [IndexModel([("payment_intent_id", ASCENDING)], unique=True, sparse=True),
                 IndexModel([("checkout_session_id", ASCENDING)], unique=True, sparse=True),
                 IndexModel([("user_id", ASCENDING), ("created_at", DESCENDING)]),
                 IndexModel([("user_id", ASCENDING)])],
    "workspace_tickets": [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "stripe_events": [IndexModel([("event_id", ASCENDING)], unique=True)],
    "email_tokens": [IndexModel([("user_id", ASCENDING)]),
                     IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "oauth_identities": [IndexModel([("provider", ASCENDING), ("subject", ASCENDING)], unique=True),
                         IndexModel([("subject", ASCENDING)]), IndexModel([("user_id", ASCENDING)])],
    "audit_log": [IndexModel([("at", DESCENDING)]), IndexModel([("target_id", ASCENDING)])],
}


# Users in the order they were created. Not by `_id` alone: nx-27017 sorts
# an integer `_id` as text (1, 10, 11, 2: measured, pinned in
# tests/test_mongo_conformance.py), while `created_at` is a datetime written
# at insert, which sorts right on both servers; `_id` only breaks ties.
CREATION_ORDER = [("created_at", ASCENDING), ("_id", ASCENDING)]


def is_unavailable(exc: BaseException) -> bool:
    """True when an exception means 'the database cannot be reached now':
    a connection failure (ServerSelectionTimeoutError and AutoReconnect
    included), or any operation that ran out of its timeoutMS budget."""
    return isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout)


def connect(uri: str, db_name: str, timeout_ms: int = 2000) -> tuple[AsyncMongoClient, AsyncDatabase]:
    """Create the client. `timeoutMS` is the driver's client-side operation
    timeout: every operation (server selection, connecting, waiting for the
    answer, retries) fits in it, so a database that is down *or hung* (a
    stopped process keeps its socket open and silent) is a 503 within about
    DB_TIMEOUT_MS. The driver reconnects by itself."""
    client: AsyncMongoClient = AsyncMongoClient(
        uri,
        tz_aware=True,
        timeoutMS=timeout_ms,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        retryWrites=False,  # nx-27017 is a standalone server; no retryable writes there
    )
    return client, client[db_name]


async def ensure_indexes(db: AsyncDatabase) -> None:
    for collection, indexes in INDEXES.items():
        await db[collection].create_indexes(indexes)


async def ping(db: AsyncDatabase) -> bool:
    try:
        await db.command("ping")
        return True
    except PyMongoError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def die_with_parent(sig: int = signal.SIGTERM) -> None:  # pragma: no cover - runs in the child
    """Ask Linux to send `sig` to this child process (the embedded database,
    or a worker of services/workers.py) if its parent dies without cleaning
    up (kill -9), so no orphan keeps the data files or the port open."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def make_private(root: Path) -> None:
    """0700 for `root` and the directories in it, 0600 for its files: they
    hold bcrypt hashes and the signing key. Applied at every start, so files
    left readable by an older version are fixed too."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        try:
            path.chmod(0o700 if path.is_dir() else 0o600)
        except OSError as exc:
            log.warning("cannot make %s private: %s", path, exc)


def database_child_setup() -> None:  # pragma: no cover - runs in the child
    os.umask(0o077)  # the database's new files (SQLite journal, logs) are 0600 from the start
    # SIGKILL, not SIGTERM: nx-27017 at times outlives a SIGTERM (stop() then
    # kills it after term_grace), and with the server gone nobody would. Its
    # SQLite files are safe from a kill, as stop()'s own escalation relies on.
    die_with_parent(signal.SIGKILL)
    os.setpgrp()  # Ctrl-C on the terminal goes to the server, which stops the child in order


def running_embedded_databases() -> list[Path]:
    """The DATA_DIRs of the nx-27017 processes running on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if any(b"nx_27017" in arg for arg in args) and b"--data-dir" in args:
            index = args.index(b"--data-dir") + 1
            if index < len(args):
                found.append(Path(os.fsdecode(args[index])).parent)
    return found


class DatabaseInUse(RuntimeError):
    """DATA_DIR's embedded database is already run by another process."""

    def __init__(self, data_dir: Path, pid: int):
        super().__init__(f"the embedded database in {data_dir} is already running (pid {pid}), "
                         "most likely under a server started with this DATA_DIR")
        self.pid = pid


def process_state(pid: int) -> str | None:
    """The state letter of a process (R, S, T stopped, Z zombie...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


class EmbeddedMongo:
    """An nx-27017 child process on a free loopback port."""

    def __init__(self, data_dir: str | os.PathLike, term_grace: float = 1.5):
        self.data_dir = Path(data_dir).resolve() / "db"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.term_grace = term_grace  # seconds between SIGTERM and SIGKILL on stop
        self.restarts = 0

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "nx-27017.pid"

    @property
    def port_file(self) -> Path:
        return self.data_dir / "nx-27017.port"

    def running_elsewhere(self) -> tuple[int, str | None] | None:
        """(pid, uri) of a live nx-27017 on these files that is not our child
        (uri None when it did not say its port)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if (self.process is not None and pid == self.process.pid) or process_state(pid) in (None, "Z"):
            return None
        try:
            if b"nx_27017" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None  # the pid was reused by something else: the pid file is stale
        except OSError:
            return None
        try:
            return pid, f"mongodb://127.0.0.1:{int(self.port_file.read_text().strip())}/"
        except (OSError, ValueError):
            return pid, None

    def start(self, timeout: float = 30.0) -> str:
        """Start the child (again on the same port after a stop) and wait
        until it accepts connections. A pid file left by a dead child is
        removed (nx-27017 would refuse to start: "already running"); one of a
        live process means DATA_DIR is in use (DatabaseInUse)."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private(self.data_dir.parent)
        other = self.running_elsewhere()
        if other:
            raise DatabaseInUse(self.data_dir, other[0])
        self.pid_file.unlink(missing_ok=True)
        self.port = self.port or free_port()
        cmd = [sys.executable, "-m", "nx_27017.nx_27017", "--host", "127.0.0.1", "-p", str(self.port),
               "--data-dir", str(self.data_dir), "--log-file", str(self.data_dir / "nx-27017.log"),
               "--pid-file", str(self.pid_file)]
        log_file = os.fdopen(os.open(self.data_dir / "nx-27017.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                             "ab")
        self.process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=database_child_setup, close_fds=True)
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded database exited with code {self.process.returncode}; "
                                   f"see {self.data_dir / 'nx-27017.out'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    self.port_file.write_text(str(self.port))
                    self.port_file.chmod(0o600)
                    log.info("embedded database nx-27017 listening on 127.0.0.1:%d (files in %s)",
                             self.port, self.data_dir)
                    return self.uri
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded database did not start in time")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `term_grace` seconds, then reap: the
        whole stop fits well inside SHUTDOWN_TIMEOUT. (nx-27017's own SIGTERM
        exit is unreliable; a SIGSTOPped child gets SIGCONT so it can exit.)"""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                os.kill(process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            try:
                process.wait(self.term_grace)
            except subprocess.TimeoutExpired:
                log.warning("embedded database still running %.1fs after SIGTERM; killing it", self.term_grace)
                process.kill()
                process.wait()
            log.info("embedded database stopped")
        if process is not None:
            self.pid_file.unlink(missing_ok=True)
            self.port_file.unlink(missing_ok=True)

    async def wait_stopped(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)
