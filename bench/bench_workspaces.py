"""Workspace benchmarks against a real `python server.py` process and the
real Docker engine (local test image, workspace-image/build-test-image.sh).

1. create -> running: time from `POST /api/users/workspace/create/` to the
   `running` event on the status WebSocket, p50/p95, for one user at a time
   and for 20 users at once.
2. 1,000 WebSockets open on one server process, one per user watching their
   own workspace: p99 delay from a workspace event (its server-side `at`
   timestamp, milliseconds) to its delivery, while events are produced in
   100 workspaces at a time; and the server's resident memory (VmRSS) with
   and without those connections. By default this part runs the in-memory
   engine (WORKSPACE_BACKEND=tests.support.fake_backend:FakeBackend): what it
   measures is the server's event path (database writes, fan-out, socket
   writes), and 1,000 workspaces start and stop in seconds; each burst stops
   100 running workspaces or starts 100 stopped ones (4-6 events each).
   `--socket-backend docker` uses Docker instead, with a missing image and
   WORKSPACE_PULL_POLICY=never (each run: requested, volume, image check,
   failed) and the direct exposure (no network per workspace); it takes
   several minutes.

    .venv/bin/python bench/bench_workspaces.py [--rounds 10] [--sockets 1000]
    .venv/bin/python bench/bench_workspaces.py --sockets-only   # part 2 only, about a minute

Everything the script creates is removed at the end (by its INSTANCE_NAME).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("WORKSPACE_TEST_IMAGE", "apranova/workspace-test:2")
PASSWORD = "Correct-Horse-42"
CREATE = "/api/users/workspace/create/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def step(text: str) -> None:
    """Progress on stderr: a long phase shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_at(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Server:
    """`python server.py` in a child process with its own data dir."""

    def __init__(self, instance: str, **settings: str):
        self.port = free_port()
        self.data = tempfile.mkdtemp(prefix="bench-ws-")
        env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "DATA_DIR": self.data,
               "JWT_SECRET": "bench-" + "k" * 40, "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "WARNING",
               "RATE_LIMIT_ANON": "1000000/hour", "RATE_LIMIT_USER": "1000000/hour",
               "RATE_LIMIT_WORKSPACE": "1000000/hour", "INSTANCE_NAME": instance,
               "WORKSPACE_IMAGE": IMAGE, "WORKSPACE_MEMORY": "64m", "WORKSPACE_CPUS": "0.5", **settings}
        self.process = subprocess.Popen([sys.executable, os.environ.get("BENCH_SERVER_SCRIPT", str(ROOT / "server.py"))], env=env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=open(Path(self.data) / "server.err", "w"))
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(300):
                try:
                    if (await client.get(self.url + "/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("server did not start; see " + self.data)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        if not os.environ.get("BENCH_KEEP_DATA"):
            shutil.rmtree(self.data, ignore_errors=True)


async def register(client: httpx.AsyncClient, tag: str) -> dict:
    body = {"name": "Bench", "email": f"{tag}-{uuid.uuid4().hex[:10]}@example.com", "password1": PASSWORD,
            "password2": PASSWORD, "role": "student", "track": "DP"}
    response = await client.post("/api/auth/registration/", json=body)
    response.raise_for_status()
    return response.json()


async def connect(server: Server, token: str, after: int | None = None):
    query = f"?after={after}" if after is not None else ""
    url = server.url.replace("http", "ws", 1) + "/api/users/workspace/status/" + query
    return await websocket_connect(HTTPRequest(url, headers={"Authorization": f"Bearer {token}"},
                                               connect_timeout=30, request_timeout=60))


async def create_to_running(server: Server, client: httpx.AsyncClient, user: dict) -> float:
    headers = {"Authorization": f"Bearer {user['access']}"}
    started = time.perf_counter()
    response = await client.post(CREATE, headers=headers)
    assert response.status_code in (200, 201), response.text
    socket_ = await connect(server, user["access"], after=response.json()["seq"])
    try:
        while True:
            message = json.loads(await socket_.read_message())
            if message.get("state") == "running":
                return time.perf_counter() - started
            if message.get("state") == "failed":
                raise RuntimeError(message["message"])
    finally:
        socket_.close()


async def part_create(rounds: int) -> dict:
    instance = f"bench{uuid.uuid4().hex[:6]}"
    server = Server(instance, WORKSPACE_PORT_RANGE="41000-41099")
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            one = await register(client, "one")
            single = []
            for _ in range(rounds):
                single.append(await create_to_running(server, client, one))
                await client.delete("/api/users/workspace/", headers={"Authorization": f"Bearer {one['access']}"})
            users = [await register(client, "many") for _ in range(20)]
            many: list[float] = []
            for _ in range(max(1, rounds // 3)):
                many += await asyncio.gather(*[create_to_running(server, client, u) for u in users])
                await asyncio.gather(*[client.delete("/api/users/workspace/",
                                                     headers={"Authorization": f"Bearer {u['access']}"})
                                       for u in users])
        return {"single": single, "twenty": many}
    finally:
        server.stop()
        cleanup(instance)


SOCKET_BACKENDS = {  # --socket-backend -> the server's settings for part 2
    "fake": {"WORKSPACE_BACKEND": "tests.support.fake_backend:FakeBackend"},
    "docker": {"WORKSPACE_IMAGE": "apranova/bench-missing-image:none", "WORKSPACE_PULL_POLICY": "never",
               "WORKSPACE_EXPOSURE": "direct", "WORKSPACE_PORT_RANGE": "41100-41199"},
}


async def open_sockets(server: Server, users: list[dict]) -> list:
    sockets = []
    for start in range(0, len(users), 50):  # 50 at a time, as a class logging in within a few seconds
        sockets += await asyncio.gather(*[connect(server, u["access"]) for u in users[start:start + 50]])
    failed = 0
    for socket_ in sockets:  # the snapshots
        raw = await socket_.read_message()
        failed += raw is None or json.loads(raw).get("type") != "snapshot"
    if failed:
        step(f"{failed} of {len(sockets)} sockets closed without a snapshot (close code in the server's log)")
    return sockets


async def burst(client: httpx.AsyncClient, chosen: list[dict], backend: str, running: set[int]) -> None:
    """Events in 100 workspaces at once: with Docker a create (that fails);
    with the in-memory engine a stop of a running one, a start of a stopped one."""
    async def one(user: dict) -> None:
        headers = {"Authorization": f"Bearer {user['access']}"}
        uid = user["user"]["id"]
        if backend == "fake" and uid in running:
            response = await client.post("/api/users/workspace/stop/", headers=headers)
            running.discard(uid)
        else:
            response = await client.post(CREATE, headers=headers, json={"wait": True})
            running.add(uid)
        assert response.status_code < 300, response.text
    await asyncio.gather(*[one(user) for user in chosen])


async def part_sockets(count: int, bursts: int, backend: str) -> dict:
    instance = f"bench{uuid.uuid4().hex[:6]}"
    server = Server(instance, **SOCKET_BACKENDS[backend])
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=120,
                                     limits=httpx.Limits(max_connections=50)) as client:
            users = []
            for start in range(0, count, 50):
                users += await asyncio.gather(*[register(client, "ws") for _ in range(min(50, count - start))])
            step(f"{count} users registered")
            running: set[int] = set()
            for start in range(0, count, 50):
                await burst(client, users[start:start + 50], "docker", running)  # every workspace created
            if backend != "fake":
                running.clear()
            await asyncio.sleep(1)
            rss_before = rss_mib(server.process.pid)
            step(f"{count} workspaces created")
            delays: list[float] = []
            sockets = await open_sockets(server, users)
            step(f"{len(sockets)} sockets open")
            await asyncio.sleep(1)
            rss_with = rss_mib(server.process.pid)

            async def listen(socket_) -> None:
                while (raw := await socket_.read_message()) is not None:
                    received = time.time()
                    message = json.loads(raw)
                    if message["type"] == "event":
                        delays.append(received - parse_at(message["at"]))

            listeners = [asyncio.create_task(listen(s)) for s in sockets]
            started = time.perf_counter()
            for number in range(bursts):
                await burst(client, random.sample(users, min(100, count)), backend, running)
                step(f"burst {number + 1} done, {len(delays)} events so far")
            await asyncio.sleep(1)
            bursts_s = time.perf_counter() - started - 1
            rss_after = rss_mib(server.process.pid)
            for socket_ in sockets:
                socket_.close()
            done, stuck = await asyncio.wait(listeners, timeout=10)
            for task in stuck:
                task.cancel()
            if stuck:
                step(f"{len(stuck)} listeners still reading 10 s after the close")
        return {"sockets": len(sockets), "delays": delays, "rss_before": rss_before, "rss_with": rss_with,
                "rss_after": rss_after, "bursts_s": bursts_s}
    finally:
        server.stop()
        cleanup(instance)


def cleanup(instance: str) -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=apranova.instance={instance}"],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=apranova.instance={instance}"],
                             capture_output=True, text=True).stdout.split()
    if volumes:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label=apranova.instance={instance}"],
                              capture_output=True, text=True).stdout.split()
    if networks:  # the workspace network of the (default) network exposure
        subprocess.run(["docker", "network", "rm", *networks], capture_output=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="single-user create->running samples")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=5, help="rounds of events in 100 workspaces")
    parser.add_argument("--skip-create", "--sockets-only", action="store_true", help="part 2 only")
    parser.add_argument("--socket-backend", choices=list(SOCKET_BACKENDS), default="fake",
                        help="engine for part 2 (default: the in-memory one; see above)")
    args = parser.parse_args()
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    if not args.skip_create:
        result = await part_create(args.rounds)
        for name, label in (("single", "1 user"), ("twenty", "20 users at once")):
            values = result[name]
            print(f"create->running, {label}: n={len(values)} p50={ms(statistics.median(values))} "
                  f"p95={ms(percentile(values, 95))} max={ms(max(values))}")
    result = await part_sockets(args.sockets, args.bursts, args.socket_backend)
    delays = result["delays"]
    print(f"{result['sockets']} WebSockets open on one process ({args.socket_backend} engine): {len(delays)} events "
          f"delivered in {result['bursts_s']:.1f} s, delay p50={ms(statistics.median(delays))} "
          f"p99={ms(percentile(delays, 99))} (goal < 100 ms) max={ms(max(delays))}")
    per_socket = (result["rss_with"] - result["rss_before"]) * 1024 / max(1, result["sockets"])
    print(f"server RSS: {result['rss_before']:.1f} MiB before the sockets, {result['rss_with']:.1f} MiB with "
          f"{result['sockets']} open ({per_socket:.1f} KiB per socket, goal <= ~32), "
          f"{result['rss_after']:.1f} MiB after the event bursts")
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that `finally` stops the server and removes what it made


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    asyncio.run(main())
