"""The proxy's runtime plumbing: idle keep-alive connections to workspaces
(the pools), one HTTP/1.1 exchange on such a connection (the Tornado path),
and the watch that cuts a connection silent for too long."""
from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

_tcp = TCPClient()
CACHE_SECONDS = 1.0  # how stale a workspace's state may be when another process changed it


# -- connections to workspaces -------------------------------------------------------------
class KeepAlivePool:
    """Idle keep-alive connections to workspaces, per address, so that a
    page's many asset requests do not each open a TCP connection. Kept
    shorter than Node's 5 s keep-alive (code-server closes idle ones then);
    a connection that went stale anyway is noticed by its first request,
    which is retried once on a fresh one (only requests without a body).
    A subclass says how a connection is opened and whether it may be reused;
    each connection has `close()`."""

    def __init__(self, per_address: int = 32, idle_seconds: float = 4.0):
        self.per_address, self.idle_seconds = per_address, idle_seconds
        self.idle: dict[tuple[str, int], list[tuple[Any, float]]] = {}

    async def _open(self, address: tuple[str, int]) -> Any:
        raise NotImplementedError

    def _usable(self, conn: Any) -> bool:
        """Still open, with nothing unread on it."""
        raise NotImplementedError

    async def connect(self, address: tuple[str, int], timeout: float, reuse: bool) -> tuple[Any, bool]:
        """A connection to `address` and whether it was reused. Raises OSError
        or asyncio.TimeoutError when the workspace does not answer."""
        now = time.monotonic()
        parked = self.idle.get(address)
        while reuse and parked:
            conn, since = parked.pop()
            if self._usable(conn) and now - since < self.idle_seconds:
                return conn, True
            conn.close()
        return await asyncio.wait_for(self._open(address), timeout), False

    def park(self, address: tuple[str, int], conn: Any) -> None:
        parked = self.idle.setdefault(address, [])
        if not self._usable(conn) or len(parked) >= self.per_address:
            conn.close()
        else:
            parked.append((conn, time.monotonic()))

    def prune(self) -> None:
        """Close connections idle too long (run every second)."""
        limit = time.monotonic() - self.idle_seconds
        for address, parked in list(self.idle.items()):
            kept = []
            for conn, since in parked:
                if since < limit or not self._usable(conn):
                    conn.close()
                else:
                    kept.append((conn, since))
            parked[:] = kept
            if not parked:
                del self.idle[address]

    def close(self) -> None:
        for parked in self.idle.values():
            for conn, _ in parked:
                conn.close()
        self.idle.clear()


class UpstreamPool(KeepAlivePool):
    """The Tornado path's pool: IOStreams."""

    async def _open(self, address: tuple[str, int]) -> IOStream:
        stream = await _tcp.connect(*address)
        stream.set_nodelay(True)
        return stream

    def _usable(self, stream: IOStream) -> bool:
        """Open, nothing read ahead (bytes after the last answer), nothing
        waiting in the socket (bytes written later) and no end: any of these
        would be taken for the answer to the next request."""
        if stream.closed() or stream._read_buffer_size:  # noqa: SLF001 - IOStream has no public "buffered"
            return False
        try:
            stream.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # a byte, or b"" at the end
            return False
        except BlockingIOError:
            return True
        except OSError:
            return False


def exchange_on(stream: IOStream) -> HTTP1Connection:
    """A client-side HTTP/1.1 exchange on a connection to a workspace."""
    # Responses are streamed, never held, so their size needs no bound here.
    # No header_timeout: the caller's IdleWatch already cuts a silent workspace (one timer, not two).
    params = HTTP1ConnectionParameters(decompress=False, max_body_size=2**62, chunk_size=64 * 1024)
    return HTTP1Connection(stream, True, params)


def reusable(method: str, start_line: Any, headers: httputil.HTTPHeaders) -> bool:
    """Whether the connection may carry another request after this answer:
    HTTP/1.1 without `Connection: close`, its body delimited (not by close)."""
    if start_line is None or start_line.version != "HTTP/1.1" or \
            headers.get("Connection", "").lower() == "close":
        return False
    return (method == "HEAD" or start_line.code in (204, 304) or "Content-Length" in headers
            or headers.get("Transfer-Encoding", "").lower() == "chunked")


class IdleWatch:
    """Closes a stream that moves no byte for `seconds` (one timer, re-armed
    lazily: touching it costs one clock read)."""

    def __init__(self, stream: IOStream, seconds: float):
        self.stream, self.seconds = stream, seconds
        self.last = asyncio.get_running_loop().time()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._check)
        self.fired = self.paused = False

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def pause(self) -> None:
        """Not counting (a keep-alive connection while its request is served), without a new timer."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.touch()

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        due = self.last + self.seconds
        if self.paused:
            self.timer = loop.call_later(self.seconds, self._check)
        elif loop.time() >= due:
            self.fired = True
            self.stream.close()
        else:
            self.timer = loop.call_later(due - loop.time(), self._check)

    def cancel(self) -> None:
        self.timer.cancel()


class OpenSockets:
    """The open proxied WebSockets (each has `.grant` and `.close(code,
    reason)`), and how many each login holds, handshakes under way
    included, so that one login cannot open more than `per_login`."""

    def __init__(self, per_login: int):
        self.per_login = per_login
        self.open: set[Any] = set()
        self.count: dict[str, int] = {}  # login session -> sockets open or being opened

    def hold(self, grant: Any) -> bool:
        """Count a handshake about to start; False when the login has its fill."""
        held = self.count.get(grant.session_id, 0)
        if held >= self.per_login:
            return False
        self.count[grant.session_id] = held + 1
        return True

    def release(self, grant: Any) -> None:
        held = self.count.get(grant.session_id, 0) - 1
        if held > 0:
            self.count[grant.session_id] = held
        else:
            self.count.pop(grant.session_id, None)

    def add(self, socket: Any) -> None:
        self.open.add(socket)
        self.count[socket.grant.session_id] = self.count.get(socket.grant.session_id, 0) + 1

    def discard(self, socket: Any) -> None:
        if socket in self.open:
            self.open.discard(socket)
            self.release(socket.grant)

    def __iter__(self) -> Any:
        return iter(list(self.open))

    def __contains__(self, socket: Any) -> bool:
        return socket in self.open

    def __len__(self) -> int:
        return len(self.open)


class WorkspaceCache:
    """Workspace documents the proxy read in the last second, so a page's
    burst of requests does not read the database for each one. A change made
    in this process empties the entry at once (the workspace's in-process
    event stream); one made by another process shows within CACHE_SECONDS."""

    def __init__(self, services: Any):
        self.services = services
        self.entries: dict[int, dict] = {}  # owner id -> {doc, at, used, changes, workspace_id}
        self.reading: dict[int, asyncio.Future] = {}  # owner id -> the read under way

    async def find(self, owner_id: int, fresh: bool = False) -> dict | None:
        entry = self.entries.get(owner_id)
        now = time.monotonic()
        if entry is not None and not fresh and now - entry["at"] < CACHE_SECONDS and entry["changes"].empty():
            entry["used"] = now
            return entry["doc"]
        if fresh or (entry is not None and not entry["changes"].empty()):
            return await self._read(owner_id)
        # Expired: the requests of a page load that all arrive now share one
        # read instead of each making its own.
        pending = self.reading.get(owner_id)
        if pending is None:
            pending = self.reading[owner_id] = asyncio.ensure_future(self._read(owner_id))
            pending.add_done_callback(lambda done: self.reading.pop(owner_id, None)
                                      if self.reading.get(owner_id) is done else None)
        return await asyncio.shield(pending)

    async def _read(self, owner_id: int) -> dict | None:
        now = time.monotonic()
        doc = await self.services.workspaces.find(owner_id)
        entry = self.entries.get(owner_id)
        if entry is not None and (doc is None or doc["_id"] != entry["workspace_id"]):
            self._forget(owner_id)
            entry = None
        if doc is not None:
            if entry is None:
                entry = self.entries[owner_id] = {"workspace_id": doc["_id"],
                                                  "changes": _changes_of(self.services, doc["_id"])}
            while not entry["changes"].empty():
                entry["changes"].get_nowait()
            entry.update(doc=doc, at=now, used=now)
        return doc

    def prune(self, unused_seconds: float = 30.0) -> None:
        limit = time.monotonic() - unused_seconds
        for owner_id in [o for o, entry in self.entries.items() if entry["used"] < limit]:
            self._forget(owner_id)

    def clear(self) -> None:
        for owner_id in list(self.entries):
            self._forget(owner_id)

    def _forget(self, owner_id: int) -> None:
        entry = self.entries.pop(owner_id)
        _ignore_changes(self.services, entry["workspace_id"], entry["changes"])


# The two places that know how workspaces publish their changes in-process.
def _changes_of(services: Any, workspace_id: str) -> asyncio.Queue:
    """A queue that receives each change of the workspace made in this
    process (and, through the workspaces' poller, by others)."""
    return services.workspaces.events.listen(workspace_id)


def _ignore_changes(services: Any, workspace_id: str, queue: asyncio.Queue) -> None:
    services.workspaces.events.unlisten(workspace_id, queue)
