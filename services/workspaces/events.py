"""Workspace events to whoever follows them: `subscribe(workspace_id,
after)` yields the logged events after `after`, then live ones as they
happen, each exactly once and in `seq` order, including those written by
other server processes on the same database (a poll of the log every
`poll_interval` while anyone follows).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import AsyncIterator

from services.workspaces.store import WorkspaceStore, event_of

log = logging.getLogger("apranova.workspaces")
LOG_WAIT = 2.0  # how long a reader waits for an event's log write that is under way
_END = None  # put in a queue: the subscription ends (shutdown, or `disconnect`)


class SubscriptionEnded(Exception):
    """The server ended the subscription (shutting down, or told to)."""


class Events:
    def __init__(self, store: WorkspaceStore, poll_interval: float = 1.0):
        self.store = store
        self.poll_interval = poll_interval
        self.queues: dict[str, set[asyncio.Queue]] = collections.defaultdict(set)
        self.last_seq: dict[str, int] = {}  # newest seq published here, per followed workspace
        self.closed = False
        self._poller: asyncio.Task | None = None

    @property
    def followers(self) -> int:
        return sum(len(queues) for queues in self.queues.values())

    def publish(self, doc: dict) -> None:
        """Hand a document's latest change to this process's followers."""
        self._publish(event_of(doc))

    def _publish(self, event: dict) -> None:
        workspace_id = event["workspace_id"]
        if workspace_id in self.queues:
            self.last_seq[workspace_id] = max(self.last_seq.get(workspace_id, 0), event["seq"])
        for queue in self.queues.get(workspace_id, ()):
            queue.put_nowait(event)

    async def subscribe(self, workspace_id: str, after: int) -> AsyncIterator[dict]:
        """The events after `after`, then live ones, until the caller stops
        iterating; raises SubscriptionEnded when the server ends it."""
        if self.closed:
            raise SubscriptionEnded()
        queue: asyncio.Queue = asyncio.Queue()
        self.queues[workspace_id].add(queue)  # before reading the log, so nothing falls between
        self._ensure_poller()
        try:
            last = after
            # Usually nothing was logged after `after` (a new socket starts at its
            # snapshot's seq): a primary-key read of the seq (about 1 ms on
            # nx-27017) says so more cheaply than the log query (about 6 ms).
            current = (await self.store.seqs([workspace_id])).get(workspace_id)
            if current is None or current > after:
                for event in await self._logged(workspace_id, after, reach=current):
                    yield event
                    last = event["seq"]
            self.last_seq[workspace_id] = min(self.last_seq.get(workspace_id, last), last)
            while True:
                event = await queue.get()
                if event is _END:
                    raise SubscriptionEnded()
                if event["seq"] <= last:
                    continue
                if event["seq"] > last + 1:  # a gap: events another process wrote since the last poll
                    for missed in await self._logged(workspace_id, last, event["seq"] - 1, event["seq"] - 1):
                        yield missed  # (no query otherwise: it cost every delivery a database round trip)
                yield event
                last = event["seq"]
        finally:
            self._unsubscribe(workspace_id, queue)

    async def _logged(self, workspace_id: str, after: int, upto: int | None = None,
                      reach: int | None = None) -> list[dict]:
        """The logged events in (after, upto]. A change is published before
        its log write lands (Lifecycle._announce), so a read that comes up
        short of `reach`, a seq known to exist, is tried again for up to
        LOG_WAIT seconds (then what there is: the write failed)."""
        deadline = time.monotonic() + LOG_WAIT
        while True:
            events = await self.store.events_after(workspace_id, after, upto)
            if reach is None or (events[-1]["seq"] if events else after) >= reach or time.monotonic() > deadline:
                return events
            await asyncio.sleep(0.01)

    async def wait(self, workspace_id: str, timeout: float) -> None:
        """Return at this workspace's next event, or after `timeout`."""
        queue: asyncio.Queue = asyncio.Queue()
        self.queues[workspace_id].add(queue)
        self._ensure_poller()
        try:
            await asyncio.wait_for(queue.get(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._unsubscribe(workspace_id, queue)

    def listen(self, workspace_id: str) -> asyncio.Queue:
        """A queue that receives each change of the workspace made in this
        process, for caches that must forget it at once (the proxy's);
        `unlisten` ends it. Other processes' changes are not polled for."""
        queue: asyncio.Queue = asyncio.Queue()
        self.queues[workspace_id].add(queue)
        return queue

    def unlisten(self, workspace_id: str, queue: asyncio.Queue) -> None:
        self._unsubscribe(workspace_id, queue)

    def _unsubscribe(self, workspace_id: str, queue: asyncio.Queue) -> None:
        queues = self.queues.get(workspace_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.queues[workspace_id]
                self.last_seq.pop(workspace_id, None)

    def disconnect(self) -> None:
        """End every subscription now (their followers see SubscriptionEnded)."""
        for queues in self.queues.values():
            for queue in queues:
                queue.put_nowait(_END)

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_other_processes(), name="workspace-event-poller")

    async def _poll_other_processes(self) -> None:
        """Several server processes share one database: events another
        process logged reach this process's followers within the interval.
        Ends when nobody follows (the next subscription starts it again)."""
        while self.queues and not self.closed:
            await asyncio.sleep(self.poll_interval)
            try:
                for workspace_id, seq in (await self.store.seqs(list(self.queues))).items():
                    last = self.last_seq.get(workspace_id)
                    if last is not None and seq > last:
                        for event in await self.store.events_after(workspace_id, last, seq):
                            self._publish(event)
            except Exception as exc:  # noqa: BLE001 - the database may be away for a moment
                log.warning("event poller: %s", type(exc).__name__)

    async def close(self) -> None:
        self.closed = True
        self.disconnect()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.wait([self._poller], timeout=5)
