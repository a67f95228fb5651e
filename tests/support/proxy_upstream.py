"""A small Tornado app standing in for code-server behind the workspace
proxy (tests and bench/bench_proxy.py): it echoes what it receives, streams
large bodies in both directions without holding them, and echoes WebSocket
frames. It records what reached it, so tests can assert what never did."""
from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from tornado import web, websocket
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

CHUNK = bytes(range(256)) * 256  # 64 KiB of a known pattern
ASSET = b"/* a static asset */\n" + b"console.log('workbench');\n" * 200  # about 5 KiB, like a small JS file


def pattern(size: int) -> bytes:
    """The first `size` bytes of the pattern /download streams (for hashes)."""
    return (CHUNK * (size // len(CHUNK) + 1))[:size]


class Recorder:
    def __init__(self) -> None:
        self.server: HTTPServer | None = None
        self.requests: list[dict] = []
        self.gate = asyncio.Event()
        self.socket_closes: list[tuple[int | None, str | None]] = []


@web.stream_request_body
class EchoHandler(web.RequestHandler):
    """Any method: answers what it saw, the body as length and SHA-256."""
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.digest = hashlib.sha256()
        self.size = 0

    def prepare(self) -> None:
        self.request.connection.set_max_body_size(2**40)

    def data_received(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)

    def get(self, *args: Any) -> None:
        seen = {"method": self.request.method, "uri": self.request.uri, "headers": dict(self.request.headers),
                "cookies": self.request.headers.get_list("Cookie"), "size": self.size,
                "sha256": self.digest.hexdigest(), "peer": self.request.connection.stream.socket.getpeername()[1]}
        self.recorder.requests.append(seen)
        self.set_header("Content-Type", "application/json")
        self.add_header("Set-Cookie", "ide-session=abc; Path=/; HttpOnly")
        self.add_header("Set-Cookie", "apranova_ws=forged; Path=/")  # must never reach the browser
        self.finish(json.dumps(seen))

    head = post = put = patch = delete = options = get


class DownloadHandler(web.RequestHandler):
    """GET /download?size=N: N bytes of the pattern, streamed chunk by chunk;
    ?gate=1 holds the rest back until the test opens the gate; ?cut=1 closes
    the connection after the first chunk; ?chunked=1 sends no Content-Length
    (chunked transfer coding)."""

    def initialize(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def get(self) -> None:
        size = int(self.get_query_argument("size"))
        gated = self.get_query_argument("gate", "") == "1"
        self.set_header("Content-Type", "application/octet-stream")
        if self.get_query_argument("chunked", "") != "1":
            self.set_header("Content-Length", str(size))
        sent = 0
        while sent < size:
            piece = CHUNK[:min(len(CHUNK), size - sent)]
            self.write(piece)
            await self.flush()
            sent += len(piece)
            if gated:
                await self.recorder.gate.wait()
            if self.get_query_argument("cut", "") == "1":  # dies mid-answer
                self.request.connection.close()
                return
        self.finish()


class AssetHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript")
        self.set_header("Cache-Control", "public, max-age=3600")
        self.finish(ASSET)


class EchoSocket(websocket.WebSocketHandler):
    """Echoes each frame as it came (text or binary); `close:<code>` closes
    with that code; records the close code the client sent."""

    def initialize(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def check_origin(self, origin: str) -> bool:
        return True

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return subprotocols[0] if subprotocols else None

    def open(self, *args: Any) -> None:
        self.recorder.requests.append({"method": "WEBSOCKET", "uri": self.request.uri,
                                       "headers": dict(self.request.headers),
                                       "cookies": self.request.headers.get_list("Cookie")})

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("close:"):
            self.close(int(message[6:]), "asked to")
            return
        await self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        self.recorder.socket_closes.append((self.close_code, self.close_reason))


def make_upstream_app(recorder: Recorder) -> web.Application:
    args = {"recorder": recorder}
    return web.Application([
        (r"/download", DownloadHandler, args),
        (r"/static/asset.js", AssetHandler),
        (r"/ws.*", EchoSocket, args),
        (r"/.*", EchoHandler, args),
    ], websocket_max_message_size=64 * 1024 * 1024)


async def start_upstream() -> tuple[HTTPServer, int, Recorder]:
    """The stand-in on an ephemeral loopback port."""
    recorder = Recorder()
    sock, port = bind_unused_port()
    server = HTTPServer(make_upstream_app(recorder), max_body_size=2**40)
    server.add_sockets([sock])
    recorder.server = server
    return server, port, recorder


def another_port(recorder: Recorder) -> int:
    """One more loopback port served by the same stand-in (each workspace
    document needs a port of its own)."""
    sock, port = bind_unused_port()
    recorder.server.add_sockets([sock])
    return port
