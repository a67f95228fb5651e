"""What registration records about a new student beyond the account:
privacy and marketing consent (with version and time), and the trainer of
the student's track.

Rules, each in one place:

* `consent_record`: what a sign-up's consent fields become; nothing when the
  client sent none (the contract's own body has none).
* `TrainerAssignments.assign`: the trainer of the student's track with the
  fewest students, ties by the oldest account; none when the track has no trainer.
  Two sign-ups at the same instant may both pick the same trainer: the
  balance is best effort, never a correctness rule.
* `trainer_students_filter`: who a trainer's students are, the one rule behind
  both lists (GET /api/users/my-students/ and GET /api/trainer/students/):
  the students assigned to them, plus the students of their track that have
  no trainer (signed up before the track had one), so that nobody falls
  between trainers. A student's `trainer_id` says which of the two it is.
  Deleted students are never listed.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from models.enrollment import enrollment_of
from services.db import CREATION_ORDER
from services.errors import Forbidden

NOT_DELETED = {"deleted_at": {"$exists": False}}
CONSENT_FIELDS = frozenset({"privacy_accepted", "privacy_version", "marketing_consent"})


def consent_record(now: dt.datetime, privacy_accepted: bool | None = None, privacy_version: str | None = None,
                   marketing_consent: bool | None = None) -> dict | None:
    """The consent a sign-up gave, as stored on the user; a refusal is
    recorded as such (with its time), an absent field as absent."""
    if privacy_accepted is None and privacy_version is None and marketing_consent is None:
        return None
    record: dict = {"recorded_at": now}
    if privacy_accepted is not None:
        record.update(privacy_accepted=privacy_accepted, privacy_accepted_at=now if privacy_accepted else None)
    if privacy_version is not None:
        record["privacy_version"] = privacy_version
    if marketing_consent is not None:
        record.update(marketing_consent=marketing_consent, marketing_consent_at=now)
    return record


def trainer_model(trainer: dict) -> dict:
    return {"id": trainer["_id"], "name": trainer["name"], "email": trainer["email"]}


def student_model(student: dict) -> dict:
    return {"id": student["_id"], "name": student["name"], "email": student["email"], "track": student.get("track"),
            "enrollment_status": enrollment_of(student)}


def trainer_students_filter(trainer: dict) -> dict:
    """The database filter of `trainer`'s students (see the module's rules)."""
    mine: list[dict] = [{"trainer_id": trainer["_id"]}]
    if trainer.get("track"):
        mine.append({"track": trainer["track"], "trainer_id": None})  # None: absent or null
    return {"role": "student", **NOT_DELETED, "$or": mine}


class TrainerAssignments:
    def __init__(self, db: AsyncDatabase, accounts: Any):
        self.users = db.users
        self.accounts = accounts  # writes go through it (the auth-state cache must hear of them)

    async def assign(self, student: dict) -> dict | None:
        """Give a new student the least loaded trainer of their track; returns
        that trainer (None: not a student, no track, or no trainer for it)."""
        if student.get("role") != "student" or not student.get("track"):
            return None
        trainers = self.users.find({"role": "trainer", "track": student["track"], "disabled": {"$ne": True}},
                                   {"name": 1, "email": 1}).sort(CREATION_ORDER)
        best: tuple[int, dict] | None = None
        async for trainer in trainers:
            load = await self.users.count_documents({"role": "student", "trainer_id": trainer["_id"]})
            if best is None or load < best[0]:  # oldest first: a tie keeps the older trainer
                best = (load, trainer)
        if best is None:
            return None
        await self.accounts.set_fields(student["_id"], {"trainer_id": best[1]["_id"]})
        student["trainer_id"] = best[1]["_id"]
        return best[1]

    async def trainer_of(self, user: dict) -> dict | None:
        if user.get("trainer_id") is None:
            return None
        return await self.users.find_one({"_id": user["trainer_id"], "role": "trainer"}, {"name": 1, "email": 1})

    async def students_of(self, trainer: dict) -> list[dict]:
        """A trainer's students (trainer_students_filter), oldest first. Only trainers have students."""
        if trainer.get("role") != "trainer":
            raise Forbidden("Only trainers have students.")
        cursor = self.users.find(trainer_students_filter(trainer),
                                 {"name": 1, "email": 1, "track": 1, "enrollment_status": 1}).sort(CREATION_ORDER)
        return [student_model(student) async for student in cursor]


async def start(services) -> None:
    services.students = TrainerAssignments(services.db, services.accounts)
