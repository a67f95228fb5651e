"""Rate limits: fixed windows, in memory (one process) or in MongoDB (shared).

The in-memory backend is a dict of windows (a window starts at a key's first
hit, as the `limits` package does; it cost 10-50 us a request). The MongoDB
backend is a fixed-window counter (`$inc` with upsert, one document per key
and window, removed by a TTL index) so that several processes (WORKERS, or
servers behind a load balancer) share one budget. To keep a database round
trip off most requests, a process counts a key locally while the count it
last read plus its own unsent hits stay more than `slack(limit)` below the
limit, and sends those hits every SYNC_INTERVAL; near the limit (and for
small limits, always) every hit goes to the database, so the limit is exact
where it matters. What can be lost: up to SYNC_INTERVAL of hits of a process
that dies, and an overshoot only if the other processes made more than the
slack's worth of hits within one SYNC_INTERVAL.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.errors import RateLimited

log = logging.getLogger("apranova.ratelimit")
SYNC_INTERVAL = 0.25  # seconds between two sends of locally counted hits
ATTEMPT_WAIT = 60.0  # seconds an attempt may wait for this process's attempts in flight before a 429


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # epoch seconds when the window resets

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset)}

    def raise_if_denied(self, message: str = "Too many requests. Try again later.") -> None:
        if not self.allowed:
            raise RateLimited(self.reset - int(time.time()), self.headers(), message)


class MemoryBackend:
    def __init__(self) -> None:
        self.windows: dict[str, list[float]] = {}  # key -> [reset (epoch seconds), count]
        self.next_sweep = 0.0

    async def hit(self, item: RateLimitItem, key: str, cost: int) -> Decision:
        now = time.time()
        if now >= self.next_sweep:  # forget ended windows, so that memory stays bounded
            self.windows = {k: w for k, w in self.windows.items() if w[0] > now}
            self.next_sweep = now + 60
        window = self.windows.get(key)
        if window is None or window[0] <= now:
            window = self.windows[key] = [now + item.get_expiry(), 0]
        window[1] += cost
        count = int(window[1])
        allowed = count <= item.amount if cost else count < item.amount
        return Decision(allowed, item.amount, max(0, item.amount - count), int(math.ceil(window[0])))

    async def refund(self, item: RateLimitItem, key: str, decision: Decision) -> None:
        window = self.windows.get(key)
        if window is not None and int(math.ceil(window[0])) == decision.reset and window[1] > 0:
            window[1] -= 1  # only the window the hit was counted in


def slack(limit: int) -> int:
    """How far below the limit a process may count on its own: 10% of it,
    and never for limits of 20 or less."""
    return max(limit // 10, min(limit, 20))


class MongoBackend:
    def __init__(self, db: AsyncDatabase) -> None:
        self.counters = db.rate_limits
        self.local: dict[str, list] = {}  # document id -> [reset, last count read, hits not yet sent]
        self._flusher: asyncio.Task | None = None

    async def _send(self, doc_id: str, reset: int, amount: int) -> int:
        doc = await self.counters.find_one_and_update(
            {"_id": doc_id},
            {"$inc": {"count": amount}, "$set": {"expires_at": dt.datetime.fromtimestamp(reset, dt.timezone.utc)}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return int(doc["count"])

    async def hit(self, item: RateLimitItem, key: str, cost: int) -> Decision:
        period = item.get_expiry()
        window = int(time.time()) // period * period
        reset = window + period
        doc_id = f"{item.key_for(key)}:{window}"
        entry = self.local.setdefault(doc_id, [reset, None, 0])
        if entry[1] is not None and item.amount - (entry[1] + entry[2] + cost) > slack(item.amount):
            entry[2] += cost
            count = entry[1] + entry[2]
        else:  # first hit of this window here, or near the limit: the database decides
            unsent, entry[2] = entry[2], 0
            try:
                if unsent + cost:
                    count = await self._send(doc_id, reset, unsent + cost)
                else:
                    doc = await self.counters.find_one({"_id": doc_id})
                    count = int(doc["count"]) if doc else 0
            except PyMongoError:
                entry[2] += unsent
                raise
            entry[1] = max(entry[1] or 0, count)  # hits counted during the await are in entry[2]
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="rate-limit-sync")
        allowed = count <= item.amount if cost else count < item.amount
        return Decision(allowed, item.amount, max(0, item.amount - count), reset)

    async def refund(self, item: RateLimitItem, key: str, decision: Decision) -> None:
        # The window the hit was counted in (a refund after it rolled over
        # finds no document and changes nothing); a hit still counted only
        # here is taken back here.
        doc_id = f"{item.key_for(key)}:{decision.reset - item.get_expiry()}"
        entry = self.local.get(doc_id)
        if entry is not None and entry[2] > 0:
            entry[2] -= 1
            return
        await self.counters.update_one({"_id": doc_id, "count": {"$gt": 0}}, {"$inc": {"count": -1}})
        if entry is not None and entry[1]:
            entry[1] -= 1

    async def flush(self) -> None:
        """Send the locally counted hits; forget ended windows."""
        now = time.time()
        for doc_id, entry in list(self.local.items()):
            if entry[2]:
                unsent, entry[2] = entry[2], 0
                try:
                    entry[1] = max(entry[1] or 0, await self._send(doc_id, entry[0], unsent))
                except PyMongoError:
                    entry[2] += unsent
                    raise
            if entry[0] <= now and not entry[2]:
                self.local.pop(doc_id, None)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                await self.flush()
            except PyMongoError as exc:
                log.warning("rate limit sync failed (%s); will retry", type(exc).__name__)

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            await asyncio.wait([self._flusher], timeout=1)
        try:
            await self.flush()
        except PyMongoError:
            pass


class RateLimits:
    """Named limits ('anon', 'user', 'workspace', 'login_failures')."""

    def __init__(self, rules: dict[str, str], backend: MemoryBackend | MongoBackend):
        self.rules = {name: parse(rule) for name, rule in rules.items()}
        self.backend = backend
        self.running: dict[str, int] = {}  # "rule:key" -> attempts of this process in flight
        self._finished = asyncio.Condition()  # notified when an attempt ends
        self.ended = 0  # attempts ended so far: a waiter does not miss one that ended before it waited

    async def hit(self, rule: str, key: str) -> Decision:
        """Count one request against the rule."""
        return await self.backend.hit(self.rules[rule], f"{rule}:{key}", 1)

    async def refund(self, rule: str, key: str, decision: Decision) -> None:
        """Give back one hit counted by `hit` (an attempt that turned out not
        to count, such as a login whose password was right)."""
        await self.backend.refund(self.rules[rule], f"{rule}:{key}", decision)

    @contextlib.asynccontextmanager
    async def attempt(self, rule: str, key: str, counts: type[BaseException], message: str):
        """Count an attempt BEFORE it runs, so that parallel attempts cannot
        all pass a look at the budget first (25 concurrent wrong passwords
        against a limit of 5 check at most 5). The hit is given back unless
        the attempt ended with `counts` (e.g. a wrong password). An attempt
        refused while this process has attempts of the key in flight waits
        for one to end and asks again: those may be given back (20 right
        passwords at once against a limit of 5 all pass, 5 at a time)."""
        name = f"{rule}:{key}"
        decision = await self._admit(rule, key, message)
        self.running[name] = self.running.get(name, 0) + 1
        try:
            yield
        except counts:
            raise
        except BaseException:
            await self.refund(rule, key, decision)
            raise
        else:
            await self.refund(rule, key, decision)
        finally:
            self.running[name] -= 1
            if not self.running[name]:
                del self.running[name]
            self.ended += 1
            async with self._finished:
                self._finished.notify_all()

    async def _admit(self, rule: str, key: str, message: str) -> Decision:
        deadline = time.monotonic() + ATTEMPT_WAIT
        while True:
            ended = self.ended
            decision = await self.hit(rule, key)
            if decision.allowed:
                return decision
            if not self.running.get(f"{rule}:{key}") or time.monotonic() >= deadline:
                decision.raise_if_denied(message)  # the budget is spent by failures (or other processes)
            await self.refund(rule, key, decision)  # a refused hit counts nothing while it waits
            async with self._finished:
                if self.ended != ended:
                    continue  # one ended meanwhile: ask again at once
                try:
                    await asyncio.wait_for(self._finished.wait(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    pass

    async def peek(self, rule: str, key: str) -> Decision:
        """Is there budget left, without spending any?"""
        return await self.backend.hit(self.rules[rule], f"{rule}:{key}", 0)
