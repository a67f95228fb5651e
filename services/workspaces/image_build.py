"""The workspace image being built on this server (./scripts/run starts
workspace-image/build-offline.sh behind the server on a first run): what
the build says of itself in WORKSPACE_IMAGE_BUILD_DIR/status/<image>.json,
written by scripts/workspace-host.sh:

    {"image": ..., "pid": ..., "started": <unix time>, "estimate_seconds": ..., "log": ...}

and, when it failed, {"image": ..., "failed": true, "log": ...}. A create
meanwhile waits for the image with honest progress instead of failing.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Build:
    started: float
    estimate: float
    failed: bool = False
    log: str = ""


def status_path(directory: str, image: str) -> Path:
    """Where the build of `image` says how it goes (the script names it alike)."""
    return Path(directory) / "status" / (re.sub(r"[^A-Za-z0-9_.-]", "_", image) + ".json")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # someone else's (root's) process: it exists
    except (OSError, ValueError):
        return False
    return True


def current(directory: str, image: str) -> Build | None:
    """The build of `image` under way or failed; None when there is none
    (no status, an unreadable one, or its process is gone)."""
    if not directory:
        return None
    try:
        status = json.loads(status_path(directory, image).read_text())
        if status.get("image") != image:
            return None
        if status.get("failed"):
            return Build(0, 0, True, str(status.get("log", "")))
        if not alive(int(status["pid"])):
            return None
        return Build(float(status["started"]), float(status.get("estimate_seconds") or 900), False,
                     str(status.get("log", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def words(seconds: float) -> str:
    """A duration as a person reads it, coarse enough not to flicker:
    "40 s" (tens of seconds), "3 min"."""
    seconds = max(0, int(seconds))
    return f"{max(10, seconds // 10 * 10)} s" if seconds < 90 else f"{round(seconds / 60)} min"
