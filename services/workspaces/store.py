"""The workspace documents and their event log, as stored; no rules here
beyond "a write applies only to the version it read".

A document per user (unique index on ``owner_id``, and on ``port`` for the
direct mode's host ports). Every change bumps ``version`` (compare-and-set)
and ``seq``, and appends the event ``{workspace_id, seq, state, progress,
message, at}`` to ``workspace_events``: a client that saw event `seq` asks
for the ones after it.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
from typing import Any, Iterable

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

log = logging.getLogger("apranova.workspaces")


def utcnow() -> str:
    """Now as ISO-8601 Z text with milliseconds (events are often that
    close together). Stored as text because nx-27017 turns datetimes written
    by ``$set`` into naive strings (a measured gap)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_of(doc: dict) -> dict:
    """The event a document's latest change produced: the state fields, the
    provisioning run it belongs to, and the change's ``note`` (see
    ``Lifecycle.change``) merged in."""
    event = {"workspace_id": doc["_id"], "seq": doc["seq"], "state": doc["state"], "progress": doc["progress"],
             "message": doc["message"], "at": doc["updated_at"], "run": doc.get("run", 1)}
    event.update(doc.get("note") or {})
    return event


class WorkspaceStore:
    def __init__(self, db: AsyncDatabase):
        self.workspaces = db.workspaces
        self.events = db.workspace_events

    async def get(self, workspace_id: str) -> dict | None:
        return await self.workspaces.find_one({"_id": workspace_id})

    async def of_owner(self, owner_id: int) -> dict | None:
        return await self.workspaces.find_one({"owner_id": owner_id})

    async def all(self) -> list[dict]:
        return [doc async for doc in self.workspaces.find({})]

    async def seqs(self, workspace_ids: list[str]) -> dict[str, int]:
        """The current seq of each workspace, in batches of 500."""
        found: dict[str, int] = {}
        for start in range(0, len(workspace_ids), 500):
            async for doc in self.workspaces.find({"_id": {"$in": workspace_ids[start:start + 500]}}, {"seq": 1}):
                found[doc["_id"]] = doc["seq"]
        return found

    async def running(self) -> list[dict]:
        return [doc async for doc in self.workspaces.find({"state": "running"})]

    async def note_activity(self, workspace_id: str, at: str) -> dict | None:
        """Move a running workspace's ``last_activity`` forward to `at`,
        without a new version (see culler.py); the document as it was before."""
        return await self.workspaces.find_one_and_update(
            {"_id": workspace_id, "state": "running"}, {"$max": {"last_activity": at}}, {"note": 1})

    async def note_disk(self, workspace_id: str, reading: dict) -> None:
        """The latest disk reading (quota.py), without a new version (bookkeeping)."""
        await self.workspaces.update_one({"_id": workspace_id}, {"$set": {"disk": reading}})

    async def disk_readings(self) -> list[tuple[int, int, int]]:
        """(owner id, used, size) of every workspace with a disk reading, not deleted."""
        return [(d["owner_id"], d["disk"]["used"], d["disk"]["size"]) async for d in self.workspaces.find(
            {"disk": {"$exists": True}, "state": {"$ne": "deleted"}}, {"owner_id": 1, "disk": 1})]

    async def set_disk_quota(self, owner_id: int, quota: int) -> dict | None:
        """An admin's quota for one student's workspace (applied at its next
        start); the document after, None when the user has none."""
        return await self.workspaces.find_one_and_update({"owner_id": owner_id}, {"$set": {"disk_quota": quota}},
                                                         return_document=True)

    async def count_by_state(self, states: Iterable[str]) -> dict[str, int]:
        counts = {state: 0 for state in states}
        async for doc in self.workspaces.find({}, {"state": 1}):
            counts[doc["state"]] = counts.get(doc["state"], 0) + 1
        return counts

    async def ports_in(self, low: int, high: int) -> set[int]:
        return {d["port"] async for d in self.workspaces.find({"port": {"$gte": low, "$lte": high}}, {"port": 1})}

    async def longest_settled(self, states: list[str], low: int, high: int, exclude: str) -> list[dict]:
        """Up to five workspaces in `states` holding a port in [low, high],
        the longest unchanged first."""
        query = {"state": {"$in": states}, "port": {"$gte": low, "$lte": high}, "_id": {"$ne": exclude}}
        return [doc async for doc in self.workspaces.find(query).sort("updated_at", 1).limit(5)]

    async def insert(self, doc: dict) -> bool:
        """False when the owner already has a document (the caller logs the
        first event)."""
        try:
            await self.workspaces.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def compare_and_set(self, doc: dict, changes: dict[str, Any], unset: Iterable[str] = (),
                              event: bool = True) -> dict | None:
        """Apply `changes` (plus the next version, and with `event` the next
        seq) only if the stored version is still `doc`'s (the caller logs
        the event: see Lifecycle.change). The new document, or None when
        someone else changed it first. Raises
        DuplicateKeyError when a unique field (``port``) is taken."""
        changes = {"version": doc["version"] + 1, **({"seq": doc["seq"] + 1} if event else {}), **changes}
        update: dict[str, Any] = {"$set": changes}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        result = await self.workspaces.update_one({"_id": doc["_id"], "version": doc["version"]}, update)
        if result.modified_count != 1:
            return None
        new = {**doc, **changes}
        for name in unset:
            new.pop(name, None)
        return new

    async def log(self, event: dict) -> None:
        try:
            await self.events.insert_one(dict(event))
        except DuplicateKeyError:  # pragma: no cover - seq comes from a won compare-and-set
            log.warning("event %s/%d already logged", event["workspace_id"], event["seq"])

    async def events_after(self, workspace_id: str, after: int, upto: int | None = None) -> list[dict]:
        query: dict[str, Any] = {"workspace_id": workspace_id, "seq": {"$gt": after}}
        if upto is not None:
            query["seq"]["$lte"] = upto
        return [event async for event in self.events.find(query, {"_id": 0}).sort("seq", 1)]


def ide_password(key: bytes, doc: dict) -> str:
    """The IDE's password (code-server's own lock, shown to the owner):
    derived from the server's key and the workspace's random salt, so that
    the database holds no usable password. Documents from before the salt
    kept theirs in clear under `password`."""
    if "password_salt" not in doc:
        return doc["password"]
    mac = hmac.new(key, f"{doc['_id']}:{doc['password_salt']}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()
