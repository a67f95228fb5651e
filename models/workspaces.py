"""Workspace request/response shapes and the one place a stored workspace
document becomes a response or a WebSocket message. Stored times are
ISO-8601 Z text already (see services.workspaces.utcnow), so they pass as
they are."""
from __future__ import annotations

from typing import Optional

from models.base import RequestModel, ResponseModel
from services.workspaces.quota import disk_fields

CREATED_MSG = "Workspace created successfully."
EXISTS_MSG = "Workspace already exists."


class CreateWorkspaceIn(RequestModel):
    wait: bool = False  # wait (bounded) for running or failed, for curl users


class WorkspaceOut(ResponseModel):
    url: Optional[str]
    port: Optional[int]
    status: str
    state: str
    progress: int
    seq: int
    password: str
    message: str
    created_at: str
    updated_at: str
    # Additive: the median seconds of this server's recent successful
    # starts (null before the first), for "usually ready in about N s".
    estimate_seconds: Optional[float] = None
    run: Optional[int] = None  # the provisioning run (additive; events carry it too)
    run_started: Optional[str] = None  # when that run began (additive), for the elapsed time
    # Additive (disk quotas): the home's latest reading while on a quota, else null.
    disk_used_bytes: Optional[int] = None
    disk_size_bytes: Optional[int] = None


class WorkspaceCreatedOut(WorkspaceOut):
    msg: str


class WorkspaceDeletedOut(ResponseModel):
    message: str
    state: str


def workspace_model(doc: dict, address: tuple[Optional[str], Optional[int]], password: str,
                    msg: Optional[str] = None, estimate: Optional[float] = None) -> dict:
    url, port = address
    body = {"url": url, "port": port, "status": doc["state"], "state": doc["state"],
            "progress": doc["progress"], "seq": doc["seq"], "password": password,
            "message": doc["message"], "created_at": doc["created_at"], "updated_at": doc["updated_at"],
            "estimate_seconds": estimate, "run": doc.get("run", 1), "run_started": doc.get("provision_started"),
            **disk_fields(doc)}
    if msg is not None:
        body["msg"] = msg
    return body


def snapshot_message(doc: dict, address: tuple[Optional[str], Optional[int]], password: str,
                     estimate: Optional[float] = None) -> dict:
    url, port = address
    return {"type": "snapshot", "state": doc["state"], "progress": doc["progress"], "url": url,
            "port": port, "password": password, "seq": doc["seq"], "message": doc["message"],
            "at": doc["updated_at"], "run": doc.get("run", 1), "estimate_seconds": estimate,
            "run_started": doc.get("provision_started"), **disk_fields(doc),
            **{key: value for key, value in (doc.get("note") or {}).items() if key in STUDENT_NOTE_KEYS}}


# The keys of an event's note a student's socket carries; anything else
# (an operator's ``detail``) stays in the event log, the admin API and the
# server log.
STUDENT_NOTE_KEYS = ("kind", "reason", "stop_at", "step", "internal", "disk_used", "disk_size")


def event_message(event: dict) -> dict:
    message = {"type": "event", "seq": event["seq"], "state": event["state"], "progress": event["progress"],
               "message": event["message"], "at": event["at"], "run": event.get("run", 1)}
    message.update({key: event[key] for key in STUDENT_NOTE_KEYS if key in event})
    return message
