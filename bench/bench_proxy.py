"""Workspace proxy benchmark: prints numbers (not a test).

    .venv/bin/python bench/bench_proxy.py [--seconds 10] [--connections 32] [--sockets 200] [--big-mb 1024]
                                          [--rounds 1]

PROXY_FAST_LANE=false in the environment measures the proxy without its
fast lane (every request through Tornado's HTTP layer).

Processes: nx-27017, `python server.py` (no Docker: a workspace document
points at the stand-in through its `endpoint`), the loopback
stand-in for code-server (tests/support/proxy_upstream.py), and each load generator.

With --cached-sessions the server answers session checks from a 1 s
in-memory cache (what the separate auth-state cache provides): the proxy's
own cost without the two database reads of each check.

1. GET of a static asset (about 5 KiB), keep-alive, N connections: direct to
   the stand-in, then through the proxy (Host ws-<id>.localhost, cookie), in
   the same run (--rounds times, alternated): requests/s, p50, p99, and the
   ratio.
2. WebSocket echo, S sockets open at once, each sending a 100-byte text frame
   5 times a second: round-trip p50/p99 direct and through the proxy (the
   difference is the proxy's added latency), and the server's resident memory
   (VmRSS) before and with the S proxied sockets open, per socket.
Each run also gives the CPU milliseconds the server and the stand-in used
per request (or echoed message), which unlike latency does not depend on
what else the machine runs.

3. One download of --big-mb MiB through the proxy: MiB/s and the server's
   peak resident memory (VmHWM), showing the body is streamed, not held.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_common import percentile, wait_http

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (load-independent, unlike latency)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pids: dict[str, int], run, *args: str) -> dict:
    """run(*args), plus each process's CPU milliseconds per request/message."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = run(*args)
    count = result.get("requests") or result.get("messages") or 1
    for name, pid in pids.items():
        result[f"{name}_cpu_ms_each"] = (cpu_seconds(pid) - before[name]) * 1000 / count
    return result


# -- load generators (each in its own process) -------------------------------------------------------
async def _http_connection(port: int, request: bytes, deadline: float, latencies: list[float],
                           errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            errors.append(status)
    writer.close()


async def http_load(port: int, host: str, path: str, header: str, connections: int, seconds: float) -> dict:
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n" + (f"{header}\r\n" if header else "")
               + "Accept-Encoding: identity\r\n\r\n").encode()
    await asyncio.gather(*(_http_connection(port, request, time.perf_counter() + 1, [], [])
                           for _ in range(connections)))  # warm-up
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(_http_connection(port, request, started + seconds, latencies, errors)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3, "non_200": len(errors)}


async def ws_load(port: int, host: str, cookie: str, sockets: int, seconds: float, ready_file: str) -> dict:
    """Open `sockets` sockets, write `ready_file` (the parent reads the
    server's memory then), then echo 5 frames/s on each for `seconds`."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect
    headers = {"Host": host, "Origin": f"http://{host}"}
    if cookie:
        headers["Cookie"] = cookie
    connections = []
    for _ in range(sockets):
        connections.append(await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers=headers)))
    Path(ready_file).write_text("open")
    while Path(ready_file).read_text() != "go":
        await asyncio.sleep(0.05)
    latencies: list[float] = []
    payload = "x" * 100

    async def one(connection) -> None:
        await asyncio.sleep(random.random() * 0.2)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await connection.write_message(payload)
            assert await connection.read_message() == payload
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, 0.2 - (time.perf_counter() - started)))

    await asyncio.gather(*(one(c) for c in connections))
    for connection in connections:
        connection.close()
    return {"messages": len(latencies), "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3, "max_ms": max(latencies) * 1e3}


def run_load(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# -- orchestration ----------------------------------------------------------------------------------
def sign_in(url: str, port: int, upstream_port: int, mongo_uri: str, db_name: str) -> tuple[str, str, str]:
    """A student whose running workspace is the stand-in; returns its host,
    proxy cookie and access token."""
    import httpx
    import pymongo
    password = "Correct-Battery-Staple-9"
    registered = httpx.post(url + "/api/auth/registration/", timeout=30, json={
        "name": "Bench", "email": "bench@example.com", "password1": password, "password2": password,
        "role": "student"})
    registered.raise_for_status()
    user_id, token = registered.json()["user"]["id"], registered.json()["access"]
    client = pymongo.MongoClient(mongo_uri)
    client[db_name].workspaces.insert_one({"_id": uuid.uuid4().hex, "owner_id": user_id, "state": "running",
                                           "port": upstream_port, "endpoint": {"host": "127.0.0.1", "port": upstream_port},
                                           "seq": 1, "progress": 100, "message": "running",
                                           "version": 1})
    client.close()
    ticket_url = httpx.post(url + "/api/users/workspace/open/", headers={"Authorization": f"Bearer {token}"},
                            timeout=30).json()["url"]
    host = f"ws-{user_id}.localhost:{port}"
    redeemed = httpx.get(url + ticket_url.split(host, 1)[1], headers={"Host": host}, timeout=30)
    return host, redeemed.headers["set-cookie"].split(";", 1)[0], token


def big_download(port: int, host: str, cookie: str, size: int) -> float:
    import httpx
    started = time.perf_counter()
    received = 0
    with httpx.stream("GET", f"http://127.0.0.1:{port}/download?size={size}", headers={"Host": host,
                                                                                       "Cookie": cookie},
                      timeout=600) as response:
        assert response.status_code == 200, response.status_code
        for chunk in response.iter_raw(1 << 20):
            received += len(chunk)
    assert received == size
    return time.perf_counter() - started


def report(name: str, numbers: dict) -> None:
    print(f"{name}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1, help="direct/proxied asset runs, alternated")
    parser.add_argument("--cached-sessions", action="store_true",
                        help="what-if: the server answers session_user from a 1 s in-memory cache (the auth-state "
                             "cache being built separately), to show the proxy's own cost without the two reads")
    args = parser.parse_args()
    from services.db import EmbeddedMongo, free_port

    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        mongo = EmbeddedMongo(Path(tmp) / "nx")
        mongo_uri = mongo.start()
        try:
            port, upstream_port = free_port(), free_port()
            env = {**os.environ, "BCRYPT_ROUNDS": "4", "RATE_LIMIT_ANON": "100000000/hour",
                   "RATE_LIMIT_USER": "100000000/hour", "LOG_LEVEL": "WARNING", "APRANOVA_ENV": "development",
                   "MONGODB_URI": mongo_uri, "MONGODB_DB": "bench", "DOCKER_HOST": "unix:///nonexistent.sock",
                   # every socket of the load is one login's: lift the per-login cap above it
                   "PROXY_MAX_SOCKETS_PER_LOGIN": str(max(args.sockets, 1) + 10)}
            command = [__file__, "--cached-server"] if args.cached_sessions else ["server.py"]
            server = subprocess.Popen([sys.executable, *command, "--port", str(port), "--host", "127.0.0.1",
                                       "--data-dir", tmp], cwd=ROOT, env=env)
            upstream = subprocess.Popen([sys.executable, __file__, "--upstream", str(upstream_port)])
            processes += [server, upstream]
            pids = {"server": server.pid, "upstream": upstream.pid}
            url, direct_host = f"http://127.0.0.1:{port}", f"127.0.0.1:{upstream_port}"
            wait_http(url + "/health")
            wait_http(f"http://{direct_host}/static/asset.js")
            host, cookie, token = sign_in(url, port, upstream_port, mongo_uri, "bench")
            print(f"machine: {os.cpu_count()} cores, "
                  f"{next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if 'model name' in line)}")

            load = [str(args.connections), str(args.seconds)]
            asset = "/static/asset.js"
            ratios = []
            for _ in range(args.rounds):  # alternated, so that a change in the machine's load hits both
                direct = measured(pids, run_load, "--http", str(upstream_port), direct_host, asset, "-", *load)
                proxied = measured(pids, run_load, "--http", str(port), host, asset, f"Cookie: {cookie}", *load)
                report("asset direct", direct)
                report("asset proxied", proxied)
                ratios.append(proxied["rps"] / direct["rps"])
                print(f"asset throughput proxied/direct: {ratios[-1]:.2f}x (goal >= 0.7x)")
            if args.rounds > 1:
                print(f"asset throughput proxied/direct, median of {args.rounds} rounds: "
                      f"{sorted(ratios)[len(ratios) // 2]:.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})")
            profile = run_load("--http", str(port), f"127.0.0.1:{port}", "/api/users/profile/",
                               f"Authorization: Bearer {token}", *load)
            report("API GET /api/users/profile/ (same session + user reads, for reference)", profile)

            ws_direct = measured(pids, ws_round, upstream_port, direct_host, "-", args, tmp, None)
            before = memory_kib(server.pid)
            ws_proxied = measured(pids, ws_round, port, host, cookie, args, tmp, server.pid)
            report("websocket echo direct", {k: v for k, v in ws_direct.items() if k != "rss_kib"})
            report("websocket echo proxied", {k: v for k, v in ws_proxied.items() if k != "rss_kib"})
            print(f"websocket added p99: {ws_proxied['p99_ms'] - ws_direct['p99_ms']:.2f} ms (goal < 5 ms), "
                  f"added p50: {ws_proxied['p50_ms'] - ws_direct['p50_ms']:.2f} ms")
            print(f"server VmRSS: {before / 1024:.1f} MiB before, {ws_proxied['rss_kib'] / 1024:.1f} MiB with "
                  f"{args.sockets} proxied sockets open: {(ws_proxied['rss_kib'] - before) / args.sockets:.1f} KiB "
                  f"per socket")

            if args.big_mb:
                seconds = big_download(port, host, cookie, args.big_mb << 20)
                print(f"download {args.big_mb} MiB through the proxy: {args.big_mb / seconds:.0f} MiB/s; server "
                      f"VmHWM (peak RSS) {memory_kib(server.pid, 'VmHWM') / 1024:.1f} MiB, VmRSS now "
                      f"{memory_kib(server.pid) / 1024:.1f} MiB")
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)
            mongo.stop()


def ws_round(port: int, host: str, cookie: str, args, tmp: str, server_pid: int | None) -> dict:
    """One WebSocket load run; reads the server's memory once all sockets are open."""
    ready = Path(tmp) / f"ready-{port}"
    ready.write_text("")
    process = subprocess.Popen([sys.executable, __file__, "--ws", str(port), host, cookie, str(args.sockets),
                                str(args.seconds), str(ready)], stdout=subprocess.PIPE, text=True)
    while ready.read_text() != "open":
        if process.poll() is not None:
            raise RuntimeError("the WebSocket load generator failed")
        time.sleep(0.05)
    time.sleep(0.5)
    rss = memory_kib(server_pid) if server_pid else 0
    ready.write_text("go")
    out, _ = process.communicate(timeout=args.seconds + 120)
    return {**json.loads(out), "rss_kib": rss}


def serve_with_cached_sessions(argv: list[str]) -> int:
    """server.py whose AccountService.session_user keeps answers for 1 s
    (bench only: what the proxy costs once session checks are in memory)."""
    import server
    from services import accounts
    original, cache = accounts.AccountService.session_user, {}

    async def session_user(self, session_id: str):
        hit = cache.get(session_id)
        if hit is None or time.monotonic() - hit[0] > 1.0:
            hit = cache[session_id] = (time.monotonic(), await original(self, session_id))
        return hit[1]

    accounts.AccountService.session_user = session_user
    return server.main(argv)


def serve_upstream(port: int) -> None:
    from tornado import ioloop
    from tests.support.proxy_upstream import Recorder, make_upstream_app
    make_upstream_app(Recorder()).listen(port, "127.0.0.1", max_body_size=2**40)
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "--http":
        _, _, port, host, path, header, connections, seconds = sys.argv
        print(json.dumps(asyncio.run(http_load(int(port), host, path, "" if header == "-" else header,
                                               int(connections), float(seconds)))))
    elif mode == "--ws":
        _, _, port, host, cookie, sockets, seconds, ready = sys.argv
        print(json.dumps(asyncio.run(ws_load(int(port), host, "" if cookie == "-" else cookie, int(sockets),
                                             float(seconds), ready))))
    elif mode == "--cached-server":
        sys.exit(serve_with_cached_sessions(sys.argv[2:]))
    elif mode == "--upstream":
        serve_upstream(int(sys.argv[2]))
    else:
        main()
