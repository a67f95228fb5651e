"""Timings of the two-node test swarm (tests/support/swarm_env.py): bring-up,
a service on node2 answering the host, scaling to 0 and back, node loss
detection, restart of the lost node, teardown. Run as root from the
repository root:

    .venv/bin/python bench/bench_swarm_env.py [--rounds 3] [--heartbeat 1s]

Prints one line per round and the medians."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tests.support.swarm_env import SwarmEnv  # noqa: E402
from tests.support.workspaces import TEST_IMAGE, ensure_test_image  # noqa: E402

PORT = 18080


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def until(check, timeout: float = 120) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.05)
    return time.monotonic() - started


def one_round(heartbeat: str) -> dict[str, float]:
    t: dict[str, float] = {}
    env = SwarmEnv(f"aswb{uuid.uuid4().hex[:4]}", heartbeat=heartbeat)
    started = time.monotonic()
    try:
        env.up()
        t["up"] = time.monotonic() - started
        started = time.monotonic()
        ref = env.push_image(TEST_IMAGE)
        t["push"] = time.monotonic() - started
        manager, node2 = env.manager, env.nodes["node2"]
        url = f"http://{node2.address}:{PORT}/healthz"
        started = time.monotonic()
        manager.docker("service", "create", "-d", "--name", "bench", "--constraint", f"node.hostname=={node2.hostname}",
                       "--publish", f"mode=host,target=8080,published={PORT}", "--stop-grace-period", "1s", ref)
        until(lambda: answers(url))
        t["service_answers"] = time.monotonic() - started
        started = time.monotonic()
        manager.docker("service", "scale", "-d", "bench=0")
        until(lambda: not answers(url))
        t["scale_0"] = time.monotonic() - started
        started = time.monotonic()
        manager.docker("service", "scale", "-d", "bench=1")
        until(lambda: answers(url))
        t["scale_1"] = time.monotonic() - started
        env.kill_node("node2")
        t["node_down"] = env.wait_ready(state="down", nodes=["node2"], timeout=60)
        t["restart_ready"] = env.restart_node("node2")
    finally:
        started = time.monotonic()
        problems = env.down()
        t["down"] = time.monotonic() - started
    if problems:
        raise RuntimeError(f"teardown left the host changed: {problems}")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heartbeat", default="1s", help="swarm dispatcher heartbeat (Docker's default: 5s)")
    args = parser.parse_args()
    ensure_test_image()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"heartbeat {args.heartbeat}; image {TEST_IMAGE}")
    rounds = []
    for index in range(args.rounds):
        rounds.append(one_round(args.heartbeat))
        print(f"round {index + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in rounds[-1].items()), flush=True)
    print("median: " + ", ".join(f"{k} {statistics.median(r[k] for r in rounds):.2f} s" for k in rounds[0]))
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
