"""The auth-state change feed's storage (services/authstate.py): a fixed
ring of RING_SIZE documents in ``auth_change_ring``, read by primary key.

A change takes the next sequence number from ``counters`` (the head) and is
stored in slot ``seq % RING_SIZE``. A reader reads the head (one document by
primary key) and, when it moved, the slots it has not seen (``$in`` on the
primary key). Every read is by equality, so it costs the same after 1 or
1,000,000 changes (nx-27017 answers a ``$gt`` range on ``_id`` by scanning
the whole collection: 98 ms at 20,000 entries, measured), and the ring
never grows, so there is nothing to trim. nx-27017 0.8 has change streams,
but a standalone MongoDB (MONGODB_URI) has none; equality reads work on both.
"""
from __future__ import annotations

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

RING_SIZE = 1024  # slots: far more changes than a poll interval sees
HEAD = {"_id": "auth_changes"}  # the newest sequence number, in `counters`
NOT_YET = 0  # read() for a slot that holds an older change: its writer is between the counter and the slot


class ChangeRing:
    def __init__(self, db: AsyncDatabase):
        self.counters, self.slots = db.counters, db.auth_change_ring

    async def head(self) -> int:
        doc = await self.counters.find_one(HEAD, {"seq": 1})
        return int(doc["seq"]) if doc else 0

    async def append(self, change: dict) -> int:
        counter = await self.counters.find_one_and_update(
            HEAD, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
        seq = int(counter["seq"])
        await self.write(seq, change)
        return seq

    async def write(self, seq: int, change: dict) -> None:
        """Store change `seq` in its slot, unless a newer one (seq + k *
        RING_SIZE, a writer that overtook this one) is there already: then
        readers that missed `seq` find the newer one and drop everything."""
        slot = seq % RING_SIZE
        try:
            await self.slots.replace_one({"_id": slot, "seq": {"$lt": seq}}, {"_id": slot, "seq": seq, **change},
                                         upsert=True)
        except DuplicateKeyError:
            pass  # the slot holds a newer change (the filter missed, the upsert's insert collided)

    async def read(self, seqs: list[int]) -> dict[int, tuple[int, dict]]:
        """seq -> (the sequence number its slot holds, that change): equal
        when it is there, NOT_YET or lower when it has not landed, higher
        when it was overwritten before this read."""
        found = {doc["_id"]: doc async for doc in self.slots.find({"_id": {"$in": [s % RING_SIZE for s in seqs]}})}
        result = {}
        for seq in seqs:
            change = dict(found.get(seq % RING_SIZE) or {"seq": NOT_YET})
            change.pop("_id", None)
            result[seq] = (int(change.pop("seq", NOT_YET)), change)
        return result
