"""A real two-node Docker Swarm on this one machine, for the Swarm backend's
tests and benchmarks: node1 (manager) and node2 (worker), each a dockerd in a
network namespace of its own, on a bridge in another namespace, with the
host joined by one veth and Debian's docker-registry on the host's address.
The README's "The test swarm" section says why it is built this way.

    python -m tests.support.swarm_env up|down|status

brings one up outside pytest and writes /run/apranova-swarm/env.json; the
`swarm_cluster` fixture gives the same facts to tests (fails, not skips,
when CI=true). Needs root, dockerd, docker-registry, iproute2, util-linux."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.app import require_or_skip
from tests.support.processes import alive
from tests.support.swarm_net import HostSnapshot, Net, free_subnet
from tests.support.swarm_node import Node
from tests.support.swarm_registry import Registry, free_port

RUN_ROOT = Path("/run/apranova-swarm")
DATA_ROOT = Path("/var/lib/apranova-swarm")
ENV_JSON = RUN_ROOT / "env.json"


@dataclass
class NodeFacts:
    name: str
    hostname: str
    address: str
    docker_host: str
    node_id: str


class SwarmEnv:
    """`up()` then `down()`; everything is derived from the tag and subnet,
    which `state()` records, so another process can tear it down."""

    def __init__(self, tag: str, subnet: str | None = None, registry_port: int | None = None,
                 heartbeat: str = "1s"):
        self.tag, self.heartbeat = tag, heartbeat
        self.net = Net(tag, subnet or claim_subnet(tag))
        self.run_dir, self.data_dir = RUN_ROOT / tag, DATA_ROOT / tag
        host = self.net.address("host")
        self.registry = Registry(f"{host}:{registry_port or 0}", self.data_dir / "registry")
        self.nodes = {name: self._node(name, i) for i, name in enumerate(self.net.nodes, 1)}
        self.node_ids: dict[str, str] = {}
        self.before: HostSnapshot | None = None
        self.owner: int | None = None

    def _node(self, name: str, index: int) -> Node:
        return Node(name=name, hostname=f"{self.tag}-{name}", address=self.net.address(name),
                    netns=self.net.netns_path(name), run_dir=self.run_dir / name,
                    data_dir=self.data_dir / name, cgroup_parent=f"/{self.tag}-{name}",
                    bip=f"10.214.{index}.1/24", registry=self.registry.address)

    @property
    def manager(self) -> Node:
        return self.nodes["node1"]

    # -- bring-up ---------------------------------------------------------
    def up(self, owner: int | None = None) -> None:
        """`owner`: the pid whose death makes this swarm stale (reap_stale
        removes it); None for one that outlives its maker (the CLI's)."""
        self.before = self.before or HostSnapshot.take()
        self.run_dir.mkdir(parents=True, exist_ok=False)  # a second `up` of one tag fails here
        self.owner = owner
        self._save()  # from here on, a crash leaves enough to tear it down
        self.net.up()
        if self.registry.address.endswith(":0"):
            host = self.net.address("host")
            self.registry.address = f"{host}:{free_port(host)}"
            for node in self.nodes.values():
                node.registry = self.registry.address
        self.registry.start()
        for node in self.nodes.values():
            node.start()
        self._form_swarm()
        self._save()

    def _save(self) -> None:
        (self.run_dir / "state.json").write_text(json.dumps(self.state()))

    def _form_swarm(self) -> None:
        manager = self.manager
        manager.docker("swarm", "init", "--advertise-addr", manager.address,
                       "--listen-addr", f"{manager.address}:2377", "--dispatcher-heartbeat", self.heartbeat)
        token = manager.docker("swarm", "join-token", "-q", "worker")
        for node in self.nodes.values():
            if node is not manager:
                node.docker("swarm", "join", "--token", token, "--advertise-addr", node.address,
                            "--listen-addr", f"{node.address}:2377", f"{manager.address}:2377")
        for node in self.nodes.values():
            self.node_ids[node.name] = node.docker("info", "-f", "{{.Swarm.NodeID}}")
        self.wait_ready(timeout=60)

    def node_states(self) -> dict[str, str]:
        """Node name -> the manager's view of its state (ready, down, ...)."""
        out = self.manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}", timeout=10)
        by_host = dict(line.split() for line in out.splitlines() if line.strip())
        return {n.name: by_host.get(n.hostname, "missing").lower() for n in self.nodes.values()}

    def wait_ready(self, timeout: float = 60, state: str = "ready", nodes: list[str] | None = None) -> float:
        """Wait until the manager sees `nodes` (default: all) in `state`;
        returns the seconds it took."""
        started = time.monotonic()
        names = nodes or list(self.nodes)
        while True:
            states = self.node_states()
            if all(states[n] == state for n in names):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"nodes not {state} after {timeout} s: {states}")
            time.sleep(0.1)

    # -- node loss --------------------------------------------------------
    def kill_node(self, name: str) -> None:
        self.nodes[name].kill()

    def restart_node(self, name: str, timeout: float = 60) -> float:
        """Start the node's engine again (joining the mount namespace its
        surviving containerd and shims hold) and wait until the manager sees
        it Ready; returns the seconds that took."""
        started = time.monotonic()
        self.nodes[name].start()
        self.wait_ready(timeout=timeout, nodes=[name])
        return time.monotonic() - started

    def push_image(self, local_name: str) -> str:
        return self.registry.push(local_name, via=self.manager)

    # -- teardown ---------------------------------------------------------
    def down(self) -> list[str]:
        """Remove everything; returns what was left behind or changed on the
        host (empty when all went well)."""
        problems = []
        for node in reversed(list(self.nodes.values())):
            node.stop()
        self.registry.stop()
        for node in self.nodes.values():
            problems += node.remove_cgroups()
        self.net.down()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        release_subnet(self.net.subnet, self.tag)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for path in (RUN_ROOT, DATA_ROOT):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        problems += self.net.leftovers()
        problems += [f"{d} remains" for d in (self.run_dir, self.data_dir) if d.exists()]
        if self.before is not None:
            problems += self.before.differences(HostSnapshot.take(), self.tag)
        return problems

    # -- facts --------------------------------------------------------------
    def facts(self) -> dict:
        nodes = [NodeFacts(n.name, n.hostname, n.address, n.docker_host, self.node_ids.get(n.name, "")).__dict__
                 for n in self.nodes.values()]
        return {"tag": self.tag, "subnet": self.net.subnet, "host_address": self.net.address("host"),
                "manager": self.manager.docker_host, "registry": self.registry.address, "nodes": nodes,
                "heartbeat": self.heartbeat}

    def state(self) -> dict:
        return {**self.facts(), "owner": self.owner,
                "before": self.before.to_json() if self.before else None}

    @classmethod
    def from_state(cls, state: dict) -> "SwarmEnv":
        env = cls(state["tag"], state["subnet"], int(state["registry"].rsplit(":", 1)[1]), state["heartbeat"])
        env.node_ids = {n["name"]: n["node_id"] for n in state["nodes"]}
        env.before = HostSnapshot.from_json(state["before"]) if state.get("before") else None
        env.owner = state.get("owner")
        return env


def _claim_path(subnet: str) -> Path:
    return RUN_ROOT / f"subnet-{subnet.replace('/', '_')}"


def claim_subnet(tag: str) -> str:
    """A free /24, claimed by creating a file only one process can create:
    two swarms coming up at once would otherwise both see it free."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    claimed = [ipaddress.ip_network(p.name.removeprefix("subnet-").replace("_", "/"))
               for p in RUN_ROOT.glob("subnet-*")]
    while True:
        subnet = str(free_subnet(also_taken=claimed))
        try:
            with open(_claim_path(subnet), "x") as claim:
                claim.write(tag)
            return subnet
        except FileExistsError:
            claimed.append(ipaddress.ip_network(subnet))


def release_subnet(subnet: str, tag: str) -> None:
    path = _claim_path(subnet)
    try:
        if path.read_text() == tag:
            path.unlink()
    except OSError:
        pass


def reap_stale() -> list[str]:
    """Tear down test swarms whose owning process died without doing it
    (a killed pytest); returns their tags."""
    reaped = []
    for state_file in RUN_ROOT.glob("*/state.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        owner = state.get("owner")
        if owner is not None and not alive(owner):
            SwarmEnv.from_state(state).down()
            reaped.append(state["tag"])
    return reaped


class SwarmCluster:
    """What the fixture yields: the facts, plus the helpers."""

    def __init__(self, env: SwarmEnv):
        self.env = env
        facts = env.facts()
        self.manager: str = facts["manager"]
        self.registry: str = facts["registry"]
        self.host_address: str = facts["host_address"]
        self.nodes = [NodeFacts(**n) for n in facts["nodes"]]

    def node(self, name: str) -> NodeFacts:
        return next(n for n in self.nodes if n.name == name)

    def push_image(self, local_name: str) -> str:
        return self.env.push_image(local_name)

    def kill_node(self, name: str) -> None:
        self.env.kill_node(name)

    def restart_node(self, name: str) -> float:
        return self.env.restart_node(name)


def missing_tools() -> list[str]:
    missing = [tool for tool in ("dockerd", "docker", "docker-registry", "ip", "nsenter", "unshare", "iptables-save")
               if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@pytest.fixture(scope="session")
def swarm_cluster():
    """A two-node swarm for the whole session; torn down at its end, and the
    teardown fails the session if the host did not end as it began."""
    if missing := missing_tools():
        require_or_skip(False, "the two-node test swarm (missing " + ", ".join(missing) + ")")
    reap_stale()
    env = SwarmEnv(f"aswt{os.getpid() % 10000}")
    try:
        env.up(owner=os.getpid())
    except Exception as err:  # noqa: BLE001 - any bring-up failure is reported the same way
        problems = env.down()
        teardown = f"; teardown: {problems}" if problems else ""
        require_or_skip(False, f"the two-node test swarm (bring-up failed: {err}{teardown})")
    try:
        yield SwarmCluster(env)
    finally:
        problems = env.down()
    assert not problems, f"the test swarm's teardown left the host changed: {problems}"


def main(argv: list[str]) -> int:
    from tests.support.swarm_cli import run
    return run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
