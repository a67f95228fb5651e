"""The IdeSpec as a Swarm service spec, and a service's tasks read back as
the backend's Instance: plain data, no engine calls."""
from __future__ import annotations

from typing import Any

from services.settings import Settings
from services.workspaces.backend import MACHINE_LOST, Endpoint, Instance
from services.workspaces.spec import IdeSpec

TERMINAL = {"complete", "shutdown", "failed", "rejected", "remove", "orphaned"}
# Task states the student hears of, in the order they come (Swarm's own words in between say nothing new).
PHASES = {"assigned": "Placed on {node}", "preparing": "Getting the image on {node}",
          "starting": "Starting on {node}", "running": "Started on {node}"}


def mount(spec: IdeSpec, settings: Settings) -> dict[str, Any]:
    """The home volume: made by the node that first runs a task with it
    (local driver), or by SWARM_VOLUME_DRIVER wherever the task runs."""
    options: dict[str, Any] = {"Labels": dict(spec.labels)}
    if settings.swarm_volume_driver:
        options["DriverConfig"] = {"Name": settings.swarm_volume_driver, "Options": settings.swarm_volume_options}
    return {"Type": "volume", "Source": spec.home_volume, "Target": spec.home_path, "VolumeOptions": options}


def constraints(spec: IdeSpec, settings: Settings) -> list[str]:
    pinned = spec.placement.get("constraint")
    return list(settings.swarm_constraints) + ([pinned] if pinned else [])


def service_body(spec: IdeSpec, settings: Settings, argv: list[str] | None) -> dict[str, Any]:
    """One replica of the IDE. Limits are reserved and limited per task, so
    the scheduler places a workspace only where its CPU and memory fit; no
    restart (our lifecycle decides what a crash means); tini as PID 1 and a
    short grace, so a stop is quick; published in host mode on the task's
    node (no ingress mesh: it needs IPVS) at a port the node chooses."""
    container: dict[str, Any] = {
        "Image": spec.image, "Labels": dict(spec.labels), "Env": [f"{k}={v}" for k, v in spec.environment.items()],
        "User": spec.user, "Mounts": [mount(spec, settings)], "Init": True,
        "StopGracePeriod": int(settings.swarm_stop_grace * 1e9), "CapabilityDrop": ["ALL"],
    }
    if argv:
        container["Args"] = argv
    cpus, memory = int(spec.cpus * 1e9), spec.memory_bytes
    return {
        "Name": spec.name, "Labels": dict(spec.labels),
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": {"NanoCPUs": cpus, "MemoryBytes": memory, "Pids": spec.pids},
                          "Reservations": {"NanoCPUs": cpus, "MemoryBytes": memory}},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": constraints(spec, settings)},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {"Mode": "dnsrr", "Ports": [{"Protocol": "tcp", "TargetPort": spec.port,
                                                      "PublishMode": "host"}]},
    }


def setup_body(spec: IdeSpec, settings: Settings, labels: dict[str, str]) -> dict[str, Any]:
    """The one-shot task that gives a fresh home to the IDE's user: as root
    with only CAP_CHOWN, from the workspace image (which has chown)."""
    return {
        "Name": f"{spec.name}-home-setup", "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {"Image": spec.image, "Labels": labels, "User": "0:0", "Command": ["chown"],
                              "Args": ["-R", spec.user, spec.home_path], "Mounts": [mount(spec, settings)],
                              "CapabilityDrop": ["ALL"], "CapabilityAdd": ["CAP_CHOWN"]},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": constraints(spec, settings)},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }


def latest(tasks: list[dict], service_id: str) -> dict | None:
    """The service's newest task (a one-replica service with no restarts has one per launch or scale-up)."""
    own = [t for t in tasks if t.get("ServiceID") == service_id]
    return max(own, key=lambda t: (t.get("Version") or {}).get("Index", 0)) if own else None


def node_name(node: dict | None) -> str:
    return ((node or {}).get("Description") or {}).get("Hostname") or (node or {}).get("ID", "?")


def node_down(node: dict | None) -> bool:
    return node is not None and (node.get("Status") or {}).get("State") in ("down", "disconnected")


def endpoint(task: dict | None, node: dict | None, port: int) -> Endpoint | None:
    """The task's published port, at its node's address."""
    if task is None or node is None:
        return None
    for published in ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or ():
        if published.get("TargetPort") == port and published.get("PublishedPort"):
            address = (node.get("Status") or {}).get("Addr")
            return Endpoint(address, published["PublishedPort"]) if address else None
    return None


def exit_code(task: dict) -> int | None:
    return ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")


def instance(service: dict, task: dict | None, node: dict | None, port: int) -> Instance:
    """Running: its task runs, is meant to, and its node is up (a node that
    went down may still run the container; the manager has given it up)."""
    labels = (service.get("Spec") or {}).get("Labels") or {}
    state = (task or {}).get("Status", {}).get("State")
    lost = task is not None and node_down(node) and state not in TERMINAL - {"orphaned"}
    running = state == "running" and (task or {}).get("DesiredState") == "running" and not lost
    detail = MACHINE_LOST if lost else ((task or {}).get("Status") or {}).get("Err") if not running else None
    return Instance(labels.get("apranova.workspace_id", ""), service["ID"], running,
                    endpoint(task, node, port) if running else None,
                    exit_code=None if running or task is None else exit_code(task), detail=detail or None)
