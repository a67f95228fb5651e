"""The auth-state change feed against nx-27017 directly: prints numbers (not a test).

    .venv/bin/python bench/bench_change_feed.py [--sizes 1,1000,10000,100000,1000000] [--polls 200]

For each size N it builds, in a fresh database of its own embedded nx-27017,
the state the server's change feed is in after N changes (the head counter
at N, the ring's min(N, RING_SIZE) slots full: that is all that remains of N
changes) and times AuthState.poll(): idle (no new change) and with one new
change from another writer, median and p99 over --polls polls; then the
nx-27017 process's CPU over 10 s of the 10-a-second idle poll.

For comparison, the change log of before (one document per change, read
with `find({"_id": {"$gt": floor}}).sort("_id")`) at --old-sizes entries.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_common import percentile  # noqa: E402
from services import authring, authstate  # noqa: E402
from services.db import EmbeddedMongo, connect  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed(call, count: int) -> tuple[float, float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), percentile(times, 99)


async def ring_at(db, size: int) -> None:
    """The feed after `size` changes: the head at `size`, the last slots filled."""
    await db.counters.replace_one({"_id": "auth_changes"}, {"_id": "auth_changes", "seq": size}, upsert=True)
    docs = [{"_id": seq % authring.RING_SIZE, "seq": seq, "session_id": f"s{seq}"}
            for seq in range(max(1, size - authring.RING_SIZE + 1), size + 1)]
    await db.auth_change_ring.delete_many({})
    if docs:
        await db.auth_change_ring.insert_many(docs)


async def feed(mongo: EmbeddedMongo, sizes: list[int], polls: int) -> None:
    client, db = connect(mongo.uri, "feed", 60000)  # filling the ring takes seconds on a busy machine
    print(f"ring ({authring.RING_SIZE} slots): poll cost after N past changes")
    print("| past changes | ring documents | idle poll p50 / p99 | poll with 1 new change p50 / p99 |")
    print("|---|---|---|---|")
    for size in sizes:
        await ring_at(db, size)
        reader, writer = authstate.AuthState(db, 100), authstate.AuthState(db, 100)
        reader.floor = await reader.ring.head()
        idle = await timed(reader.poll, polls)

        async def one_change():
            await writer.session_changed("x")
            started = time.perf_counter()
            await reader.poll()
            return time.perf_counter() - started
        changed = []
        for _ in range(polls // 4):
            changed.append(await one_change() * 1000)
        count = await db.auth_change_ring.count_documents({})
        print(f"| {size:,} | {count} | {idle[0]:.2f} / {idle[1]:.2f} ms | "
              f"{statistics.median(changed):.2f} / {percentile(changed, 99):.2f} ms |", flush=True)
    reader = authstate.AuthState(db, 100)
    await reader.start()
    before = cpu_seconds(mongo.process.pid)
    await asyncio.sleep(10)
    used = cpu_seconds(mongo.process.pid) - before
    await reader.close()
    print(f"nx-27017 CPU under the idle 10/s poll at {sizes[-1]:,} past changes: {used / 10 * 100:.1f}% of a core")
    await client.close()


async def old_log(mongo: EmbeddedMongo, sizes: list[int]) -> None:
    client, db = connect(mongo.uri, "oldlog", 60000)  # a scan of 20,000 takes seconds on a busy machine
    print("\nbefore: one document per change, find({_id: {$gt: floor}}).sort(_id)")
    print("| log entries | poll p50 / p99 |")
    print("|---|---|")
    have = 0
    for size in sizes:
        docs = [{"_id": seq, "session_id": f"s{seq}"} for seq in range(have + 1, size + 1)]
        for start in range(0, len(docs), 1000):
            await db.auth_changes.insert_many(docs[start:start + 1000])
        have = size

        async def poll():
            return [doc async for doc in db.auth_changes.find({"_id": {"$gt": size}}).sort("_id", 1)]
        p50, p99 = await timed(poll, 20)
        print(f"| {size:,} | {p50:.1f} / {p99:.1f} ms |", flush=True)
    await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,1000,10000,100000,1000000")
    parser.add_argument("--old-sizes", default="1000,5000,20000")
    parser.add_argument("--polls", type=int, default=200)
    args = parser.parse_args()
    mongo = EmbeddedMongo(tempfile.mkdtemp(prefix="bench-feed-"))
    mongo.start()
    try:
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
        await feed(mongo, [int(n) for n in args.sizes.split(",")], args.polls)
        if args.old_sizes:
            await old_log(mongo, [int(n) for n in args.old_sizes.split(",")])
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        mongo.stop()


if __name__ == "__main__":
    asyncio.run(main())
