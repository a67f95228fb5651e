"""Rate limits: fixed windows, in memory (one process) or in MongoDB (shared).

The in-memory backend is the `limits` package. The MongoDB backend is a
fixed-window counter (`$inc` with upsert, one document per key and window,
removed by a TTL index) so several processes behind a load balancer share
one budget.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from services.errors import RateLimited


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
        self.limiter = FixedWindowRateLimiter(MemoryStorage())

    async def hit(self, item: RateLimitItem, key: str, cost: int) -> Decision:
        allowed = await self.limiter.hit(item, key, cost=cost) if cost else await self.limiter.test(item, key)
        stats = await self.limiter.get_window_stats(item, key)
        reset = int(math.ceil(stats.reset_time)) if stats.reset_time else int(time.time()) + item.get_expiry()
        return Decision(allowed, item.amount, max(0, stats.remaining), reset)

    async def refund(self, item: RateLimitItem, key: str, decision: Decision) -> None:
        await self.limiter.storage.decr(item.key_for(key))


class MongoBackend:
    def __init__(self, db: AsyncDatabase) -> None:
        self.counters = db.rate_limits

    async def hit(self, item: RateLimitItem, key: str, cost: int) -> Decision:
        period = item.get_expiry()
        window = int(time.time()) // period * period
        reset = window + period
        doc_id = f"{item.key_for(key)}:{window}"
        if cost:
            doc = await self.counters.find_one_and_update(
                {"_id": doc_id},
                {"$inc": {"count": cost},
                 "$set": {"expires_at": dt.datetime.fromtimestamp(reset, dt.timezone.utc)}},
                upsert=True, return_document=ReturnDocument.AFTER)
            count = int(doc["count"])
            allowed = count <= item.amount
        else:
            doc = await self.counters.find_one({"_id": doc_id})
            count = int(doc["count"]) if doc else 0
            allowed = count < item.amount
        return Decision(allowed, item.amount, max(0, item.amount - count), reset)

    async def refund(self, item: RateLimitItem, key: str, decision: Decision) -> None:
        # The window the hit was counted in (a refund after it rolled over
        # finds no document and changes nothing).
        window = decision.reset - item.get_expiry()
        await self.counters.update_one({"_id": f"{item.key_for(key)}:{window}", "count": {"$gt": 0}},
                                       {"$inc": {"count": -1}})


class RateLimits:
    """Named limits ('anon', 'user', 'workspace', 'login_failures')."""

    def __init__(self, rules: dict[str, str], backend: MemoryBackend | MongoBackend):
        self.rules = {name: parse(rule) for name, rule in rules.items()}
        self.backend = backend

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
        the attempt ended with `counts` (e.g. a wrong password)."""
        decision = await self.hit(rule, key)
        decision.raise_if_denied(message)
        try:
            yield
        except counts:
            raise
        except BaseException:
            await self.refund(rule, key, decision)
            raise
        await self.refund(rule, key, decision)

    async def peek(self, rule: str, key: str) -> Decision:
        """Is there budget left, without spending any?"""
        return await self.backend.hit(self.rules[rule], f"{rule}:{key}", 0)
