"""The settings only the Swarm backend reads (it also reads the Docker
backend's: DOCKER_HOST names a manager)."""
from __future__ import annotations

import shlex

from services.setting_parsers import csv_list, number
from services.settings import Setting


def key_values(value: str) -> dict[str, str]:
    """Shell words of key=value (a value may hold commas and '=': NFS's o=addr=10.0.0.5,rw)."""
    found = {}
    for word in shlex.split(value):
        key, sep, item = word.partition("=")
        if not sep or not key:
            raise ValueError(f"must be key=value words, not {word!r}")
        found[key] = item
    return found

G = "workspaces: swarm"
SETTINGS = [
    Setting("SWARM_VOLUME_DRIVER", "", "Volume driver of the workspaces' home volumes (e.g. an NFS or other shared "
            "driver every node has). Empty: Docker's local driver, so each home lives on one node and its workspace "
            "is pinned there (the constraint is recorded in the workspace).", group=G),
    Setting("SWARM_VOLUME_OPTIONS", "", "Options of SWARM_VOLUME_DRIVER as key=value words (e.g. 'type=nfs "
            "o=addr=10.0.0.5,rw device=:/export/homes').", key_values, group=G),
    Setting("SWARM_CONSTRAINTS", "", "Comma-separated placement constraints every workspace service gets (e.g. "
            "node.labels.apranova==workspaces), besides its home's node.", csv_list, group=G),
    Setting("SWARM_STOP_GRACE", "2", "Seconds a workspace task gets between SIGTERM and SIGKILL on a stop (with "
            "tini as PID 1 the IDE exits at once; Docker's own default waits 10 s).", number, group=G),
]
