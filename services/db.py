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
    "users": [IndexModel([("email_key", ASCENDING)], unique=True)],
    "sessions": [IndexModel([("user_id", ASCENDING)]),
                 IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "rate_limits": [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "workspaces": [IndexModel([("owner_id", ASCENDING)], unique=True),
                   IndexModel([("port", ASCENDING)], unique=True, sparse=True)],
    "workspace_events": [IndexModel([("workspace_id", ASCENDING), ("seq", ASCENDING)], unique=True)],
    "payments": [IndexModel([("payment_intent_id", ASCENDING)], unique=True, sparse=True),
                 IndexModel([("user_id", ASCENDING), ("created_at", DESCENDING)])],
    "workspace_tickets": [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)],
    "stripe_events": [IndexModel([("event_id", ASCENDING)], unique=True)],
    "oauth_identities": [IndexModel([("provider", ASCENDING), ("subject", ASCENDING)], unique=True),
                         IndexModel([("user_id", ASCENDING)])],
}


def is_unavailable(exc: BaseException) -> bool:
    """True when an exception means 'the database cannot be reached now'."""
    return isinstance(exc, ConnectionFailure)  # ServerSelectionTimeoutError and AutoReconnect included


def connect(uri: str, db_name: str, timeout_ms: int = 2000) -> tuple[AsyncMongoClient, AsyncDatabase]:
    """Create the client. Short timeouts make a down database a quick 503
    instead of a hanging request; the driver reconnects by itself."""
    client: AsyncMongoClient = AsyncMongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 5, 10000),
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


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the embedded database if the server dies without
    cleaning up (kill -9), so no orphan keeps the data files open."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C on the terminal goes to the server, which stops the child in order


class EmbeddedMongo:
    """An nx-27017 child process on a free loopback port."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir).resolve() / "db"
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> str:
        """Start the child (again on the same port after a stop) and wait
        until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        cmd = [sys.executable, "-m", "nx_27017.nx_27017", "--host", "127.0.0.1", "-p", str(self.port),
               "--data-dir", str(self.data_dir), "--log-file", str(self.data_dir / "nx-27017.log"),
               "--pid-file", str(self.data_dir / "nx-27017.pid")]
        log_file = open(self.data_dir / "nx-27017.out", "ab")
        self.process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent, close_fds=True)
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded database exited with code {self.process.returncode}; "
                                   f"see {self.data_dir / 'nx-27017.out'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log.info("embedded database nx-27017 listening on 127.0.0.1:%d (files in %s)",
                             self.port, self.data_dir)
                    return self.uri
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded database did not start in time")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("embedded database stopped")

    async def wait_stopped(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)
