"""Longevity benchmark: weeks of a course compressed into minutes, through
the API; prints numbers (not a test).

    .venv/bin/python bench/bench_longevity.py [--scale 1] [--weeks 3] [--idle 10]

Starts `python server.py` (its own embedded nx-27017 and DATA_DIR, the
in-memory workspace engine tests.support.fake_backend, BCRYPT_ROUNDS=4, retention
compressed: RETENTION_INTERVAL=5, SESSION_REVOKED_KEEP_HOURS=0,
WORKSPACE_EVENT_RUNS=2). Measures the fresh server, then per "week":
--sessions x scale logins, each refreshed then logged out (a session, an
auth change, a revoked session to sweep), and --cycles x scale workspace
start/stop cycles over --users students (events), with --concurrency
requests at once; then waits for a retention sweep and measures again:

* the embedded database's CPU while the server stands idle (--idle s);
* GET /api/users/profile/ p50 and p90 over 400 sequential requests
  (cache warm), against the fresh server's;
* the size of DATA_DIR, and the documents left in each collection
  (read through a client of the embedded database's own port);
* the server's and the database's RSS.

At the end, the aged server's profile GET against a fresh server started
then, in alternating rounds (a shared machine's load hits both alike).

The defaults make 6,000 sessions, 12,000 auth changes and about 2,700
workspace events (a few minutes); --scale 5 gives 30,000 sessions and
60,000 changes. --env AUTH_CACHE_SIZE=200 runs past the cache's bound.
BENCH_SERVER_SCRIPT=/tmp/old/server.py measures another version (e.g.
`git archive` of main unpacked there).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import bench_workspaces  # noqa: E402
from bench.bench_common import percentile  # noqa: E402
from bench.bench_workspaces import PASSWORD, free_port, register  # noqa: E402
from services.db import connect  # noqa: E402

# --tracemalloc: the server under tracemalloc (one frame: cheap enough for a
# loaded machine); each SIGUSR1 after the first writes the 15 lines whose
# allocations grew most since the first to DATA_DIR/tracemalloc.txt.
TRACED = """
import runpy, signal, sys, tracemalloc
tracemalloc.start(1)
first, dump_path = [], sys.argv[2]
def dump(*_):
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if not first:
        first.append(snap)
        return
    with open(dump_path, "a") as out:
        out.write("---\\n")
        for stat in snap.compare_to(first[0], "lineno")[:15]:
            out.write(f"{stat.size_diff / 1024:+.0f} KiB {stat.count_diff:+d} blocks\\n")
            out.write(f"    {stat.traceback}\\n")
signal.signal(signal.SIGUSR1, dump)
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
COLLECTIONS = ("sessions", "auth_change_ring", "auth_changes", "workspace_events", "users", "workspaces", "rate_limits")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Server(bench_workspaces.Server):
    """`python server.py` (or under tracemalloc) with its own DATA_DIR and
    embedded database, the in-memory engine and compressed retention."""

    def __init__(self, traced: bool = False, **settings: str):  # noqa: D107 - the parent's start, other command
        self.port = free_port()
        self.data = tempfile.mkdtemp(prefix="bench-longevity-")  # text, as the parent's ready() and stop() use it
        self.path = Path(self.data)
        env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "DATA_DIR": self.data,
               "JWT_SECRET": "bench-" + "k" * 40, "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "WARNING",
               "RATE_LIMIT_ANON": "100000000/hour", "RATE_LIMIT_USER": "100000000/hour",
               "RATE_LIMIT_WORKSPACE": "100000000/hour", "RATE_LIMIT_LOGIN_FAILURES": "100000000/hour",
               "INSTANCE_NAME": f"benchlong{uuid.uuid4().hex[:6]}",
               "WORKSPACE_BACKEND": "tests.support.fake_backend:FakeBackend", "RETENTION_INTERVAL": "5",
               "SESSION_REVOKED_KEEP_HOURS": "0", "WORKSPACE_EVENT_RUNS": "2", **settings}
        command = [sys.executable, os.environ.get("BENCH_SERVER_SCRIPT", str(ROOT / "server.py"))]  # another version
        if traced:
            command = [sys.executable, "-c", TRACED, str(ROOT / "server.py"), str(self.path / "tracemalloc.txt")]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=open(self.path / "server.err", "w"))
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        """The parent's 30 s, a few times: under tracemalloc on a busy machine the start takes longer."""
        for attempt in range(6):
            try:
                return await super().ready()
            except RuntimeError:
                if self.process.poll() is not None or attempt == 5:
                    raise

    def database_pid(self) -> int:
        return int((self.path / "db" / "nx-27017.pid").read_text().strip())

    def database_uri(self) -> str:
        return f"mongodb://127.0.0.1:{int((self.path / 'db' / 'nx-27017.port').read_text().strip())}/"


async def pool(count: int, concurrency: int, job) -> None:
    """Run job(i) for i in range(count), `concurrency` at a time."""
    numbers = iter(range(count))

    async def worker() -> None:
        for n in numbers:
            await job(n)
    await asyncio.gather(*[worker() for _ in range(concurrency)])


async def sessions(client: httpx.AsyncClient, users: list[dict], count: int, concurrency: int) -> None:
    async def one(n: int) -> None:
        email = users[n % len(users)]["user"]["email"]
        login = await client.post("/api/auth/login/", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        renewed = await client.post("/api/auth/token/refresh/", json={"refresh": login.json()["refresh"]})
        renewed.raise_for_status()
        pair = renewed.json()
        out = await client.post("/api/users/logout/", json={"refresh": pair["refresh"]},
                                headers={"Authorization": f"Bearer {pair['access']}"})
        out.raise_for_status()
    await pool(count, concurrency, one)


async def cycles(client: httpx.AsyncClient, users: list[dict], count: int) -> None:
    """Each user's workspace started and stopped in turn, all users at once."""
    async def user_cycles(user: dict, rounds: int) -> None:
        headers = {"Authorization": f"Bearer {user['access']}"}
        for _ in range(rounds):
            (await client.post("/api/users/workspace/create/", headers=headers, json={"wait": True})).raise_for_status()
            (await client.post("/api/users/workspace/stop/", headers=headers)).raise_for_status()
    per_user = max(1, count // len(users))
    await asyncio.gather(*[user_cycles(user, per_user) for user in users])


async def profile_times(client: httpx.AsyncClient, probe: dict, count: int) -> list[float]:
    headers = {"Authorization": f"Bearer {probe['access']}"}
    times = []
    for _ in range(count):
        started = time.perf_counter()
        (await client.get("/api/users/profile/", headers=headers)).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def measure(server: Server, client: httpx.AsyncClient, probe: dict, idle: float, db) -> dict:
    await profile_times(client, probe, 20)
    times = await profile_times(client, probe, 400)
    pid = server.database_pid()
    before = cpu_seconds(pid)
    await asyncio.sleep(idle)
    cpu = (cpu_seconds(pid) - before) / idle * 100
    counts = {name: await db[name].count_documents({}) for name in COLLECTIONS}
    return {"p50": statistics.median(times), "p90": percentile(times, 90), "db_cpu": cpu,
            "data": dir_bytes(server.path) / 1e6, "server_rss": rss_kib(server.process.pid) / 1024,
            "db_rss": rss_kib(pid) / 1024, "counts": counts, "load": os.getloadavg()[0]}


async def side_by_side(aged: Server, aged_probe: dict, extra: dict, rounds: int = 5) -> None:
    """The profile GET of the aged server against a fresh one started now,
    alternating rounds of 200 (the shared machine's load hits both alike)."""
    fresh = Server(**extra)
    try:
        await fresh.ready()
        async with httpx.AsyncClient(base_url=aged.url, timeout=60) as old, \
                httpx.AsyncClient(base_url=fresh.url, timeout=60) as new:
            fresh_probe = await register(new, "probe")
            await profile_times(new, fresh_probe, 50)
            aged_p50, fresh_p50 = [], []
            for _ in range(rounds):
                aged_p50.append(statistics.median(await profile_times(old, aged_probe, 200)))
                fresh_p50.append(statistics.median(await profile_times(new, fresh_probe, 200)))
        a, f = statistics.median(aged_p50), statistics.median(fresh_p50)
        print(f"profile GET p50, alternating rounds of 200 against a fresh server started now: aged {a:.2f} ms, "
              f"fresh {f:.2f} ms: {a / f:.2f}x (rounds: aged {', '.join(f'{x:.2f}' for x in aged_p50)}; "
              f"fresh {', '.join(f'{x:.2f}' for x in fresh_p50)})")
    finally:
        fresh.stop()


async def dumps(path: Path, count: int, timeout: float = 300) -> str:
    """The server's tracemalloc dumps, once all `count` are written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.count("---") >= count:
            return text
        await asyncio.sleep(1)
    return text + "(not all dumps came)"


def row(label: str, made: str, m: dict, fresh: dict) -> str:
    counts = ", ".join(f"{name} {count:,}" for name, count in m["counts"].items())
    return (f"| {label} | {made} | {m['db_cpu']:.1f}% | {m['p50']:.2f} / {m['p90']:.2f} ms "
            f"({m['p50'] / fresh['p50']:.2f}x) | {m['data']:.1f} MB | {m['server_rss']:.0f} / {m['db_rss']:.0f} MiB | "
            f"{counts} | {m['load']:.1f} |")


async def run_weeks(server: Server, args: argparse.Namespace, db) -> dict:
    """The fresh server's figures, then each week's; returns the probe user."""
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=64)) as client:
        users = [await register(client, f"u{n}") for n in range(args.users)]
        probe = await register(client, "probe")
        fresh = await measure(server, client, probe, args.idle, db)
        if args.tracemalloc:
            server.process.send_signal(signal.SIGUSR1)  # the baseline
        print("| after | made through the API | idle database CPU | profile GET p50 / p90 (x fresh) | "
              "DATA_DIR | RSS server / database | documents | load average |")
        print("|---|---|---|---|---|---|---|---|")
        print(row("fresh", "-", fresh, fresh), flush=True)
        total_s = total_c = 0
        for week in range(1, args.weeks + 1):
            started = time.monotonic()
            n_sessions, n_cycles = int(args.sessions * args.scale), int(args.cycles * args.scale)
            await asyncio.gather(sessions(client, users, n_sessions, args.concurrency),
                                 cycles(client, users, n_cycles))
            total_s, total_c = total_s + n_sessions, total_c + n_cycles
            took = time.monotonic() - started
            await asyncio.sleep(12)  # a retention sweep (every 5 s) comes and finishes
            after = await measure(server, client, probe, args.idle, db)
            print(row(f"week {week}", f"{total_s:,} sessions, {total_c:,} cycles ({took:.0f} s)", after, fresh),
                  flush=True)
            if args.tracemalloc:
                server.process.send_signal(signal.SIGUSR1)
    files = sorted(((f.stat().st_size, f.relative_to(server.path)) for f in server.path.rglob("*") if f.is_file()),
                   reverse=True)
    print("DATA_DIR's files:", ", ".join(f"{name} {size / 1e6:.2f} MB" for size, name in files[:6]))
    return probe


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--weeks", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=2000, help="logins a week (x scale)")
    parser.add_argument("--cycles", type=int, default=150, help="workspace start/stop cycles a week (x scale)")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server, e.g. AUTH_CACHE_SIZE=200")
    parser.add_argument("--tracemalloc", action="store_true", help="print the server's biggest allocation growths")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start (shared)")
    extra = dict(item.split("=", 1) for item in args.env)
    if extra:
        print("server settings:", " ".join(args.env))
    server = Server(args.tracemalloc, **extra)
    try:
        await server.ready()
        mongo_client, db = connect(server.database_uri(), "apranova", 60000)
        probe = await run_weeks(server, args, db)
        await mongo_client.close()
        await side_by_side(server, probe, extra)
        if args.tracemalloc:
            print(await dumps(server.path / "tracemalloc.txt", args.weeks))
    finally:
        server.stop()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    asyncio.run(main())
