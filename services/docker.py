"""The Docker Engine adapter: the only module that talks to dockerd.

A thin layer over aiodocker (async, no thread per call). Container creation
sends raw Engine-API JSON, so what we ask Docker for is visible in one place
(`container_config`). Every failure to reach the engine becomes
`DockerUnavailable`; the engine's own refusals stay `DockerError` with the
HTTP status Docker answered.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

log = logging.getLogger("apranova.docker")

DEFAULT_HOST = "unix:///var/run/docker.sock"
CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=3)

__all__ = ["DockerEngine", "DockerError", "DockerUnavailable"]


class DockerUnavailable(Exception):
    """The engine cannot be reached (socket missing, daemon down, timeout)."""


def label_filter(labels: dict[str, str]) -> list[str]:
    """Engine-API `label` filter values: containers carrying every label."""
    return [f"{key}={value}" for key, value in labels.items()]


def is_ambiguous_network(exc: DockerError) -> bool:
    """Docker's refusal to use a network name that several networks share."""
    return "is ambiguous" in str(exc.message)


def is_port_taken(exc: DockerError) -> bool:
    """Docker's refusal to publish a host port something else holds."""
    text = str(exc.message).lower()
    return "port is already allocated" in text or "address already in use" in text


class DockerEngine:
    """One aiodocker client per process. The client survives daemon
    restarts: each call opens its connection afresh, so the feature comes
    back by itself when the engine does."""

    def __init__(self, host: str = ""):
        self.host = host or DEFAULT_HOST
        self.errors = 0  # engine unreachable or 5xx answers; read by /metrics
        self.client = aiodocker.Docker(url=self.host, timeout=CALL_TIMEOUT)
        self._streams: set[aiohttp.ClientResponse] = set()

    def end_event_streams(self) -> None:
        """Close every open event stream, so that its reader wakes up and
        ends. Shutdown relies on this rather than on task cancellation
        alone: a CancelledError can be absorbed on the way (PyMongo's async
        driver has swallowed one during a query), and an event stream left
        open then waits for the next Docker event forever."""
        for response in list(self._streams):
            response.close()

    async def close(self) -> None:
        self.end_event_streams()
        await self.client.close()

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except DockerError as exc:
            if exc.status == 900:  # aiodocker: could not connect
                self.errors += 1
                raise DockerUnavailable(str(exc.message)) from None
            if exc.status >= 500:
                self.errors += 1
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.errors += 1
            raise DockerUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def _json(self, path: str, method: str = "GET", *, params: dict | None = None,
                    body: Any = None) -> Any:
        data = json.dumps(body) if body is not None else None
        return await self._call(self.client._query_json(path, method, params=params, data=data))

    async def _json_unless(self, statuses: tuple[int, ...], path: str, method: str = "GET", *,
                           params: dict | None = None, body: Any = None) -> Any:
        """`_json`, with None in place of an error whose status is one of
        `statuses` (the thing is gone, or already as asked)."""
        try:
            return await self._json(path, method, params=params, body=body)
        except DockerError as exc:
            if exc.status in statuses:
                return None
            raise

    async def ping(self) -> bool:
        try:
            await self._call(self.client._query_json("version", versioned_api=False))
            return True
        except (DockerUnavailable, DockerError):
            return False

    # -- images -------------------------------------------------------------------
    async def image_exists(self, image: str) -> bool:
        return await self._json_unless((404,), f"images/{image}/json") is not None

    async def image_id(self, image: str) -> str:
        """The image's id (its content's digest: what the name points at now)."""
        return str((await self._json(f"images/{image}/json"))["Id"])

    async def image_cmd(self, image: str) -> list[str]:
        """The image's own command (CMD), [] when it has none."""
        info = await self._json(f"images/{image}/json")
        return list((info.get("Config") or {}).get("Cmd") or [])

    async def pull(self, image: str) -> AsyncIterator[dict]:
        """Yield Docker's pull progress messages; a registry error in the
        stream raises DockerError."""
        try:  # aiodocker reads "name:tag" and "name@digest", and defaults the tag to latest
            async for message in self.client.images.pull(image, stream=True, timeout=None):
                if "error" in message:
                    raise DockerError(500, message.get("error") or "pull failed")
                yield message
        except DockerError as exc:
            if exc.status == 900:
                raise DockerUnavailable(str(exc.message)) from None
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise DockerUnavailable(f"{type(exc).__name__}: {exc}") from None

    # -- volumes and networks -----------------------------------------------------
    async def ensure_volume(self, name: str, labels: dict[str, str], options: dict[str, str] | None = None) -> None:
        """Create the volume (creating an existing one is a no-op in Docker);
        `options`: the local driver's mount options (type, device, o)."""
        body: dict[str, Any] = {"Name": name, "Labels": labels}
        if options:
            body.update(Driver="local", DriverOpts=options)
        await self._json("volumes/create", "POST", body=body)

    async def volume_exists(self, name: str) -> bool:
        return await self.inspect_volume(name) is not None

    async def inspect_volume(self, name: str) -> dict | None:
        return await self._json_unless((404,), f"volumes/{name}")

    async def root_dir(self) -> str:
        """The engine's data directory on its host (`docker info`'s Docker Root Dir)."""
        return str((await self._json("info")).get("DockerRootDir") or "/var/lib/docker")

    async def inspect_network(self, name: str) -> dict | None:
        return await self._json_unless((404,), f"networks/{name}")

    async def list_networks(self, name: str) -> list[dict]:
        """The networks named exactly `name` (Docker lets several share a
        name; its own `name` filter also matches parts of names)."""
        found = await self._json("networks", params={"filters": json.dumps({"name": [name]})})
        return [network for network in found if network.get("Name") == name]

    async def create_network(self, name: str, labels: dict[str, str], options: dict[str, str]) -> None:
        """A bridge network. Docker's duplicate check is not atomic: several
        creates at once can all succeed (see workspaces/docker/network.py)."""
        await self._json_unless((409,), "networks/create", "POST", body={
            "Name": name, "Driver": "bridge", "Labels": labels, "Options": options, "CheckDuplicate": True})

    async def remove_network(self, ref: str) -> bool:
        """Remove a network; False when the engine refuses (it has endpoints)."""
        try:
            await self._json_unless((404,), f"networks/{ref}", "DELETE")
        except DockerError as exc:
            if exc.status not in (403, 409) and "active endpoints" not in str(exc.message):
                raise
            return False
        return True

    async def run_once(self, name: str, config: dict, timeout: float = 60) -> int:
        """Create, start and wait for a one-shot container; always removed.
        Returns its exit code."""
        await self.remove_container(name)
        result = await self._json("containers/create", "POST", params={"name": name}, body=config)
        try:
            await self._json(f"containers/{result['Id']}/start", "POST")
            status = await asyncio.wait_for(self._json(f"containers/{result['Id']}/wait", "POST"), timeout)
            return int(status.get("StatusCode", -1))
        finally:
            await self.remove_container(result["Id"])

    async def run_capture(self, name: str, config: dict, timeout: float = 120) -> tuple[int, str]:
        """`run_once`, also returning what the container wrote (give it
        ``"Tty": true``: the log is then plain text, not multiplexed)."""
        await self.remove_container(name)
        result = await self._json("containers/create", "POST", params={"name": name}, body=config)
        try:
            await self._json(f"containers/{result['Id']}/start", "POST")
            status = await asyncio.wait_for(self._json(f"containers/{result['Id']}/wait", "POST"), timeout)
            return int(status.get("StatusCode", -1)), await self._text(f"containers/{result['Id']}/logs",
                                                                        params={"stdout": "1", "stderr": "1"})
        finally:
            await self.remove_container(result["Id"])

    async def exec_output(self, ref: str, cmd: list[str], user: str, timeout: float = 10) -> str | None:
        """Run `cmd` in the running container `ref` as `user` and return its
        output (None when the container is gone or not running)."""
        made = await self._json_unless((404, 409), f"containers/{ref}/exec", "POST", body={
            "Cmd": cmd, "User": user, "AttachStdout": True, "AttachStderr": False, "Tty": True})
        if made is None:
            return None
        return await asyncio.wait_for(self._text(f"exec/{made['Id']}/start", "POST",
                                                 body={"Detach": False, "Tty": True}), timeout)

    async def _text(self, path: str, method: str = "GET", *, params: dict | None = None, body: Any = None) -> str:
        """A raw (Tty) answer body as text, CR LF as LF."""
        async def read() -> str:
            data = json.dumps(body) if body is not None else None
            headers = {"Content-Type": "application/json"} if data else None
            async with self.client._query(path, method, params=params, data=data, headers=headers) as response:
                return (await response.read()).decode("utf-8", "replace").replace("\r\n", "\n")
        return await self._call(read())

    async def remove_volume(self, name: str) -> None:
        await self._json_unless((404,), f"volumes/{name}", "DELETE", params={"force": "true"})

    # -- containers ---------------------------------------------------------------
    async def create_container(self, name: str, config: dict) -> str:
        result = await self._json("containers/create", "POST", params={"name": name}, body=config)
        return result["Id"]

    async def start_container(self, ref: str) -> None:
        await self._json_unless((304,), f"containers/{ref}/start", "POST")  # 304: already started

    async def inspect_container(self, ref: str) -> dict | None:
        return await self._json_unless((404,), f"containers/{ref}/json")

    async def stop_container(self, ref: str, timeout: int = 5) -> None:
        await self._json_unless((304, 404), f"containers/{ref}/stop", "POST", params={"t": str(timeout)})

    async def remove_container(self, ref: str) -> None:
        # 404: gone; 409: removal already in progress
        await self._json_unless((404, 409), f"containers/{ref}", "DELETE", params={"force": "true", "v": "false"})

    async def container_stats(self, ref: str) -> dict | None:
        """One sample of the container's resource use (`stream=false`: the
        engine takes two readings about a second apart, so `precpu_stats` is
        filled and a CPU percentage can be computed). None when it is gone."""
        return await self._json_unless((404,), f"containers/{ref}/stats", params={"stream": "false"})

    async def list_containers(self, labels: dict[str, str]) -> list[dict]:
        filters = {"label": label_filter(labels)}
        return await self._json("containers/json", params={"all": "true", "filters": json.dumps(filters)})

    async def events(self, labels: dict[str, str], since: int | None = None) -> AsyncIterator[dict]:
        """Stream container events for containers carrying `labels` until
        the connection drops (then the iterator raises DockerUnavailable)."""
        filters = {"type": ["container"], "event": ["start", "die", "oom", "stop", "kill", "destroy"],
                   "label": label_filter(labels)}
        params: dict[str, str] = {"filters": json.dumps(filters)}
        if since is not None:
            params["since"] = str(since)
        try:
            response = await self._call(self.client._do_query(
                "events", "GET", params=params, timeout=aiohttp.ClientTimeout(total=None, connect=3)))
            self._streams.add(response)
            try:
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
            finally:
                self._streams.discard(response)
                response.close()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise DockerUnavailable(f"event stream ended: {type(exc).__name__}") from None
        raise DockerUnavailable("event stream ended")


def container_config(*, image: str, labels: dict[str, str], env: dict[str, str], container_port: int,
                     host_ip: str, host_port: int | None, mounts: list[tuple[str, str]], cpus: float, memory: int,
                     pids: int, user: str, network: str = "", cmd: list[str] | None = None) -> dict:
    """The Engine API body of `POST /containers/create` for one workspace:
    no capabilities, a non-root user, no privilege gain; a published port
    only when `host_port` is given (direct mode)."""
    port_key = f"{container_port}/tcp"
    config: dict[str, Any] = {
        "Image": image,
        "Labels": labels,
        "Env": [f"{key}={value}" for key, value in env.items()],
        "ExposedPorts": {port_key: {}},
        "User": user,
        "HostConfig": {
            # Labels also on a volume Docker makes itself (its source vanished
            # meanwhile), so that cleanup by label finds it.
            "Mounts": [{"Type": "volume", "Source": source, "Target": target, "VolumeOptions": {"Labels": labels}}
                       for source, target in mounts],
            "NanoCpus": int(cpus * 1e9),
            "Memory": memory,
            "PidsLimit": pids,
            "RestartPolicy": {"Name": "no"},
            "Init": True,  # tini as PID 1: signals reach the IDE (a quick stop) and zombies are reaped
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
        },
    }
    if host_port is not None:
        config["HostConfig"]["PortBindings"] = {port_key: [{"HostIp": host_ip, "HostPort": str(host_port)}]}
    if network:
        config["HostConfig"]["NetworkMode"] = network
    if cmd:
        config["Cmd"] = cmd
    return config
