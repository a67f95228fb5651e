"""The deployment's identity: one id per database, carried as a label on
everything the workspace backend makes.

INSTANCE_NAME alone cannot tell two installations apart: a second clone, or
a staging server beside production, runs under the same default name on the
same engine, and each took the other's workspaces for orphans of its own.
The id lives in the database, so every process of one deployment
(`--workers`, or several hosts on one database) shares it, and an
installation with a database of its own has another.
"""
from __future__ import annotations

import datetime as dt
import uuid

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.settings import Settings
from services.workspaces.backend import BackendRefused

KEY = {"_id": "deployment"}  # its document in the `meta` collection


async def deployment_id(db: AsyncDatabase) -> str:
    """This deployment's id, made by the first process that asks (a
    simultaneous first ask by another process finds the same one: the
    insert of one of them fails on the unique _id). An insert, not an
    upsert with $setOnInsert: the embedded nx-27017 leaves those fields out."""
    for _ in range(5):
        doc = await db.meta.find_one(KEY)
        if doc is not None and doc.get("id"):
            return doc["id"]
        try:
            await db.meta.insert_one({**KEY, "id": uuid.uuid4().hex[:16],
                                      "created_at": dt.datetime.now(dt.timezone.utc)})
        except DuplicateKeyError:
            continue  # another process made it a moment ago
    raise RuntimeError("the deployment's id could not be read from the database")


def refusal(settings: Settings, others: list[str], count: int) -> str:
    """The one line a server refusing to start prints when `count`
    workspaces of other deployments (`others`) carry its INSTANCE_NAME."""
    return (f"INSTANCE_NAME {settings.instance_name!r} is already used on this Docker host by another ApraNova "
            f"deployment ({count} workspace container(s) of deployment {', '.join(others)}), which this one would "
            "disturb: give this installation its own INSTANCE_NAME, or set WORKSPACE_TAKE_OVER=true if it is to "
            "take those workspaces over")


class Ownership:
    """Which engine objects are a deployment's, by their labels: its
    INSTANCE_NAME and its id. Objects without an id (made before ids
    existed, when INSTANCE_NAME was the identity) are its own too; with
    `take_over`, so are other deployments' under its INSTANCE_NAME."""

    def __init__(self, instance: str, deployment: str = "", take_over: bool = False):
        self.instance, self.deployment, self.take_over = instance, deployment, take_over

    def labels(self) -> dict[str, str]:
        """What everything made carries."""
        return {"apranova.instance": self.instance, **({"apranova.deployment": self.deployment}
                                                      if self.deployment else {})}

    @staticmethod
    def deployment_of(found: dict) -> str:
        """The id label of an inspect or list answer ("" when it has none)."""
        labels = (found.get("Config") or {}).get("Labels") or found.get("Labels") or {}
        return labels.get("apranova.deployment", "")

    def mine(self, found: dict) -> bool:
        other = self.deployment_of(found)
        return self.take_over or not other or not self.deployment or other == self.deployment

    def foreign(self, found: list[dict]) -> dict[str, int]:
        """Of `found`, the others' objects counted by deployment id."""
        counts: dict[str, int] = {}
        for item in found:
            if not self.mine(item):
                counts[self.deployment_of(item)] = counts.get(self.deployment_of(item), 0) + 1
        return counts

    def refuse_foreign(self, found: dict | None, what: str) -> None:
        """Raise BackendRefused when `found` (an inspect answer, or None) is
        another deployment's: two installations under one INSTANCE_NAME
        give the same names to their users' containers and volumes."""
        if found is not None and not self.mine(found):
            raise BackendRefused(f"{what} belongs to another ApraNova deployment ({self.deployment_of(found)}) under "
                                 f"INSTANCE_NAME {self.instance!r}; give this installation its own INSTANCE_NAME.")
