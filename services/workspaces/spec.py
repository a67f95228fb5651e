"""The engine-neutral description of one workspace's IDE, built once per
run from the settings and the workspace document; every backend translates
it into its engine's terms (a Docker container body, a Swarm service spec,
on paper a Kubernetes Pod). Names and labels are decided here, so every
engine's instances are found and cleaned up the same way."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from services.settings import Settings, ide_password_on

HOME = "/home/coder"  # the image user's home: the whole of it persists


@dataclass(frozen=True)
class IdeSpec:
    workspace_id: str
    owner_id: int
    name: str  # the instance's name: '<INSTANCE_NAME>-ws-<owner id>'
    image: str
    command: tuple[str, ...] | None  # None: the image's own
    # False: code-server runs with `--auth none` (only the server reaches it; the proxy is the lock).
    ide_password: bool
    environment: Mapping[str, str]  # PASSWORD when ide_password
    user: str  # uid:gid, never root
    cpus: float
    memory_bytes: int
    pids: int
    labels: Mapping[str, str]
    home_volume: str
    port: int  # the IDE's port inside its instance (WORKSPACE_CONTAINER_PORT)
    home_path: str = HOME
    disk_quota: int = 0  # bytes the home may hold (0: unlimited); enforced by the backend (quota.py)
    # What the backend recorded in the document in earlier runs (Run.record):
    # Docker direct mode's host `port`, Swarm's `node`.
    placement: Mapping[str, Any] = field(default_factory=dict)

    @property
    def legacy_volume(self) -> str:
        """The files-only volume of earlier versions, still mounted at
        ~/project where it exists, so nobody's files vanish."""
        return f"{self.name}-project"


def instance_name(settings: Settings, owner_id: int) -> str:
    return f"{settings.instance_name}-ws-{owner_id}"


def labels(settings: Settings, workspace_id: str, owner_id: int) -> dict[str, str]:
    """What every instance (and its volume) carries: reconciliation and
    cleanup find them by `apranova.instance`."""
    return {"apranova.managed": "true", "apranova.instance": settings.instance_name,
            "apranova.user_id": str(owner_id), "apranova.workspace_id": workspace_id}


def quota_of(doc: Mapping[str, Any], settings: Settings) -> int:
    """The workspace's disk quota in bytes (0: unlimited): WORKSPACE_DISK_QUOTA,
    or the higher one an admin gave it (a quota only grows: a file system
    is not shrunk under a student's files)."""
    return max(int(doc.get("disk_quota") or 0), settings.workspace_disk_quota)


def placement_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    found = dict(doc.get("placement") or {})
    if doc.get("port") is not None:
        found["port"] = doc["port"]
    return found


def build(settings: Settings, doc: Mapping[str, Any], password: str, exposed: bool) -> IdeSpec:
    """The spec of `doc`'s IDE. `exposed`: the backend's IDE is reachable by
    others than this server, so code-server keeps its password whatever
    WORKSPACE_IDE_PASSWORD says."""
    keep_password = exposed or ide_password_on(settings)
    name = instance_name(settings, doc["owner_id"])
    argv = settings.workspace_argv
    return IdeSpec(
        workspace_id=doc["_id"], owner_id=doc["owner_id"], name=name, image=settings.workspace_image,
        command=tuple(argv) if argv else None, ide_password=keep_password,
        environment={"PASSWORD": password} if keep_password else {}, user=settings.workspace_user,
        cpus=settings.workspace_cpus, memory_bytes=settings.workspace_memory_bytes, pids=settings.workspace_pids,
        labels=labels(settings, doc["_id"], doc["owner_id"]), home_volume=f"{name}-home",
        port=settings.workspace_container_port, placement=placement_of(doc), disk_quota=quota_of(doc, settings))
