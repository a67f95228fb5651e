"""`python server.py --workers 2` as ops run it: one command, one embedded
database, two worker processes on one port; SIGTERM stops them all; the
rate limits hold across workers; a dead worker is replaced."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.support.app import auth
from tests.support.processes import refused_within
from tests.support.processes import children_using, PASSWORD
from tests.support.processes import wait_for, workers_of


def test_one_command_runs_two_workers_and_sigterm_stops_everything(workers, tmp_path):
    server = workers()
    assert len(workers_of(server)) == 2
    assert len(children_using(tmp_path / "data")) == 1, "one embedded database for both workers"
    body = {"name": "Ada", "email": "ada@example.com", "password1": PASSWORD, "password2": PASSWORD,
            "role": "student"}
    tokens = httpx.post(server.url + "/api/auth/registration/", json=body, timeout=10).json()
    for _ in range(10):  # a new connection each time: the kernel spreads them over the workers
        response = httpx.get(server.url + "/api/users/profile/", headers=auth(tokens), timeout=10)
        assert response.status_code == 200 and response.json()["email"] == "ada@example.com"
    logout = httpx.post(server.url + "/api/users/logout/", headers=auth(tokens), json={"refresh": tokens["refresh"]},
                        timeout=10)
    assert logout.status_code == 200
    logged_out = time.monotonic()
    refused_within(server.url, tokens)  # whichever worker answers
    time.sleep(max(0.0, logged_out + 1.0 - time.monotonic()))
    for _ in range(10):  # 1 s on, every worker refuses
        assert httpx.get(server.url + "/api/users/profile/", headers=auth(tokens), timeout=10).status_code == 401
    worker_pids = workers_of(server)
    assert server.stop(signal.SIGTERM, timeout=40) == 0
    assert not children_using(tmp_path / "data"), "SIGTERM must stop the embedded database"
    assert not [pid for pid in worker_pids if Path(f"/proc/{pid}").exists()], "SIGTERM must stop the workers"
    assert "2 workers" in server.output()


def test_rate_limits_hold_across_workers(workers):
    server = workers(RATE_LIMIT_ANON="6/hour")
    statuses = [httpx.post(server.url + "/api/users/check-email/", json={"email": f"x{n}@example.com"},
                           timeout=10).status_code for n in range(10)]
    assert statuses[:6] == [200] * 6 and statuses[6:] == [429] * 4, statuses


def test_a_dead_worker_is_replaced(workers):
    server = workers()
    first, second = workers_of(server)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(workers_of(server)) == 2 and first not in workers_of(server))
    assert second in workers_of(server)
    wait_for(lambda: httpx.get(server.url + "/ready", timeout=5).status_code == 200)
    assert server.stop() == 0
