"""Pieces of the Docker backend that are plain data: error translation, the
address of a container, and Docker's events as the backend's."""
from __future__ import annotations

import contextlib
from typing import Iterator

from services.docker import DockerError, DockerUnavailable
from services.workspaces.backend import BackendRefused, BackendUnavailable, LifecycleEvent, Usage

ICC_OFF = {"com.docker.network.bridge.enable_icc": "false"}  # containers on it cannot reach each other


@contextlib.contextmanager
def engine_errors(refusal: str) -> Iterator[None]:
    """The adapter's errors as the backend's: `refusal` prefixes the engine's own words."""
    try:
        yield
    except DockerUnavailable as exc:
        raise BackendUnavailable(str(exc)) from None
    except DockerError as exc:
        raise BackendRefused(f"{refusal}: {exc.message}") from None


def network_ip(container: dict, network: str) -> str | None:
    """The container's address on `network`, from an inspect or a list answer."""
    found = ((container.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
    return found.get("IPAddress") or None


def published_port(container: dict) -> int | None:
    """The host port a container publishes, from an inspect or a list answer."""
    ports = [p.get("PublicPort") for p in container.get("Ports") or () if p.get("PublicPort")]
    bindings = ((container.get("HostConfig") or {}).get("PortBindings") or {}).values()
    ports += [int(b["HostPort"]) for binding in bindings for b in binding or () if b.get("HostPort")]
    return ports[0] if ports else None


def lifecycle_events(event: dict, oom: set[str]) -> Iterator[LifecycleEvent]:
    """Docker's container events as the backend's: an ``oom`` is remembered
    in `oom` and makes the ``die`` that follows an "oom"."""
    action = event.get("Action") or event.get("status") or ""
    actor = event.get("Actor") or {}
    ref = actor.get("ID") or event.get("id") or ""
    attributes = actor.get("Attributes") or {}
    workspace_id = attributes.get("apranova.workspace_id")
    if action == "oom":
        oom.add(ref)
    elif action in ("die", "destroy") and workspace_id:
        killed = ref in oom
        oom.discard(ref)
        code = str(attributes.get("exitCode") or "")
        kind = "removed" if action == "destroy" else "oom" if killed else "died"
        yield LifecycleEvent(kind, workspace_id, ref, int(code) if code.isdigit() else None)


def usage_of(stats: dict) -> Usage | None:
    """Docker's stats answer as the docker CLI reads it: CPU% = the
    container's share of the host's CPU time between the two samples, times
    the online CPUs; memory = usage minus the reclaimable page cache
    (cgroup v2: inactive_file; v1: total_inactive_file or cache). None when the
    container is not running (the engine then answers zeros and no read time)."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    if not cpu.get("system_cpu_usage") or str(stats.get("read", "")).startswith("0001-"):
        return None
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - (pre.get("system_cpu_usage") or 0)
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    percent = round(cpu_delta / system_delta * cpus * 100, 1) if pre.get("system_cpu_usage") and system_delta > 0 \
        and cpu_delta >= 0 else None
    memory = stats.get("memory_stats") or {}
    used, detail = memory.get("usage"), memory.get("stats") or {}
    if used is not None:
        cache = detail.get("inactive_file", detail.get("total_inactive_file", detail.get("cache", 0)))
        used = used - cache if cache <= used else used
    return Usage(percent, used, memory.get("limit"))
