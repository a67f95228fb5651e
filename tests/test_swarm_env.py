"""The two-node test swarm itself (tests/support/swarm_env.py): both nodes
Ready; a service placed on node2 with our image from the registry answers
HTTP from the host at node2's address and nowhere else; scaling to 0 and
back; losing node2's engine; and a teardown that leaves the host as found.
Timings are in bench/bench_swarm_env.py, not here."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.support.processes import alive
from tests.support.swarm_env import SwarmCluster, SwarmEnv, missing_tools
from tests.support.swarm_node import CGROUP_ROOT
from tests.support.workspaces import TEST_IMAGE, ensure_test_image

pytestmark = [pytest.mark.docker, pytest.mark.swarm]
PORT = 18080  # published on the task's node only (mode=host), inside that node's namespace


def get(url: str, timeout: float = 2) -> int | None:
    """The HTTP status, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s")


@pytest.fixture(scope="module")
def image_ref(swarm_cluster: SwarmCluster) -> str:
    ensure_test_image()
    return swarm_cluster.push_image(TEST_IMAGE)


@pytest.fixture
def service(swarm_cluster: SwarmCluster, image_ref: str):
    """A one-replica service of the stand-in image pinned to node2,
    published in host mode (this kernel has no IPVS, so no routing mesh)."""
    manager = swarm_cluster.env.manager
    name = f"swt{uuid.uuid4().hex[:8]}"
    manager.docker("service", "create", "-d", "--name", name,
                   "--constraint", f"node.hostname=={swarm_cluster.node('node2').hostname}",
                   "--publish", f"mode=host,target=8080,published={PORT}", "--stop-grace-period", "1s", image_ref)
    yield name
    manager.docker("service", "rm", name, check=False)
    node2 = swarm_cluster.env.nodes["node2"]
    if node2.dockerd_pid():
        wait_for(lambda: not node2.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}"),
                 30, "the service's container gone from node2")


def tasks(cluster: SwarmCluster, name: str) -> list[dict[str, str]]:
    out = cluster.env.manager.docker("service", "ps", name, "--no-trunc",
                                     "--format", "{{.ID}}|{{.Node}}|{{.DesiredState}}|{{.CurrentState}}")
    return [dict(zip(("id", "node", "desired", "current"), line.split("|"))) for line in out.splitlines()]


def test_both_nodes_ready_with_their_own_identity(swarm_cluster: SwarmCluster):
    env = swarm_cluster.env
    assert env.node_states() == {"node1": "ready", "node2": "ready"}
    manager_status = env.manager.docker("node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}").splitlines()
    assert f"{swarm_cluster.node('node1').hostname} Leader" in manager_status
    ids = {n.node_id for n in swarm_cluster.nodes}
    engine_ids = {env.nodes[n.name].docker("info", "-f", "{{.ID}}") for n in swarm_cluster.nodes}
    assert len(ids) == len(engine_ids) == 2, "each engine needs its own key, or the swarm sees one node"
    # each node's engine sees its own namespace's address, not the host's
    for node in swarm_cluster.nodes:
        assert env.nodes[node.name].docker("info", "-f", "{{.Swarm.NodeAddr}}") == node.address
        assert env.nodes[node.name].docker("info", "-f", "{{.Name}}") == node.hostname


def test_service_on_node2_answers_from_the_host(swarm_cluster: SwarmCluster, service: str, image_ref: str):
    node1, node2 = swarm_cluster.node("node1"), swarm_cluster.node("node2")
    assert image_ref.startswith(swarm_cluster.registry + "/")
    assert wait_for(lambda: get(f"http://{node2.address}:{PORT}/healthz") == 200, 60, "node2 answering")
    [task] = tasks(swarm_cluster, service)
    assert (task["node"], task["desired"]) == (node2.hostname, "Running")
    # node2 pulled the image from the registry (node1 dropped its copy after the push)
    # (by repository: Swarm pins the tag to its digest, so the pulled image carries no tag)
    assert swarm_cluster.env.nodes["node2"].docker("image", "ls", "-q", image_ref.rsplit(":", 1)[0])
    assert get(f"http://{node1.address}:{PORT}/healthz", timeout=1) is None, "mode=host publishes on the task's node only"


def test_scale_to_zero_and_back(swarm_cluster: SwarmCluster, service: str):
    url = f"http://{swarm_cluster.node('node2').address}:{PORT}/healthz"
    manager = swarm_cluster.env.manager
    wait_for(lambda: get(url) == 200, 60, "first answer")
    manager.docker("service", "scale", "-d", f"{service}=0")
    wait_for(lambda: get(url, timeout=1) is None, 30, "no answer after scale 0")
    # Swarm 20.10 marks a scaled-down task Remove (newer engines may say Shutdown)
    assert {t["desired"] for t in tasks(swarm_cluster, service)} <= {"Shutdown", "Remove"}, tasks(swarm_cluster, service)
    manager.docker("service", "scale", "-d", f"{service}=1")
    wait_for(lambda: get(url) == 200, 60, "an answer after scaling back to 1")


def test_node_loss_is_seen_and_the_task_shut_down(swarm_cluster: SwarmCluster, service: str):
    env = swarm_cluster.env
    url = f"http://{swarm_cluster.node('node2').address}:{PORT}/healthz"
    wait_for(lambda: get(url) == 200, 60, "first answer")
    [before] = tasks(swarm_cluster, service)
    node2 = env.nodes["node2"]
    swarm_cluster.kill_node("node2")
    holder = node2.mount_ns_holder()
    assert holder, "a killed engine's shim survives, holding the node's mount namespace"
    holder_mounts = _ns(holder, "mnt")
    try:
        env.wait_ready(state="down", nodes=["node2"], timeout=40)  # heartbeat 1s: about 2-4 s here
        first = wait_for(lambda: next((t for t in tasks(swarm_cluster, service) if t["id"] == before["id"]
                                       and t["desired"] == "Shutdown"), None), 20, "the lost task's desired state Shutdown")
        assert first["node"] == swarm_cluster.node("node2").hostname
        assert env.node_states()["node1"] == "ready"
    finally:
        swarm_cluster.restart_node("node2")
    assert _ns(node2.dockerd_pid(), "mnt") == holder_mounts, "the restarted engine joined the survivors' mounts"
    # back: the constraint brings the replica home to node2, and it answers
    wait_for(lambda: get(url) == 200, 90, "an answer after node2 came back")


def test_teardown_leaves_the_host_as_found(swarm_cluster: SwarmCluster):
    """A second, throwaway swarm (its own tag and subnet) comes up beside the
    session's and goes down again: namespaces, the host's link, engines,
    cgroups, data roots and registry all go, the host's iptables and link
    list end as they began, and the main engine is never in swarm mode."""
    assert not missing_tools()
    env = SwarmEnv(f"aswc{uuid.uuid4().hex[:4]}")
    try:
        env.up()
        processes = [p for node in env.nodes.values() for p in node.processes()]
        assert processes and all(node.dockerd_pid() for node in env.nodes.values())
    finally:
        problems = env.down()
    assert problems == []
    assert not any(alive(pid) for pid in processes)
    assert not env.net.leftovers()
    assert not env.run_dir.exists() and not env.data_dir.exists()
    assert not any(p.is_dir() for node in env.nodes.values() for p in _cgroup_dirs(node.cgroup_parent))
    main = subprocess.run(["docker", "info", "-f", "{{.Swarm.LocalNodeState}}"], capture_output=True, text=True)
    assert main.stdout.strip() == "inactive"
    names = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True)
    assert not [n for n in names.stdout.split() if env.tag in n]


def _ns(pid: int | None, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def _cgroup_dirs(parent: str) -> list[Path]:
    return [hierarchy / parent.strip("/") for hierarchy in CGROUP_ROOT.iterdir()]
