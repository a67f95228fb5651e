"""The workspace state machine: one table of transitions, and one
compare-and-set function through which every change of a workspace goes.

A deleted workspace keeps its document (state ``deleted``, no port) so its
event log and ``seq`` continue if it is created again.
"""
from __future__ import annotations

import secrets
import uuid
from enum import StrEnum
from typing import Any, Callable, Iterable

from services.errors import Conflict
from services.workspaces.events import Events
from services.workspaces.store import WorkspaceStore, event_of, utcnow


class State(StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


P, R, SG, S, F, DG, D = (State.PROVISIONING, State.RUNNING, State.STOPPING, State.STOPPED, State.FAILED,
                         State.DELETING, State.DELETED)
SETTLED = frozenset({R, F, S, D})  # where a provisioning run ends: a waiting create returns
ALIVE = frozenset(State) - {D}

# action -> (new state, or None for "unchanged"; the states it may happen in).
TRANSITIONS: dict[str, tuple[State | None, frozenset[State]]] = {
    "provision": (P, frozenset({D, F, S})),  # create, or start again
    "step": (P, frozenset({P})),  # a provisioning run's progress (or taking it over after a restart)
    "ready": (R, frozenset({P})),  # the IDE answers
    "fail": (F, frozenset({P})),
    "stop": (SG, frozenset({P, R, F})),
    "stopped": (S, frozenset({SG})),
    "delete": (DG, ALIVE),
    "deleted": (D, frozenset({DG})),
    "died": (S, frozenset({R})),  # the container exited, or vanished, outside our calls
    "oom": (F, frozenset({R})),
    "lost": (F, frozenset({R})),  # the machine running it went away (a Swarm node down)
    "adopt": (None, frozenset({R})),  # record the running instance found by reconciliation
    "removed": (None, frozenset({S, F})),  # its stopped instance was removed outside
    "release_port": (None, frozenset({S, F})),  # its host port went to another workspace
    "warn": (None, frozenset({R})),  # an idle or lifetime stop is coming (culler.py)
    "keep": (None, frozenset({R})),  # the student keeps it running; clears a warning
}
# A (re)start and keeping it running count as activity (culler.py); proxied traffic is written apart.
ACTIVE = frozenset({"provision", "ready", "keep"})
ATTEMPTS = 20


class Superseded(Exception):
    """The workspace moved on (a stop, a delete, another run): whoever
    noticed it, a provisioning run most often, just ends."""


class Lifecycle:
    def __init__(self, store: WorkspaceStore, events: Events, worker: str):
        self.store, self.events, self.worker = store, events, worker

    async def change(self, doc: dict | str, action: str, message: str, *, progress: int | None = None,
                     monotonic: bool = False, fields: dict | None = None, unset: Iterable[str] = (),
                     when: Callable[[dict], bool] | None = None, silent: bool = False,
                     note: dict | None = None) -> dict | None:
        """Apply `action` to the workspace (a document as read, or its id),
        re-reading and retrying when another writer got there first. None
        when the action is not allowed in its state now (or `when` says no).
        `monotonic`: progress never goes below the stored one. `silent`:
        only `fields` change and no event is logged (bookkeeping such as the
        reserved port, which clients read from the document). `note`: extra
        fields of this change's event only (for example ``kind``, ``reason``,
        or an operator's ``detail``); kept on the document as ``note`` until
        the next evented change, so a snapshot shows it too. What a student
        may read of it is chosen in models.workspaces."""
        target, allowed = TRANSITIONS[action]
        current = doc if isinstance(doc, dict) else None
        workspace_id = doc["_id"] if isinstance(doc, dict) else doc
        for _ in range(ATTEMPTS):
            if current is None:
                current = await self.store.get(workspace_id)
            if current is None or current["state"] not in allowed or (when is not None and not when(current)):
                return None
            changes: dict[str, Any] = dict(fields or {})
            drop = tuple(unset)
            if not silent:
                changes.update(message=message, updated_at=utcnow())
                if action in ACTIVE:
                    changes["last_activity"] = changes["updated_at"]
                if note:
                    changes["note"] = dict(note)
                elif "note" in current:
                    drop += ("note",)
                if target is not None:
                    changes["state"] = target.value
                if progress is not None:
                    changes["progress"] = max(progress, current["progress"]) if monotonic else progress
            new = await self.store.compare_and_set(current, changes, drop, event=not silent)
            if new is not None:
                if not silent:
                    await self._announce(new)
                return new
            current = None
        raise Conflict("The workspace is changing; try again.")  # pragma: no cover

    async def _announce(self, doc: dict) -> None:
        """This process's followers get the change at once, then it is
        logged: a status socket is not kept waiting for the second database
        write (half of an event's delay under load). A follower that opens
        in between waits for the log to catch up (Events.subscribe)."""
        self.events.publish(doc)
        await self.store.log(event_of(doc))

    async def begin(self, owner_id: int, image: str) -> dict | None:
        """A new workspace, provisioning; None when the owner has one already."""
        now = utcnow()
        doc = {"_id": uuid.uuid4().hex, "owner_id": owner_id, "state": P.value, "progress": 0, "version": 1,
               "seq": 1, "message": "Workspace requested", "password_salt": secrets.token_urlsafe(12),
               "run": 1, "worker": self.worker, "provision_started": now, "container_id": None,
               "image": image, "created_at": now, "updated_at": now, "last_activity": now,
               "note": {"kind": "step", "step": "requested"}}
        if not await self.store.insert(doc):
            return None
        await self._announce(doc)
        return doc

    async def again(self, doc: dict) -> dict | None:
        """Provision a stopped, failed or deleted workspace again, as a new run."""
        fields: dict[str, Any] = {"run": doc.get("run", 0) + 1, "worker": self.worker,
                                  "provision_started": utcnow(), "container_id": None}
        unset: tuple[str, ...] = ("stop_reason", "stopped_at", "warned", "disk_level")  # disk_level: quota.py
        if doc["state"] == D:  # a new IDE password (and a stored one from before goes)
            fields.update(password_salt=secrets.token_urlsafe(12), created_at=utcnow())
            unset += ("password",)
        message = "Starting the workspace again" if doc["state"] == S else "Workspace requested"
        return await self.change(doc, "provision", message, progress=0, fields=fields, unset=unset,
                                 note={"kind": "step", "step": "requested"})
