"""The settings only the Docker engine backends read (Swarm reuses them:
DOCKER_HOST names its manager). Declared by the backend class
(`DockerBackend.SETTINGS`), so they are parsed once with the others and
listed in --help and the README's table (services/settings.py)."""
from __future__ import annotations


from services.settings import Setting

G = "workspaces: docker"
SETTINGS = [
    Setting("DOCKER_HOST", "", "Docker Engine address, as the docker CLI reads it (empty: unix:///var/run/docker.sock); "
            "with WORKSPACE_BACKEND=swarm, a manager of the swarm.", group=G),
    Setting("WORKSPACE_HOST_IP", "127.0.0.1", "Host address the IDE port is published on (WORKSPACE_EXPOSURE=direct).",
            group=G),
    Setting("WORKSPACE_PORT_RANGE", "8081-9999", "Host ports given to workspaces (first-last; WORKSPACE_EXPOSURE=direct).",
            group=G),
    Setting("WORKSPACE_NETWORK", "", "Docker network for workspaces (empty: the default bridge; with "
            "WORKSPACE_EXPOSURE=network, '<INSTANCE_NAME>-workspaces', made by the server).", group=G),
    Setting("WORKSPACE_READY_HOST", "", "Host the server reaches a published IDE port at (empty: WORKSPACE_HOST_IP, or "
            "127.0.0.1 when that is 0.0.0.0).", group=G),
    # where WORKSPACE_DISK_QUOTA's images live, and what makes them (docker/disk.py)
    Setting("WORKSPACE_DISK_DIR", "", "Directory on the Docker host holding the homes' disk images (empty: "
            "<Docker root dir>/apranova-disks/<INSTANCE_NAME>, the file system of Docker's own volumes).", group=G),
    Setting("WORKSPACE_DISK_TOOLS_IMAGE", "", "Image the disk helper runs (needs sh, truncate, stat, df, mkfs.ext4, "
            "e2fsck, resize2fs, losetup, flock; empty: WORKSPACE_IMAGE, which has them).", group=G),
]

