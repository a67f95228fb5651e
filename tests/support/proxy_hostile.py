"""A hostile workspace for the proxy's tests: a raw loopback HTTP/1.1 server
playing an IDE whose code the student controls. Each path answers with
bytes the test scripted (a second answer planted after the first, a 1xx, a
forged header...), and everything that reached it is recorded as it parsed
it, so a test sees whether a smuggled request or a planted answer crossed
the proxy.

It parses requests by the book (Content-Length, else chunked, else no
body), which is how the workspace's real server would see the bytes the
proxy sends it."""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Callable

Answer = bytes | Callable[["Seen"], bytes]


def ok(body: bytes, *headers: str) -> bytes:
    """A plain, well-framed answer."""
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def chunked(body: bytes, *headers: str, trailer: str = "", coding: str = "chunked") -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    head = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n{extra}\r\n".encode()
    return head + b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, trailer.encode())


PLANTED = ok(b"planted", "X-Planted: yes")  # an answer nobody asked for


@dataclass
class Seen:
    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Hostile:
    answers: dict[str, Answer] = field(default_factory=dict)  # path (no query) -> answer
    delayed: dict[str, tuple[float, bytes]] = field(default_factory=dict)  # path -> (seconds, bytes sent after)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> "Hostile":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()

    def paths(self) -> list[str]:
        return [s.target for s in self.seen]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        try:
            while True:
                seen = await _read_request(reader, number)
                if seen is None:
                    break
                self.seen.append(seen)
                path = seen.target.split("?", 1)[0]
                answer = self.answers.get(path, ok(b"real:" + seen.target.encode()))
                writer.write(answer(seen) if callable(answer) else answer)
                await writer.drain()
                if path in self.delayed:
                    seconds, more = self.delayed[path]
                    await asyncio.sleep(seconds)
                    writer.write(more)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            body += (await reader.readexactly(size + 2))[:-2]
    return Seen(connection, method, target, headers, body)


_ids = itertools.count(1)


async def read_answer(reader: asyncio.StreamReader, head_request: bool = False,
                      timeout: float = 10) -> tuple[int, dict[str, str], bytes] | None:
    """One answer from a raw connection (status, headers lower-cased, body),
    or None when the server closed the connection instead of (or in the
    middle of) an answer."""
    try:
        return await _answer(reader, head_request, timeout)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return None


async def _answer(reader: asyncio.StreamReader, head_request: bool, timeout: float) -> tuple | None:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    status = int(lines[0].split()[1])
    if 100 <= status < 200 or head_request or status in (204, 304):
        return status, headers, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readline(), timeout)).split(b";")[0], 16)
            if size == 0:
                if await asyncio.wait_for(reader.readline(), timeout) != b"\r\n":
                    return None  # no trailers in Tornado's grammar: a broken answer
                return status, headers, body
            body += (await asyncio.wait_for(reader.readexactly(size + 2), timeout))[:-2]
    if "content-length" in headers:
        return status, headers, await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    return status, headers, await asyncio.wait_for(reader.read(), timeout)
