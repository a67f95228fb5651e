"""Readiness, the same for every engine: a minimal HTTP probe (no client
library: one request line, one status line, a short timeout) and the wait
until the IDE answers."""
from __future__ import annotations

import asyncio
import time

from services.settings import Settings
from services.workspaces.backend import Backend, BackendError, BackendExited, Instance, Launched


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


async def wait_ready(backend: Backend, launched: Launched, settings: Settings) -> None:
    """The same readiness for every engine (as JupyterHub checks it in the
    Hub, not in the spawner): ready means WORKSPACE_READY_PATH answers one of
    WORKSPACE_READY_STATUSES at the endpoint the backend gave, not merely
    that the instance started or that something answers there. Once a second
    the backend is asked whether the instance still runs: one that stopped
    (or vanished) fails the run at once, with what the engine knows."""
    host, port = launched.endpoint.host, launched.endpoint.port
    start = time.monotonic()
    deadline, next_check = start + settings.workspace_ready_timeout, start + 1
    while True:
        status = await http_status(host, port, settings.workspace_ready_path)
        if status in settings.workspace_ready_statuses:
            return
        if time.monotonic() > deadline:
            answer = f" (it answered {status})" if status else ""
            raise BackendError(f"The IDE did not answer at {host}:{port} within "
                               f"{settings.workspace_ready_timeout:g} s{answer}.")
        if time.monotonic() > next_check:
            next_check = time.monotonic() + 1
            instance = await backend.inspect(launched.ref)
            if instance is None or not instance.running:
                raise exited(backend, instance)
        await asyncio.sleep(0.2)


def exited(backend: Backend, instance: Instance | None) -> BackendExited:
    """The error of an instance that stopped (or vanished) while starting."""
    why = instance.detail if instance is not None and instance.detail else \
        f"exit code {instance.exit_code if instance is not None else None}"
    return BackendExited(f"The workspace {backend.noun} exited while starting ({why}).")
