"""The authentication state, cached in the process: each session's
revocation state and each user's document (what authorization reads), so
that an authenticated request needs no database round trip.

What keeps it correct:

* this process's own writes (logout, revocation, role or profile change,
  disabling, enrolment) call ``session_changed`` / ``user_changed`` /
  ``sessions_of_user_changed``: the entry is dropped at once and the change
  is appended to the change feed (services/authring.py: a fixed ring read
  by primary key, so a poll costs the same after 1 or 1,000,000 changes);
* every process polls the feed every POLL_INTERVAL and drops what others
  changed. A reader more than RING_SIZE changes behind (a stall), or that
  finds a slot already overwritten, drops its whole cache instead of
  replaying;
* the cache is trusted only while the last successful poll started less than
  STALE_AFTER ago, so "another process's write takes effect within 1 s"
  holds; when it is stale, a read waits for the poll in flight (late under
  load), and without one (database trouble) it goes to the database;
* one database read per key at a time: concurrent misses share it (a cold
  cache under load would otherwise send a herd of identical reads);
* a read that raced with an invalidation is not stored (generation counter);
* entries are reread after MAX_AGE: a safety net for edits made outside the
  server (a mongo shell), which write no change log entry;
* at most ``size`` sessions and ``size`` users (least recently used go
  first); size 0 turns the cache off.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services import authring

log = logging.getLogger("apranova.authstate")

POLL_INTERVAL = 0.1  # seconds between two reads of the change log (a loaded loop may take long to answer one)
STALE_AFTER = 0.9  # the cache is bypassed when no poll succeeded for this long (the promise is 1 s)
MAX_AGE = 60.0  # seconds an entry lives at most (edits outside the server)
GAP_GIVE_UP = 5.0  # a change log sequence number still missing after this was never written


@dataclass(frozen=True)
class SessionState:
    user_id: int
    revoked: bool
    expires_at: float | None  # epoch seconds; None: unknown (the TTL index still removes it)

    def live(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > now)


def _epoch(value: Any) -> float | None:
    """A session's expires_at in epoch seconds: None when there is none; a
    value that cannot be read counts as expired (0)."""
    if value is None:
        return None
    if isinstance(value, str):  # nx-27017 stores a $set datetime as text (naive UTC)
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return 0.0
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    return 0.0


class _LRU:
    """key -> (loaded_at, value), bounded, least recently used first out."""

    def __init__(self, size: int):
        self.size = size
        self.entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any, now: float) -> Any:
        entry = self.entries.get(key)
        if entry is None or now - entry[0] > MAX_AGE:
            return None
        self.entries.move_to_end(key)
        return entry[1]

    def put(self, key: Any, value: Any, now: float) -> None:
        if self.size <= 0:
            return
        self.entries[key] = (now, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class AuthState:
    def __init__(self, db: AsyncDatabase, size: int = 10000):
        self.db = db
        self.session_docs, self.user_docs = db.sessions, db.users  # made once
        self.ring = authring.ChangeRing(db)
        self.size = size
        self.sessions = _LRU(size)
        self.users = _LRU(size)
        self.generation = 0  # bumped by every invalidation
        self.fresh_until = 0.0  # monotonic time until which the cache is trusted
        self.floor = 0  # every change log entry up to here has been applied
        self.seen: set[int] = set()  # applied entries above the floor
        self.gap_since: float | None = None
        self.hits = self.misses = 0
        self._poller: asyncio.Task | None = None
        self._polling: asyncio.Future | None = None  # the poll in flight (stale readers wait for it)
        self._reads: dict[tuple, tuple[float, int, asyncio.Future]] = {}  # key -> (started, generation, read)
        self._stopping = False

    # -- reads ---------------------------------------------------------------------
    def trusted(self) -> bool:
        return self.size > 0 and time.monotonic() < self.fresh_until

    async def _trusted_after_poll(self) -> bool:
        """Stale: wait for the poll in flight, if any, rather than send every
        request to the database (a late poll under load would otherwise make
        a herd of reads that delays the poll further). A poll that started at
        S and succeeded means every change logged before S is applied, so the
        1 s promise holds."""
        if self.size <= 0 or self._polling is None or self._polling.done():
            return False
        try:
            await asyncio.wait_for(asyncio.shield(self._polling), STALE_AFTER)
        except TimeoutError:
            return False
        return self.trusted()

    async def session(self, session_id: str) -> SessionState | None:
        """The session's state, or None if there is no such session."""
        if self.trusted() or await self._trusted_after_poll():
            state = self.sessions.get(session_id, time.monotonic())
            if state is not None and (state.revoked or state.live(time.time())):  # a revocation is final
                self.hits += 1
                return state
        self.misses += 1  # an expired entry is reread: a refresh may have extended the session
        return await self._shared_read(("session", session_id), self._read_session, session_id)

    async def user(self, user_id: int) -> dict | None:
        """The user's document without the password hash (a copy: callers may
        add keys), or None."""
        if self.trusted() or await self._trusted_after_poll():
            doc = self.users.get(user_id, time.monotonic())
            if doc is not None:
                self.hits += 1
                return dict(doc)
        self.misses += 1
        doc = await self._shared_read(("user", user_id), self._read_user, user_id)
        return dict(doc) if doc is not None else None

    async def _shared_read(self, key: tuple, read: Any, arg: Any) -> Any:
        """One database read per key at a time: concurrent misses (a cold
        cache meeting 64 connections, every request while stale) wait for the
        read in flight instead of each making their own. A read is joined only
        if no invalidation happened since it started (generation) and it
        started less than STALE_AFTER ago (as fresh as a trusted entry)."""
        now = time.monotonic()
        if self.size <= 0:  # the cache off: every request reads for itself
            return await read(arg, now, self.generation)
        flight = self._reads.get(key)
        if flight is None or flight[1] != self.generation or now - flight[0] >= STALE_AFTER:
            task = asyncio.ensure_future(read(arg, now, self.generation))
            flight = self._reads[key] = (now, self.generation, task)
            task.add_done_callback(lambda done, key=key, flight=flight: self._read_done(key, flight))
        return await asyncio.shield(flight[2])  # a waiter's cancellation leaves the read to the others

    def _read_done(self, key: tuple, flight: tuple) -> None:
        if self._reads.get(key) is flight:
            del self._reads[key]
        if not flight[2].cancelled():
            flight[2].exception()  # retrieved: every waiter may have gone

    async def _read_session(self, session_id: str, now: float, generation: int) -> SessionState | None:
        doc = await self.session_docs.find_one({"_id": session_id}, {"user_id": 1, "revoked": 1, "expires_at": 1})
        if doc is None:
            return None
        state = SessionState(int(doc.get("user_id", -1)), bool(doc.get("revoked")), _epoch(doc.get("expires_at")))
        if generation == self.generation:  # else an invalidation raced with this read: do not store
            self.sessions.put(session_id, state, now)
        return state

    async def _read_user(self, user_id: int, now: float, generation: int) -> dict | None:
        doc = await self.user_docs.find_one({"_id": user_id}, {"password_hash": 0})
        if doc is not None and generation == self.generation:
            self.users.put(user_id, doc, now)
        return doc

    # -- writes (call after the database write) --------------------------------------
    async def session_changed(self, session_id: str) -> None:
        await self._changed({"session_id": session_id})

    async def user_changed(self, user_id: int) -> None:
        await self._changed({"user_id": user_id})

    async def sessions_of_user_changed(self, user_id: int) -> None:
        await self._changed({"sessions_of": user_id})

    async def _changed(self, change: dict) -> None:
        # Dropped here first: the next request of this process rereads. A read
        # that started before the write sees the new generation and stores nothing.
        self._apply(change)
        await self.ring.append(change)

    def _apply(self, change: dict) -> None:
        self.generation += 1
        if "session_id" in change:
            self.sessions.entries.pop(change["session_id"], None)
        if "user_id" in change:
            self.users.entries.pop(change["user_id"], None)
        if "sessions_of" in change:
            # The user too: revoking every login goes with an account change
            # (disabled, deleted, password reset) whose writer may not announce it.
            self.users.entries.pop(change["sessions_of"], None)
            for session_id in [key for key, (_, state) in self.sessions.entries.items()
                               if state.user_id == change["sessions_of"]]:
                self.sessions.entries.pop(session_id, None)

    def _drop_all(self, head: int) -> None:
        """Forget every entry and continue from `head`: for a reader that
        cannot know what it missed (too far behind, a slot overwritten, a
        change that never landed)."""
        self.generation += 1
        self.sessions.entries.clear()
        self.users.entries.clear()
        self.floor, self.gap_since = head, None
        self.seen.clear()

    # -- the change log poller --------------------------------------------------------
    async def start(self) -> None:
        if self.size <= 0:
            return  # nothing cached, nothing to invalidate
        self.floor = await self.ring.head()
        await self.db.drop_collection("auth_changes")  # the log of older versions (read by range: it grew)
        self.fresh_until = time.monotonic() + STALE_AFTER
        self._poller = asyncio.create_task(self._poll_loop(), name="auth-state-poller")

    async def close(self) -> None:
        self._stopping = True  # as well as the cancel: a driver call may swallow a CancelledError
        if self._poller:
            self._poller.cancel()
            await asyncio.wait([self._poller], timeout=2 * POLL_INTERVAL + 1)

    async def _poll_loop(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            self._polling = asyncio.get_running_loop().create_future()
            try:
                await self.poll()
                self.fresh_until = started + STALE_AFTER
                self._polling.set_result(None)
            except PyMongoError as exc:
                log.warning("auth state poll failed (%s); reading from the database until it works",
                            type(exc).__name__)
            finally:
                if not self._polling.done():
                    self._polling.set_result(None)  # waiters see trusted() still False
            await asyncio.sleep(POLL_INTERVAL)

    async def poll(self) -> None:
        """Apply what other processes changed since the last poll."""
        head = await self.ring.head()
        if head < self.floor or head - self.floor > authring.RING_SIZE:  # a reset database, or too far behind
            return self._drop_all(head)
        wanted = [seq for seq in range(self.floor + 1, head + 1) if seq not in self.seen]
        for seq, (found, change) in (await self.ring.read(wanted) if wanted else {}).items():
            if found > seq:  # overwritten before this process read it
                return self._drop_all(head)
            if found == seq:  # (lower: its writer is between the counter and the slot)
                self.seen.add(seq)
                self._apply(change)
        self._advance_floor(head)

    def _advance_floor(self, head: int) -> None:
        """Move the floor over applied entries. A missing number (a writer
        between its counter and its slot) holds the floor back, so that
        entry is still read when it lands; after GAP_GIVE_UP its writer is
        taken for dead and the whole cache is dropped."""
        while self.floor + 1 in self.seen:
            self.floor += 1
            self.seen.discard(self.floor)
        if self.floor >= head:
            self.gap_since = None
        elif self.gap_since is None:
            self.gap_since = time.monotonic()
        elif time.monotonic() - self.gap_since > GAP_GIVE_UP:  # what the lost change touched is unknown
            self._drop_all(head)
