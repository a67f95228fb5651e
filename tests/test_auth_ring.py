"""The auth-state change feed (services/authring.py) as a fixed ring read
by equality: two AuthState instances on one real nx-27017 database stand for
two server processes. Its cost does not grow with history: the ring never
holds more than RING_SIZE documents, and a poll sends no range query or
sort (nx-27017 scans the whole collection for a range on `_id`)."""
from __future__ import annotations

import uuid

import pytest
from pymongo import AsyncMongoClient, monitoring

from services import authring, authstate as authstate_mod
from services.authstate import AuthState, SessionState


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(dict(event.command))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
async def two(mongo, monkeypatch):
    """(writer, reader, commands the reader sent, database), ring of 8."""
    monkeypatch.setattr(authring, "RING_SIZE", 8)
    commands = Commands()
    name = f"ring_{uuid.uuid4().hex[:8]}"
    client = AsyncMongoClient(mongo.uri, tz_aware=True, retryWrites=False)
    watched = AsyncMongoClient(mongo.uri, tz_aware=True, retryWrites=False, event_listeners=[commands])
    writer, reader = AuthState(client[name], 100), AuthState(watched[name], 100)
    reader.floor = await reader.ring.head()
    yield writer, reader, commands, client[name]
    await client.drop_database(name)
    await client.close()
    await watched.close()


async def test_another_processes_change_is_applied_with_equality_reads_only(two):
    writer, reader, commands, db = two
    reader.sessions.entries["s1"] = (1e12, SessionState(1, False, None))
    reader.users.entries[2] = (1e12, {"_id": 2})
    await writer.session_changed("s1")
    await writer.user_changed(2)
    commands.sent.clear()
    await reader.poll()
    assert "s1" not in reader.sessions.entries and 2 not in reader.users.entries
    assert reader.floor == 2
    finds = [c for c in commands.sent if "find" in c]
    assert finds, commands.sent
    for command in finds:
        assert "sort" not in command, command
        text = repr(command.get("filter"))
        assert "$gt" not in text and "$lt" not in text, command  # equality and $in only


async def test_the_ring_never_holds_more_than_its_slots(two):
    writer, reader, _, db = two
    for n in range(30):
        await writer.session_changed(f"s{n}")
    assert await db.auth_change_ring.count_documents({}) == 8
    assert sorted([doc["seq"] async for doc in db.auth_change_ring.find({})]) == list(range(23, 31))


async def test_a_reader_too_far_behind_drops_its_whole_cache(two):
    writer, reader, _, _ = two
    reader.sessions.entries["untouched"] = (1e12, SessionState(1, False, None))
    reader.users.entries[7] = (1e12, {"_id": 7})
    for n in range(9):  # one more than the ring holds
        await writer.session_changed(f"other{n}")
    await reader.poll()
    assert not reader.sessions.entries and not reader.users.entries
    assert reader.floor == 9
    await writer.user_changed(3)  # and it follows the ring again from there
    reader.users.entries[7] = (1e12, {"_id": 7})
    await reader.poll()
    assert 7 in reader.users.entries and reader.floor == 10


async def test_a_slot_overwritten_before_it_was_read_drops_everything(two):
    writer, reader, _, db = two
    await db.counters.update_one({"_id": "auth_changes"}, {"$inc": {"seq": 1}}, upsert=True)
    await writer.ring.write(9, {"session_id": "newer"})  # seq 1's slot, taken by 9 (1 never landed)
    reader.users.entries[7] = (1e12, {"_id": 7})
    await reader.poll()
    assert not reader.users.entries and reader.floor == 1


async def test_a_late_writer_does_not_overwrite_a_newer_slot(two):
    writer, _, _, db = two
    await writer.ring.write(9, {"session_id": "newer"})
    await writer.ring.write(1, {"session_id": "older"})  # the same slot, lower number: kept out
    slot = await db.auth_change_ring.find_one({"_id": 1})
    assert (slot["seq"], slot["session_id"]) == (9, "newer")
    await writer.ring.write(17, {"user_id": 4})  # a newer one replaces the whole document
    assert await db.auth_change_ring.find_one({"_id": 1}) == {"_id": 1, "seq": 17, "user_id": 4}


async def test_a_change_that_never_lands_drops_everything_after_the_grace(two, monkeypatch):
    writer, reader, _, db = two
    await db.counters.update_one({"_id": "auth_changes"}, {"$inc": {"seq": 1}}, upsert=True)  # its writer died
    reader.users.entries[7] = (1e12, {"_id": 7})
    await reader.poll()
    assert reader.floor == 0 and 7 in reader.users.entries  # waiting for it
    monkeypatch.setattr(authstate_mod, "GAP_GIVE_UP", 0.0)
    await reader.poll()
    assert reader.floor == 1 and not reader.users.entries
