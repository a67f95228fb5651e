"""Start-up migration of stored enrolment values to the original platform's
vocabulary (models/enrollment.py). Idempotent: a second run matches nothing,
and several processes starting at once write the same values."""
from __future__ import annotations

import logging

from pymongo.asynchronous.database import AsyncDatabase

from models.enrollment import ENROLLMENT_STATUSES, enrollment_of

log = logging.getLogger("apranova.accounts")


async def migrate_enrollment(db: AsyncDatabase) -> int:
    """Rewrite every value outside the vocabulary (`NOT_ENROLLED`, missing):
    a verified payment means `ENROLLED`, anything else `PENDING_PAYMENT`.
    Returns how many users changed. Caches of other running processes see
    the change when they next reread the user (within 60 s).

    One compare-and-set per user on the value read (an enrolment paid in
    between is never overwritten); not one update_many, because nx-27017
    matches but does not modify documents with a `$nin` filter once the
    collection has indexes."""
    outside = {"enrollment_status": {"$nin": list(ENROLLMENT_STATUSES)}}
    changed = 0
    async for user in db.users.find(outside, {"enrollment_status": 1, "payment_verified": 1}):
        stored = user.get("enrollment_status")
        guard = {"$exists": False} if "enrollment_status" not in user else stored
        result = await db.users.update_one({"_id": user["_id"], "enrollment_status": guard},
                                           {"$set": {"enrollment_status": enrollment_of(user)}})
        changed += result.modified_count
    if changed:
        log.info("enrolment status of %d users migrated to the original vocabulary", changed)
    return changed
