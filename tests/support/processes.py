from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.db import free_port
from services.settings import declared
from tests.support.app import ROOT, auth


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of a process's direct children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


def workers_of(server: ServerProcess) -> list[int]:
    return sorted(pid for pid, cmdline in children_of(server.proc.pid) if "server.py" in cmdline)


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


@pytest.fixture
def workers(tmp_path):
    processes = ServerProcesses(tmp_path / "data", WORKERS="2")

    def start(**env: str) -> ServerProcess:
        server = processes(**env)
        server.wait_ready(timeout=60)
        return server

    yield start
    processes.kill_all()
    for server in processes.started:
        for pid, _ in children_of(server.proc.pid):
            os.kill(pid, signal.SIGKILL)


PASSWORD = "Correct-Horse-42"


def server_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in {s.name for s in declared()}}  # no stray settings from the caller
    env.update({"BCRYPT_ROUNDS": "4", "LOG_LEVEL": "INFO"}, **extra)
    return env


def instance_of(data_dir: Path) -> str:
    """A test server's INSTANCE_NAME, one per data directory (its database):
    the processes of one test are one deployment, and none of them meets a
    real deployment's workspaces under the default name on this engine."""
    return "tp" + hashlib.sha1(str(data_dir).encode()).hexdigest()[:10]


class ServerProcess:
    def __init__(self, data_dir: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "server.py", "--port", str(self.port), "--host", "127.0.0.1",
             "--data-dir", str(data_dir)],
            cwd=ROOT, env=server_env(**{"INSTANCE_NAME": instance_of(data_dir), **env}), stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become ready:\n" + self.output())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def children_using(data_dir: Path) -> list[int]:
    """Processes whose command line names this data dir (the embedded db)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "nx_27017" in cmdline and str(data_dir) in cmdline:
                pids.append(int(entry.name))
    return pids


class ServerProcesses:
    """Starts ServerProcesses on one data directory (with `defaults` in their
    environment) and kills whichever are still running at the end."""

    def __init__(self, data_dir: Path, **defaults: str):
        self.data_dir, self.defaults = data_dir, defaults
        self.started: list[ServerProcess] = []

    def __call__(self, **env: str) -> ServerProcess:
        server = ServerProcess(self.data_dir, **{**self.defaults, **env})
        self.started.append(server)
        return server

    def kill_all(self) -> None:
        for server in self.started:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


def refused_within(url: str, token: dict, seconds: float = 1.0) -> float:
    """Poll until the other process refuses; every request that starts more
    than `seconds` after the change must be refused. Returns the delay."""
    changed = time.monotonic()
    while True:
        started = time.monotonic()
        response = httpx.get(url + "/api/users/profile/", headers=auth(token), timeout=10)
        if response.status_code == 401:
            return started - changed
        assert response.status_code == 200, response.text
        assert started - changed < seconds, "another process still accepted the token after 1 s"
        time.sleep(0.02)
