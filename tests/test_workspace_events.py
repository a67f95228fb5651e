"""The event path's ordering: a change reaches this process's followers
before its log write lands (services/workspaces/lifecycle.py `_announce`),
so a follower that opens in between must wait for the log, not miss the
event. In-memory engine, real nx-27017."""
from __future__ import annotations

import asyncio
import contextlib

import httpx

from tests.support.app import auth, register
from tests.support.workspaces import CREATE, STOP
from tests.support.lifecycle import Fake


async def test_a_follower_opening_before_the_last_event_is_logged_still_gets_it_once(fake: Fake, monkeypatch):
    server = await fake.start()
    workspaces = server.services.workspaces
    workspaces.events.poll_interval = 3600  # no rescue by the cross-process poll: the replay itself must wait
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        user = await register(http)
        assert (await http.post(CREATE, headers=auth(user), json={"wait": True})).json()["state"] == "running"
        before = await workspaces.find(user["user"]["id"])
        gate, real_log = asyncio.Event(), workspaces.store.log

        async def slow_log(event: dict) -> None:  # the final event's log write is held back
            if event["state"] == "stopped":
                await gate.wait()
            await real_log(event)
        monkeypatch.setattr(workspaces.store, "log", slow_log)
        stopping = asyncio.create_task(http.post(STOP, headers=auth(user)))
        for _ in range(500):  # until "stopped" is stored and published, its log write still held
            if (await workspaces.find(user["user"]["id"]))["state"] == "stopped":
                break
            await asyncio.sleep(0.01)
        follower = workspaces.subscribe(before["_id"], before["seq"])
        asyncio.get_running_loop().call_later(0.3, gate.set)  # the held write lands while the replay reads
        async with contextlib.aclosing(follower):
            first = await asyncio.wait_for(anext(follower), 5)
            second = await asyncio.wait_for(anext(follower), 5)
        assert [(e["seq"], e["state"]) for e in (first, second)] == [
            (before["seq"] + 1, "stopping"), (before["seq"] + 2, "stopped")]
        assert (await stopping).status_code == 200
