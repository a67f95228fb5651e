"""The MongoDB features our data layer relies on, pinned against the
MongoDB-wire server we ship as the default (nx-27017). Real MongoDB honours
all of these; if an nx-27017 upgrade breaks one, this file says which."""
import asyncio
import datetime as dt
import uuid

import pytest
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.db import CREATION_ORDER, INDEXES, connect, ensure_indexes


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
    the TTL index (which nx-27017 honours for text too: see
    test_ttl_index_is_honoured_on_the_next_read); every other value it reads
    back is stamped with $currentDate or written by insert. This pins the
    gap so that a fix upstream is noticed."""
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    await db.sessions.insert_one({"_id": "gap"})
    await db.sessions.update_one({"_id": "gap"}, {"$set": {"expires_at": when}})
    stored = (await db.sessions.find_one({"_id": "gap"}))["expires_at"]
    if isinstance(stored, str):  # nx-27017 today
        assert stored.startswith("2030-01-02")
    else:  # pragma: no cover - real MongoDB, or a fixed nx-27017
        assert stored == when


async def test_ttl_index_is_honoured_on_the_next_read(db):
    """nx-27017 (0.8.1, neosqlite 1.17) has no background reaper, but every
    read or write of a collection with a TTL index first deletes its expired
    documents (two indexed range deletes), whether the date was inserted or
    $set (stored as text). So sessions, tickets, mail links and rate limits
    go without a sweep of ours; services/retention.py deletes them too,
    because a collection nobody reads keeps its dead (and MongoDB's reaper
    runs once a minute)."""
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    future = past + dt.timedelta(hours=1)
    await db.sessions.insert_many([{"_id": "inserted", "expires_at": past}, {"_id": "live", "expires_at": future},
                                   {"_id": "set"}])
    await db.sessions.update_one({"_id": "set"}, {"$set": {"expires_at": past}})
    assert [doc["_id"] async for doc in db.sessions.find({})] == ["live"]


def plan_of(explained: dict) -> str:
    return repr(explained["queryPlanner"]["winningPlan"])


def uses_index(plan: str) -> bool:
    return any(word in plan for word in ("USING INDEX", "IXSCAN", "IDHACK", "EXPRESS"))  # nx-27017, MongoDB


async def test_known_gap_a_range_on_id_scans_the_whole_collection(db):
    """nx-27017 answers a range on `_id` by reading every document (SQLite
    "SCAN"; measured: 5.6 ms at 1,000 documents, 98 ms at 20,000, and the
    index on `_id` does not help), while equality and $in on `_id`, and a
    range on another indexed field, use an index ("SEARCH ... USING
    INDEX"). So no hot or periodic path reads by a range on `_id`: the
    auth-state feed reads a ring by primary key (services/authstate.py)."""
    await db.workspace_events.insert_many([{"_id": n, "workspace_id": "w", "seq": n} for n in range(1, 13)])

    async def plan(query: dict) -> str:
        return plan_of(await db.command("explain", {"find": "workspace_events", "filter": query}))
    by_range = await plan({"_id": {"$gt": 5}})
    if "'SCAN workspace_events'" in by_range:  # nx-27017 today
        assert not uses_index(by_range)
    else:  # pragma: no cover - real MongoDB, or a fixed nx-27017
        assert uses_index(by_range)
    for indexed in ({"_id": 5}, {"_id": {"$in": [5, 6]}}, {"workspace_id": "w", "seq": {"$gt": 5}}):
        assert uses_index(await plan(indexed)), indexed  # (the last by the single-field index: see below)


async def test_known_gap_a_compound_index_is_never_read(db):
    """nx-27017 enforces a compound unique index but does not read by it: a
    query on its first field scans the collection. services/db.py gives
    such fields an index of their own (workspace events by workspace,
    payments by user, identities by subject)."""
    await db.compound.create_index([("a", 1), ("b", 1)])
    await db.compound.insert_one({"a": "x", "b": 1})
    explained = plan_of(await db.command("explain", {"find": "compound", "filter": {"a": "x", "b": {"$gt": 0}}}))
    if not uses_index(explained):  # nx-27017 today
        assert "'SCAN compound'" in explained
    for collection, query in (("workspace_events", {"workspace_id": "w"}), ("payments", {"user_id": 1}),
                              ("oauth_identities", {"provider": "google", "subject": "1"})):
        assert uses_index(plan_of(await db.command("explain", {"find": collection, "filter": query}))), collection


async def test_known_gap_an_integer_id_sorts_as_text(db):
    """nx-27017 sorts an integer `_id` as text (1, 10, 11, 2; the newest of
    1..1000 by sort("_id", -1) is 999) when the query is plain; a query it
    evaluates itself ($or) sorts numerically. Other integer fields sort as
    numbers. So no list is ordered by an integer `_id`: users come in
    services.db.CREATION_ORDER (inserted `created_at`, then `_id`)."""
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    await db.users.insert_many([{"_id": n, "email_key": f"{n}@example.com", "n": n,
                                 "created_at": base + dt.timedelta(seconds=n)} for n in range(1, 13)])
    by_id = [doc["_id"] async for doc in db.users.find({}).sort("_id", 1)]
    newest = (await db.users.find_one({}, sort=[("_id", -1)]))["_id"]
    if by_id != sorted(by_id):  # nx-27017 today
        assert by_id[:3] == [1, 10, 11] and newest == 9
    else:  # pragma: no cover - real MongoDB, or a fixed nx-27017
        assert newest == 12
    assert [doc["_id"] async for doc in db.users.find({}).sort("n", 1)] == list(range(1, 13))
    assert [doc["_id"] async for doc in db.users.find({}).sort(CREATION_ORDER)] == list(range(1, 13))
