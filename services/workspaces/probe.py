"""A minimal HTTP probe for readiness checks (no client library: one
request line, one status line, a short timeout)."""
from __future__ import annotations

import asyncio


async def http_status(host: str, port: int, path: str, timeout: float = 2.0) -> int | None:
    """The HTTP status `GET path` answers on host:port, or None when nothing
    answers HTTP there."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
            return int(parts[1])
        return None
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
