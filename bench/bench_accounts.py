"""Accounts benchmark: prints numbers (not a test).

    .venv/bin/python bench/bench_accounts.py [--seconds 8] [--connections 64] [--rounds 3]

1. Starts, each as its own process with its own embedded nx-27017
   (BCRYPT_ROUNDS=12): `python server.py` (1 worker), the same with
   AUTH_CACHE_SIZE=0 (every request reads the database: the "before"),
   `python server.py --workers 2`, and a bare Tornado JSON handler.
2. Drives GET /api/users/profile/ (and the bare handler) with wrk -t2 (or, without
   wrk, a keep-alive asyncio load generator in a separate process) at N
   connections: 2 s of warm-up each, then alternating rounds: medians of
   requests/s, p50, p99, and the ratios against bare Tornado and the original
   Django backend's figure recorded in issue 10; then the p99 of each server
   (median and every run) in one block.
3. Prints the resident memory of each server with its children (workers,
   database) after the load, then /health latency while 20 logins (bcrypt
   cost 12) run at once on the 1-worker server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import percentile, wait_http

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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


ORIGINAL_DJANGO_RPS = (543, 567)  # issue 10: the original backend on this machine, same load (not rerun here)
CONFIGS = {  # name -> (extra environment, extra arguments)
    "profile_1_worker": ({}, []),
    "profile_1_worker_no_cache": ({"AUTH_CACHE_SIZE": "0"}, []),
    "profile_2_workers": ({}, ["--workers", "2"]),
}


def wrk_load(url: str, path: str, token: str, connections: int, seconds: float) -> dict:
    """wrk (C, 2 threads) when installed: it leaves more CPU to the server
    than the Python load generator does on a 2-core machine."""
    header = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency", *header, url + path],
                         check=True, capture_output=True, text=True).stdout

    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": ms(re.search(r"\s50%\s+(\S+)", out)[1]),
            "p99_ms": ms(re.search(r"\s99%\s+(\S+)", out)[1]), "non_200": int(non_2xx[1]) if non_2xx else 0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            pending.extend(int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def rss_mib(pid: int, field: str = "Rss") -> float:
    """Rss (or Pss: shared pages split between the sharers, fairer for forked
    workers) of a process and all its descendants (workers, embedded database)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            total += int(re.search(rf"^{field}:\s+(\d+)", rollup, re.M)[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, TypeError):
            continue
        pending.extend(int(child) for child in children)
    return total / 1024


def start_server(tmp: str, env: dict, extra: list[str], cwd: Path = ROOT) -> tuple[subprocess.Popen, str]:
    from services.db import free_port
    port = free_port()
    data = tempfile.mkdtemp(dir=tmp)
    process = subprocess.Popen([sys.executable, "server.py", "--port", str(port), "--host", "127.0.0.1",
                                "--data-dir", data, *extra], cwd=cwd, env=env)
    return process, f"http://127.0.0.1:{port}"


def register(url: str, email: str, password: str) -> str:
    import httpx
    registered = httpx.post(url + "/api/auth/registration/", timeout=30, json={
        "name": "Bench", "email": email, "password1": password, "password2": password, "role": "student"})
    registered.raise_for_status()
    return registered.json()["access"]


def summarize(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    parser.add_argument("--before", type=Path, help="an unpacked older commit (git archive COMMIT | tar -x -C DIR): "
                        "its server.py runs as 'profile_before', 1 worker, for a before/after in the same run")
    return parser.parse_args()


def start_all(args: argparse.Namespace, tmp: str, processes: dict[str, subprocess.Popen]) -> dict[str, str]:
    """Every server to compare, each ready; returns name -> URL."""
    from services.db import free_port
    # Login attempts are counted before their bcrypt check (issue 14): 20 at
    # once for one account need a failure budget of at least 20.
    env = {**os.environ, "BCRYPT_ROUNDS": "12", "RATE_LIMIT_ANON": "100000000/hour",
           "RATE_LIMIT_USER": "100000000/hour", "RATE_LIMIT_LOGIN_FAILURES": "1000/hour", "LOG_LEVEL": "WARNING",
           "APRANOVA_ENV": "development"}
    env.pop("MONGODB_URI", None)
    urls: dict[str, str] = {}
    for name in args.only:
        extra_env, extra_args = CONFIGS[name]
        processes[name], urls[name] = start_server(tmp, {**env, **extra_env}, extra_args)
    if args.before:
        processes["profile_before"], urls["profile_before"] = start_server(tmp, env, [], args.before.resolve())
    bare_port = free_port()
    processes["bare_tornado"] = subprocess.Popen([sys.executable, __file__, "--bare", str(bare_port)])
    urls["bare_tornado"] = f"http://127.0.0.1:{bare_port}"
    for name, url in urls.items():
        wait_http(url + ("/" if name == "bare_tornado" else "/health"))
    return urls


def run_rounds(args: argparse.Namespace, load, urls: dict[str, str], tokens: dict[str, str],
               processes: dict[str, subprocess.Popen]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in urls}
    for name, url in urls.items():  # warm-up, not measured: the first requests fill caches and open connections
        load(url, "/" if name == "bare_tornado" else "/api/users/profile/", tokens[name], args.connections, 2)
    for _ in range(args.rounds):
        for name, url in urls.items():
            path = "/" if name == "bare_tornado" else "/api/users/profile/"
            cpu = cpu_seconds(processes[name].pid)
            run = load(url, path, tokens[name], args.connections, args.seconds)
            # CPU per request (server + database) barely depends on the machine's other load.
            run["cpu_ms_per_request"] = (cpu_seconds(processes[name].pid) - cpu) * 1000 / max(
                1.0, run["rps"] * args.seconds)
            runs[name].append(run)
    return runs


def report(runs: dict[str, list[dict]]) -> None:
    results = {name: summarize(numbers) for name, numbers in runs.items()}
    bare = results["bare_tornado"]["rps"]
    for name, numbers in results.items():
        ratio = ""
        if name != "bare_tornado":
            ratio = (f", x_bare={numbers['rps'] / bare:.2f}, x_original_django="
                     f"{numbers['rps'] / ORIGINAL_DJANGO_RPS[1]:.2f}-{numbers['rps'] / ORIGINAL_DJANGO_RPS[0]:.2f}")
        each = ", ".join(f"{run['rps']:.0f}" for run in runs[name])
        print(f"{name}: " + ", ".join(f"{k}={v:.2f}" if k.startswith("cpu") else f"{k}={v:.1f}"
                                      for k, v in numbers.items()) + ratio + f"  (runs: {each} req/s)")
    if "profile_2_workers" in results and "profile_1_worker" in results:
        print(f"2 workers / 1 worker: {results['profile_2_workers']['rps'] / results['profile_1_worker']['rps']:.2f}x")
    # The latency goal (issue 10: p99 < 30 ms, one process), each run's p99
    # beside its median, so that one stalled run shows as such.
    print("p99 (goal for one process: < 30 ms), median and each run:")
    for name in ("profile_1_worker", "profile_2_workers", "bare_tornado", "profile_before",
                 "profile_1_worker_no_cache"):
        if name in results:
            each = ", ".join(f"{run['p99_ms']:.1f}" for run in runs[name])
            print(f"  p99 {name:<26} {results[name]['p99_ms']:7.1f} ms   (runs: {each} ms)")


def main() -> None:
    args = parse_args()
    load = load_in_subprocess if args.python_load or not shutil.which("wrk") else wrk_load
    processes: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            urls = start_all(args, tmp, processes)
            email, password = "bench@example.com", "Correct-Battery-Staple-9"
            tokens = {name: register(url, email, password) for name, url in urls.items() if name != "bare_tornado"}
            tokens["bare_tornado"] = ""
            print(f"machine: {os.cpu_count()} cores, "
                  f"{next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if 'model name' in line)}; "
                  f"load average before: {open('/proc/loadavg').read().split()[:3]}")
            print(f"load generator: {'wrk -t2' if load is wrk_load else 'python asyncio'} -c{args.connections}, "
                  f"{args.seconds:.0f} s per run, {args.rounds} alternating rounds, medians")
            report(run_rounds(args, load, urls, tokens, processes))
            for name, process in processes.items():
                print(f"memory_after_benchmark {name}: RSS {rss_mib(process.pid):.0f} MiB, "
                      f"PSS {rss_mib(process.pid, 'Pss'):.0f} MiB (server + its children)")
            for name in ("profile_1_worker", "profile_before"):
                if name in urls:
                    numbers = asyncio.run(health_during_logins(urls[name], email, password))
                    print(f"health_during_logins ({name}): " + ", ".join(
                        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()))
            print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        _, _, url, path, token, connections, seconds = sys.argv
        print(json.dumps(asyncio.run(_load(url, path, "" if token == "-" else token, int(connections),
                                           float(seconds)))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare_tornado(int(sys.argv[2]))
    else:
        main()
