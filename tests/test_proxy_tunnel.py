"""The WebSocket tunnel after the handshake (proxy/tunnel.py), against a raw
workspace whose bytes the test scripts: what either side sent together with
the handshake is relayed first, a browser that reads nothing holds the
workspace back (no unbounded buffer in the server), and both kinds of
tunnel (asyncio protocols on plain connections, Tornado streams under the
server's own TLS) end a socket with a close frame only between frames."""
from __future__ import annotations

import asyncio
import base64
import os
import socket

import httpx
import pytest
from tornado.iostream import IOStream

from proxy.tunnel import SocketTunnel, StreamTunnel
from tests.support.proxy import NO_DOCKER, port_of, signed_in_at

HANDSHAKE_ANSWER = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: x\r\n\r\n")


def frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A workspace's (unmasked) frame."""
    size = len(payload)
    if size < 126:
        return bytes([0x80 | opcode, size]) + payload
    if size < 1 << 16:
        return bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big") + payload
    return bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big") + payload


class RawWorkspace:
    """Answers a handshake with 101 and `first` in the same write, then
    records what arrives and writes what the test queues."""

    def __init__(self, first: bytes = b""):
        self.first, self.received = first, bytearray()
        self.writer: asyncio.StreamWriter | None = None
        self.connected, self.ended = asyncio.Event(), asyncio.Event()

    async def start(self) -> "RawWorkspace":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HANDSHAKE_ANSWER + self.first)
        self.writer = writer
        self.connected.set()
        try:
            while data := await reader.read(65536):
                self.received += data
        except ConnectionError:  # closed with our flood unread: a reset
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        self.server.close()
        if self.writer:
            self.writer.transport.abort()


async def browser_handshake(server, host: str, cookie: str, early: bytes = b"") -> tuple:
    """A raw browser connection after its 101 (the handshake and `early` in one write)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nOrigin: http://{host}\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode() + early)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


@pytest.fixture
async def raw_site(start_server):
    workspace = await RawWorkspace(first=frame(b"early from the workspace")).start()
    server = await start_server(**NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        host, cookie = await signed_in_at(server, client, workspace.port)
    yield server, host, cookie, workspace
    workspace.close()


async def test_bytes_sent_with_either_handshake_are_relayed_first(raw_site):
    server, host, cookie, workspace = raw_site
    masked = bytes([0x82, 0x80 | 5]) + b"\0\0\0\0" + b"hello"  # a browser's frame (mask of zeros)
    reader, writer = await browser_handshake(server, host, cookie, early=masked)
    expected = frame(b"early from the workspace")
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 10) == expected
    for _ in range(100):
        if bytes(workspace.received) == masked:
            break
        await asyncio.sleep(0.05)
    assert bytes(workspace.received) == masked
    writer.write(masked)
    workspace.writer.write(frame(b"later"))
    assert await asyncio.wait_for(reader.readexactly(len(frame(b"later"))), 10) == frame(b"later")
    writer.close()
    await asyncio.wait_for(workspace.ended.wait(), 10)  # the browser gone: the workspace's side is closed
    assert bytes(workspace.received) == masked * 2


async def test_a_browser_that_reads_nothing_holds_the_workspace_back(raw_site):
    server, host, cookie, workspace = raw_site
    _, writer = await browser_handshake(server, host, cookie)
    await asyncio.wait_for(workspace.connected.wait(), 10)
    piece, written = frame(b"x" * (1 << 20)), 0
    try:
        while written < 256 << 20:  # a workspace flooding a browser that never reads
            workspace.writer.write(piece)
            await asyncio.wait_for(workspace.writer.drain(), 2)
            written += len(piece)
    except asyncio.TimeoutError:
        pass
    # Only socket buffers and the tunnel's high-water marks hold bytes: never the whole flood.
    assert written < 64 << 20, f"{written >> 20} MiB accepted while the browser read nothing"
    writer.transport.abort()
    await asyncio.wait_for(workspace.ended.wait(), 10)


async def stream_pair() -> tuple[IOStream, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    return IOStream(ours), theirs


@pytest.mark.parametrize("kind", [SocketTunnel, StreamTunnel])
async def test_a_close_waits_for_the_end_of_the_frame_in_flight(kind):
    loop = asyncio.get_running_loop()
    (client, browser), (upstream, workspace) = await stream_pair(), await stream_pair()
    ended = asyncio.Event()
    tunnel = kind(client, upstream, grant=None)
    asyncio.ensure_future(tunnel.run(lambda _: ended.set()))
    half = frame(b"y" * 1000)[:500]
    await loop.sock_sendall(workspace, half)  # a frame begun...
    received = b""
    while len(received) < 500:
        received += await loop.sock_recv(browser, 65536)
    tunnel.close(4401, "signed out")  # ...so the close frame must wait
    await asyncio.sleep(0.2)
    assert not ended.is_set()
    await loop.sock_sendall(workspace, frame(b"y" * 1000)[500:])
    await asyncio.wait_for(ended.wait(), 5)
    while not received.endswith(b"signed out"):
        data = await asyncio.wait_for(loop.sock_recv(browser, 65536), 5)
        assert data, received[-20:]
        received += data
    assert received == frame(b"y" * 1000) + bytes([0x88, 12]) + (4401).to_bytes(2, "big") + b"signed out"
    browser.close()
    workspace.close()
