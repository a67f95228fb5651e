"""`python -m tests.support.swarm_env up|down|status`: the test swarm outside
pytest, for developing the Swarm backend against. `up` writes the facts the
fixture gives (manager, nodes, registry) to /run/apranova-swarm/env.json,
plus the host snapshot that `down` compares against."""
from __future__ import annotations

import argparse
import json
import time

from tests.support.swarm_env import ENV_JSON, SwarmEnv, missing_tools, reap_stale

DEV_TAG = "aswdev"


def _load() -> SwarmEnv | None:
    try:
        return SwarmEnv.from_state(json.loads(ENV_JSON.read_text()))
    except FileNotFoundError:
        return None


def up(heartbeat: str) -> int:
    if ENV_JSON.exists():
        print(f"already up: {ENV_JSON} (run `down` first)")
        return 1
    if missing := missing_tools():
        print("missing: " + ", ".join(missing))
        return 1
    env = SwarmEnv(DEV_TAG, heartbeat=heartbeat)
    started = time.monotonic()
    try:
        env.up()
    except Exception as err:
        problems = env.down()
        print(f"bring-up failed: {err}" + (f"\nteardown: {problems}" if problems else ""))
        return 1
    ENV_JSON.write_text(json.dumps(env.state(), indent=2))
    print(json.dumps(env.facts(), indent=2))
    print(f"up in {time.monotonic() - started:.1f} s; facts in {ENV_JSON}")
    return 0


def down() -> int:
    for tag in reap_stale():
        print(f"removed {tag}, left by a test run that died")
    env = _load()
    if env is None:
        print(f"nothing to do: no {ENV_JSON}")
        return 0
    started = time.monotonic()
    ENV_JSON.unlink()
    problems = env.down()
    for problem in problems:
        print(problem)
    print(f"down in {time.monotonic() - started:.1f} s" + ("" if not problems else "; host NOT as it began"))
    return 1 if problems else 0


def status() -> int:
    env = _load()
    if env is None:
        print("down")
        return 1
    print(json.dumps(env.facts(), indent=2))
    for name, node in env.nodes.items():
        print(f"{name}: dockerd pid {node.dockerd_pid()}")
    try:
        print(env.manager.docker("node", "ls", timeout=10))
    except RuntimeError as err:
        print(f"manager does not answer: {err}")
        return 1
    return 0


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.swarm_env", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--heartbeat", default="1s", help="swarm dispatcher heartbeat (default 1s; Docker's is 5s)")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.heartbeat)
    return down() if args.command == "down" else status()
