"""The MongoDB features our data layer relies on, pinned against the
MongoDB-wire server we ship as the default (nx-27017). Real MongoDB honours
all of these; if an nx-27017 upgrade breaks one, this file says which."""
import asyncio
import datetime as dt
import uuid

import pytest
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.db import INDEXES, connect, ensure_indexes


@pytest.fixture
async def db(mongo):
    client, database = connect(mongo.uri, f"conf_{uuid.uuid4().hex[:8]}")
    await ensure_indexes(database)
    yield database
    await client.drop_database(database.name)
    await client.close()


async def test_unique_index_rejects_duplicates(db):
    await db.users.insert_one({"_id": 1, "email_key": "a@example.com"})
    with pytest.raises(DuplicateKeyError):
        await db.users.insert_one({"_id": 2, "email_key": "a@example.com"})


async def test_sparse_unique_index_allows_many_missing(db):
    await db.workspaces.insert_one({"owner_id": 1})
    await db.workspaces.insert_one({"owner_id": 2})  # neither has a port yet
    await db.workspaces.update_one({"owner_id": 1}, {"$set": {"port": 8081}})
    with pytest.raises(DuplicateKeyError):
        await db.workspaces.update_one({"owner_id": 2}, {"$set": {"port": 8081}})


async def test_compound_unique_index(db):
    await db.oauth_identities.insert_one({"provider": "google", "subject": "1", "user_id": 1})
    await db.oauth_identities.insert_one({"provider": "github", "subject": "1", "user_id": 1})
    with pytest.raises(DuplicateKeyError):
        await db.oauth_identities.insert_one({"provider": "google", "subject": "1", "user_id": 2})


async def test_counter_with_inc_upsert_is_sequential_under_concurrency(db):
    async def next_id():
        doc = await db.counters.find_one_and_update({"_id": "users"}, {"$inc": {"seq": 1}}, upsert=True,
                                                    return_document=ReturnDocument.AFTER)
        return doc["seq"]

    ids = await asyncio.gather(*[next_id() for _ in range(40)])
    assert sorted(ids) == list(range(1, 41))


async def test_compare_and_set_on_version_lets_exactly_one_writer_win(db):
    await db.workspaces.insert_one({"_id": "w", "owner_id": 9, "version": 0, "state": "stopped"})
    results = await asyncio.gather(*[
        db.workspaces.update_one({"_id": "w", "version": 0}, {"$set": {"state": f"s{i}"}, "$inc": {"version": 1}})
        for i in range(20)])
    assert sum(r.modified_count for r in results) == 1
    assert (await db.workspaces.find_one({"_id": "w"}))["version"] == 1


async def test_timezone_aware_datetimes_round_trip(db):
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=123000)
    await db.sessions.insert_one({"_id": "s", "expires_at": now})
    stored = (await db.sessions.find_one({"_id": "s"}))["expires_at"]
    assert stored.tzinfo is not None and stored == now


async def test_range_query_sort_and_limit(db):
    await db.workspace_events.insert_many([{"workspace_id": "w", "seq": i} for i in range(1, 11)])
    after = [d["seq"] async for d in db.workspace_events.find({"workspace_id": "w", "seq": {"$gt": 7}}).sort("seq", 1)]
    assert after == [8, 9, 10]
    last = [d["seq"] async for d in db.workspace_events.find({"workspace_id": "w"}).sort("seq", -1).limit(1)]
    assert last == [10]
    assert await db.workspace_events.count_documents({"workspace_id": "w", "seq": {"$lte": 3}}) == 3


async def test_projection_excludes_fields(db):
    await db.users.insert_one({"_id": 5, "email_key": "p@example.com", "password_hash": "x"})
    doc = await db.users.find_one({"_id": 5}, {"password_hash": 0})
    assert "password_hash" not in doc and doc["email_key"] == "p@example.com"


async def test_every_declared_index_exists(db):
    """Fields and uniqueness, not direction: nx-27017 reports a descending key
    as ascending (a measured gap; harmless for our queries)."""
    for collection, indexes in INDEXES.items():
        info = await db[collection].index_information()
        declared = {(tuple(name for name, _ in index.document["key"].items()), bool(index.document.get("unique")))
                    for index in indexes}
        present = {(tuple(name for name, _ in spec["key"]), bool(spec.get("unique"))) for spec in info.values()}
        assert declared <= present, collection


async def test_known_gap_set_on_insert_is_not_relied_upon(db):
    """nx-27017 drops $setOnInsert in find_one_and_update(upsert=True); our
    code never uses it. This pins the gap so that a fix upstream is noticed."""
    doc = await db.counters.find_one_and_update({"_id": "gap"}, {"$setOnInsert": {"a": 1}, "$inc": {"n": 1}},
                                                upsert=True, return_document=ReturnDocument.AFTER)
    assert doc["n"] == 1
    if "a" in doc:  # pragma: no cover - real MongoDB, or a fixed nx-27017
        assert doc["a"] == 1


async def test_current_date_stamps_a_real_datetime(db):
    """"Now" stamps in updates use $currentDate: it stores a datetime that
    reads back as one. (Measured gap: nx-27017 does not match such a value
    in a range query; no query of ours filters or sorts on a stamped field,
    only on inserted ones such as `created_at`.)"""
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    await db.users.insert_one({"_id": 7, "email_key": "stamp@example.com"})
    await db.users.update_one({"_id": 7}, {"$currentDate": {"updated_at": True}})
    stamped = (await db.users.find_one({"_id": 7}))["updated_at"]
    assert isinstance(stamped, dt.datetime) and abs(stamped - before) < dt.timedelta(minutes=1)
    await db.users.insert_one({"_id": 8, "email_key": "inserted@example.com", "created_at": stamped})
    assert await db.users.count_documents({"created_at": {"$gt": before}}) == 1


async def test_known_gap_datetime_in_set_is_only_used_for_ttl(db):
    """nx-27017 stores a datetime given to $set in an update as a string.
    Our code $sets datetimes only into `expires_at` fields that exist for
    MongoDB's TTL index (nx-27017 has no TTL reaper, so there they are
    inert); every value it reads back is stamped with $currentDate or
    written by insert. This pins the gap so that a fix upstream is noticed."""
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    await db.sessions.insert_one({"_id": "gap"})
    await db.sessions.update_one({"_id": "gap"}, {"$set": {"expires_at": when}})
    stored = (await db.sessions.find_one({"_id": "gap"}))["expires_at"]
    if isinstance(stored, str):  # nx-27017 today
        assert stored.startswith("2030-01-02")
    else:  # pragma: no cover - real MongoDB, or a fixed nx-27017
        assert stored == when
