"""WORKSPACE_HOST_WALL against the real Docker engine and iptables: a
container on a workspace-style network (inter-container traffic off)
reaches a host service bound to all addresses through its gateway; with the
wall it does not, while the host still reaches the container (reply traffic
passes) and the container still has its route out; removing the wall leaves
no rule behind. Needs root (iptables); CI runs as root."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid

import pytest

from services import host_wall
from tests.support.app import require_or_skip
from tests.support.workspaces import docker, TEST_IMAGE

pytestmark = pytest.mark.docker


def iptables_rules() -> str:
    return subprocess.run(["iptables", "-w", "10", "-S"], capture_output=True, text=True, timeout=30).stdout


async def reaches(container: str, address: str, port: int) -> bool:
    """Whether the container gets the host service's answer within 3 s
    (busybox nc: the image's busybox wget is not usable here)."""
    script = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {address} {port}"
    process = await asyncio.create_subprocess_exec(
        "docker", "exec", container, "/bin/busybox", "sh", "-c", script,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return b"host service" in out


async def test_the_wall_stops_workspaces_reaching_the_host_but_not_the_proxy_reaching_them():
    require_or_skip(os.geteuid() == 0 and shutil.which("iptables") is not None, "root and iptables")
    require_or_skip(bool(docker("image", "ls", "-q", TEST_IMAGE, check=False)), f"test image {TEST_IMAGE}")
    before = iptables_rules()
    tag = uuid.uuid4().hex[:8]
    instance, network, container = f"wall{tag}", f"wall{tag}-workspaces", f"wall{tag}-ws"
    labels = ["--label", f"apranova.instance={instance}"]
    docker("network", "create", *labels, "-o", "com.docker.network.bridge.enable_icc=false", network)
    bridge = None

    async def host_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhost service")
        await writer.drain()
        writer.close()

    service = await asyncio.start_server(host_service, "0.0.0.0", 0)  # as a service bound to all addresses
    port = service.sockets[0].getsockname()[1]
    try:
        info = json.loads(docker("network", "inspect", network))[0]
        bridge = host_wall.bridge_of(info)
        gateway = info["IPAM"]["Config"][0]["Gateway"]
        docker("run", "-d", "--name", container, *labels, "--network", network, TEST_IMAGE)
        address = json.loads(docker("inspect", container))[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
        assert await reaches(container, gateway, port)  # today: the host's services are one gateway away

        await host_wall.ensure(bridge)
        await host_wall.ensure(bridge)  # idempotent: one hook, one chain
        assert iptables_rules().count(f"-i {bridge} -j {host_wall.chain_of(bridge)}") == 1
        assert not await reaches(container, gateway, port)
        # The server (the proxy) still reaches the IDE: the answers are reply traffic.
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, 8080), 5)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.")
        writer.close()

        await host_wall.remove(bridge)
        assert await reaches(container, gateway, port)
    finally:
        service.close()
        if bridge is not None:
            await host_wall.remove(bridge)
        docker("rm", "-f", container, check=False)
        docker("network", "rm", network, check=False)
    after = iptables_rules()
    assert host_wall.chain_of(bridge) not in after
    assert [line for line in after.splitlines() if bridge in line] == []
    # Nothing of ours is left: every rule that is new since the start is Docker's for other engineers' networks.
    assert not [line for line in set(after.splitlines()) - set(before.splitlines()) if "APN-WALL" in line]
