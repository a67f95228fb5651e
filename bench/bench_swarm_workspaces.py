"""Workspaces on the Swarm backend against plain Docker, same image (the
busybox stand-in), same machine, same run, each through a real
`python server.py` process (issue 20). On a two-node test swarm
(tests/support/swarm_env.py, its own tag), as root, from the repository root:

    .venv/bin/python bench/bench_swarm_workspaces.py [--rounds 5] [--many 20]

1. create -> running (POST create to the `running` event on the status
   socket), one at a time: plain Docker (network exposure) and Swarm with the
   workspace placed on node 2;
2. `--many` workspaces created at once on the swarm, spread over both nodes
   (how many landed on each);
3. node loss: a workspace on node 2, node 2's engine killed, seconds until
   the student's workspace is `failed` (heartbeat 1 s).

Prints the numbers; removes everything it made."""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import time
import uuid

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from bench_workspaces import Server, cleanup, connect, create_to_running, register  # noqa: E402
from tests.support.swarm_env import SwarmEnv  # noqa: E402
from tests.support.workspaces import TEST_IMAGE, ensure_test_image  # noqa: E402

DELETE = "/api/users/workspace/"


def auth(user: dict) -> dict:
    return {"Authorization": f"Bearer {user['access']}"}


async def singles(server: Server, rounds: int) -> list[float]:
    await server.ready()
    async with httpx.AsyncClient(base_url=server.url, timeout=180) as client:
        user = await register(client, "one")
        times = []
        for _ in range(rounds):
            times.append(await create_to_running(server, client, user))
            await client.delete(DELETE, headers=auth(user))
        return times


async def many(server: Server, count: int) -> tuple[list[float], float]:
    await server.ready()
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
        users = [await register(client, "many") for _ in range(count)]
        started = time.perf_counter()
        times = await asyncio.gather(*[create_to_running(server, client, u) for u in users])
        return list(times), time.perf_counter() - started


async def node_loss(server: Server, env: SwarmEnv) -> float:
    await server.ready()
    async with httpx.AsyncClient(base_url=server.url, timeout=180) as client:
        user = await register(client, "loss")
        await create_to_running(server, client, user)
        seq = (await client.get(DELETE, headers=auth(user))).json()["seq"]
        socket_ = await connect(server, user["access"], after=seq)
        killed = time.perf_counter()
        env.kill_node("node2")
        try:
            while True:
                message = json.loads(await asyncio.wait_for(socket_.read_message(), 120))
                if message.get("state") in ("failed", "stopped"):
                    assert "went away" in message["message"], message
                    return time.perf_counter() - killed
        finally:
            socket_.close()
            env.restart_node("node2")


def spread(env: SwarmEnv, instance: str) -> dict[str, int]:
    out = env.manager.docker("service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}}",
                             *env.manager.docker("service", "ls", "-q", "--filter",
                                                 f"label=apranova.instance={instance}").split())
    return dict(collections.Counter(out.split()))


def remove_swarm_instance(env: SwarmEnv, instance: str) -> None:
    found = env.manager.docker("service", "ls", "-q", "--filter", f"label=apranova.instance={instance}").split()
    if found:
        env.manager.docker("service", "rm", *found)


def summary(name: str, values: list[float]) -> str:
    return (f"{name}: median {statistics.median(values):.2f} s, min {min(values):.2f}, max {max(values):.2f} "
            f"(n={len(values)})")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--many", type=int, default=20)
    args = parser.parse_args()
    ensure_test_image()
    env = SwarmEnv(f"aswb{uuid.uuid4().hex[:4]}", heartbeat="1s")
    env.up()
    docker_instance, swarm_instance = f"bsd{uuid.uuid4().hex[:6]}", f"bss{uuid.uuid4().hex[:6]}"
    try:
        ref = env.push_image(TEST_IMAGE)
        node2 = env.nodes["node2"]
        swarm = {"WORKSPACE_BACKEND": "swarm", "DOCKER_HOST": env.manager.docker_host, "WORKSPACE_IMAGE": ref,
                 "WORKSPACE_CPUS": "0.05", "WORKSPACE_MEMORY": "32m"}
        docker_server = Server(docker_instance)
        try:
            print(summary("docker create->running", await singles(docker_server, args.rounds)), flush=True)
        finally:
            docker_server.stop()
        on_node2 = Server(swarm_instance, SWARM_CONSTRAINTS=f"node.hostname=={node2.hostname}", **swarm)
        try:
            print(summary("swarm (node 2) create->running", await singles(on_node2, args.rounds)), flush=True)
        finally:
            on_node2.stop()
        remove_swarm_instance(env, swarm_instance)
        spread_server = Server(swarm_instance, **swarm)
        try:
            times, wall = await many(spread_server, args.many)
            print(summary(f"swarm {args.many} at once, each", times) + f"; all running after {wall:.2f} s; "
                  f"tasks per node {spread(env, swarm_instance)}", flush=True)
        finally:
            spread_server.stop()
        remove_swarm_instance(env, swarm_instance)
        loss_server = Server(swarm_instance, SWARM_CONSTRAINTS=f"node.hostname=={node2.hostname}", **swarm)
        try:
            print(f"node loss -> failed: {await node_loss(loss_server, env):.2f} s (heartbeat 1 s)", flush=True)
        finally:
            loss_server.stop()
    finally:
        cleanup(docker_instance)
        problems = env.down()
        if problems:
            print("teardown:", problems)


if __name__ == "__main__":
    asyncio.run(main())
