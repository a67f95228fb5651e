"""Accounts benchmark: prints numbers (not a test).

    .venv/bin/python bench/bench_accounts.py [--seconds 10] [--connections 64]

1. Starts `python server.py` (embedded nx-27017 in a temp dir, BCRYPT_ROUNDS=12)
   and a bare Tornado JSON handler, each as its own process.
2. Drives GET /api/users/profile/ and the bare handler with a keep-alive
   load generator (raw asyncio streams, a separate process) at N connections:
   requests/s, p50, p99.
3. Measures /health latency while 20 logins (bcrypt cost 12) run at once.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# -- load generator (runs in its own process) ------------------------------------------------------

async def _one_connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float],
                          errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            errors.append(status)
    writer.close()


async def _load(url: str, path: str, token: str, connections: int, seconds: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n" + (f"Authorization: Bearer {token}\r\n" if token else "")
               + "\r\n").encode()
    latencies: list[float] = []
    errors: list[int] = []
    warmup = time.perf_counter() + 1
    await asyncio.gather(*(_one_connection(host, int(port), request, warmup, [], []) for _ in range(connections)))
    started = time.perf_counter()
    await asyncio.gather(*(_one_connection(host, int(port), request, started + seconds, latencies, errors)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "non_200": len(errors)}


def load_in_subprocess(url: str, path: str, token: str, connections: int, seconds: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--load", url, path, token or "-", str(connections), str(seconds)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# -- the bare Tornado ceiling --------------------------------------------------------------------

def bare_tornado(port: int) -> None:
    from tornado import ioloop, web

    class Handler(web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"id": 1, "email": "john@example.com", "name": "John Doe", "role": "student"}))

    web.Application([(r"/", Handler)]).listen(port, "127.0.0.1")
    ioloop.IOLoop.current().start()


# -- orchestration -------------------------------------------------------------------------------

def wait_http(url: str, timeout: float = 60) -> None:
    import httpx
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def health_during_logins(url: str, email: str, password: str, logins: int = 20) -> dict:
    import httpx
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=logins + 5)) as client:
        latencies: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                response = await client.get("/health")
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
                await asyncio.sleep(0.005)

        async def one_login() -> float:
            started = time.perf_counter()
            response = await client.post("/api/users/login/", json={"email": email, "password": password,
                                                                    "role": "student"})
            assert response.status_code == 200, response.text
            return time.perf_counter() - started

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        login_times = await asyncio.gather(*(one_login() for _ in range(logins)))
        wall = time.perf_counter() - started
        stop.set()
        await prober
    return {"logins": logins, "logins_wall_s": wall, "login_p50_ms": statistics.median(login_times) * 1000,
            "health_samples": len(latencies), "health_p50_ms": percentile(latencies, 50) * 1000,
            "health_p99_ms": percentile(latencies, 99) * 1000, "health_max_ms": max(latencies) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    import httpx
    from services.db import free_port

    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            port, bare_port = free_port(), free_port()
            env = {**os.environ, "BCRYPT_ROUNDS": "12", "RATE_LIMIT_ANON": "100000000/hour",
                   "RATE_LIMIT_USER": "100000000/hour", "LOG_LEVEL": "WARNING", "APRANOVA_ENV": "development"}
            env.pop("MONGODB_URI", None)
            processes.append(subprocess.Popen([sys.executable, "server.py", "--port", str(port), "--host", "127.0.0.1",
                                               "--data-dir", tmp], cwd=ROOT, env=env))
            processes.append(subprocess.Popen([sys.executable, __file__, "--bare", str(bare_port)]))
            url, bare_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
            wait_http(url + "/health")
            wait_http(bare_url + "/")
            email, password = "bench@example.com", "Correct-Battery-Staple-9"
            registered = httpx.post(url + "/api/auth/registration/", timeout=30, json={
                "name": "Bench", "email": email, "password1": password, "password2": password, "role": "student"})
            registered.raise_for_status()
            token = registered.json()["access"]

            print(f"machine: {os.cpu_count()} cores, "
                  f"{next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if 'model name' in line)}")
            results = {
                "profile": load_in_subprocess(url, "/api/users/profile/", token, args.connections, args.seconds),
                "bare_tornado": load_in_subprocess(bare_url, "/", "", args.connections, args.seconds),
                "health_during_logins": asyncio.run(health_during_logins(url, email, password)),
            }
            for name, numbers in results.items():
                print(f"{name}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in numbers.items()))
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        _, _, url, path, token, connections, seconds = sys.argv
        print(json.dumps(asyncio.run(_load(url, path, "" if token == "-" else token, int(connections),
                                           float(seconds)))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare_tornado(int(sys.argv[2]))
    else:
        main()
