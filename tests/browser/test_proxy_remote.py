"""A second computer's browser uses a workspace through the server's one
port: Chromium runs in a network namespace of its own (another computer, as
far as the network goes: its own loopback, reaching the server only over a
veth pair with private addresses), the server listens on the host side of
that pair only, and the names (`apranova.test`, `ws-<id>.apranova.test`)
are what wildcard DNS would give, mapped by Chromium's resolver rules. The
browser signs in, starts and opens the workspace from the dashboard (ticket,
cookie, proxied IDE) and reads its page; no workspace port is published.

Needs root (ip netns) and the Docker engine: CI runs as root, so there this
fails rather than skips when either is missing.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
from tornado.netutil import bind_sockets

from handlers import make_app
from proxy.server import ProxyHTTPServer
from services.container import Services
from tests.support.app import register, require_or_skip, RunningServer
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, log_in, PASSWORD, Tab
from tests.support.workspaces import docker

pytestmark = [pytest.mark.browser, pytest.mark.docker]
DOMAIN = "apranova.test"  # reserved (RFC 2606): never a real name


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"apnprobe{uuid.uuid4().hex[:6]}"
    if ip("netns", "add", probe, check=False).returncode != 0:
        return False
    ip("netns", "delete", probe, check=False)
    return True


class SecondComputer:
    """A network namespace joined to this host by a veth pair (a /30 in
    10.231.0.0/16, picked at random among the free ones): `host_ip` is this
    side, `own_ip` the namespace's. Everything is removed by `remove`."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, self.host_if, self.ns_if = f"apn-remote-{tag}", f"apnh{tag}", f"apnn{tag}"
        taken = ip("-o", "addr").stdout
        while True:
            third, fourth = random.randrange(256), random.randrange(0, 256, 4)
            self.host_ip, self.own_ip = f"10.231.{third}.{fourth + 1}", f"10.231.{third}.{fourth + 2}"
            if f"10.231.{third}.{fourth}" not in taken and self.host_ip not in taken and self.own_ip not in taken:
                break

    def create(self) -> None:
        ns = self.ns
        ip("netns", "add", ns)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        ip("link", "set", self.ns_if, "netns", ns)
        ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{self.own_ip}/30", "dev", self.ns_if)
        ip("netns", "exec", ns, "ip", "link", "set", self.ns_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def remove(self) -> None:
        ip("link", "delete", self.host_if, check=False)  # its peer goes with it
        ip("netns", "delete", self.ns, check=False)

    def chromium(self, directory: Path) -> Path:
        """An executable that starts Chromium inside the namespace (Playwright
        talks to it over inherited pipes, which `ip netns exec` keeps)."""
        wrapper = directory / "chromium-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {self.ns} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        return wrapper


@pytest.fixture
def second_computer() -> AsyncIterator[SecondComputer]:
    require_or_skip(netns_available(), "root and network namespaces (ip netns)")
    computer = SecondComputer()
    try:
        computer.create()
        yield computer
    finally:
        computer.remove()
        assert computer.ns not in ip("netns", "list").stdout
        assert computer.host_if not in ip("-o", "link").stdout


async def serve_on(servers: Any, address: str) -> tuple[RunningServer, int]:  # noqa: F811
    """The real app listening on `address` only, its public names under DOMAIN."""
    sockets = bind_sockets(0, address)
    port = sockets[0].getsockname()[1]
    settings = servers.settings(host=address, port=str(port), public_url=f"http://{DOMAIN}:{port}",
                                workspace_host_template=f"ws-{{user_id}}.{DOMAIN}")
    services = await Services(settings).start()
    app = make_app(services)
    http = ProxyHTTPServer(app, max_body_size=64 * 1024 * 1024)
    http.add_sockets(sockets)
    server = RunningServer(f"http://{address}:{port}", services, app, http)
    servers.running.append(server)  # stopped (and its containers removed) by the fixture
    return server, port


async def test_a_browser_on_another_computer_uses_a_workspace_through_the_one_port(
        servers, second_computer, tmp_path) -> None:  # noqa: F811
    require_or_skip(CHROMIUM.exists(), f"Chromium ({CHROMIUM})")
    server, port = await serve_on(servers, second_computer.host_ip)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client, password=PASSWORD, name="Remote Student")
    uid = user["user"]["id"]

    from playwright.async_api import async_playwright
    resolver = f"MAP {DOMAIN} {second_computer.host_ip}, MAP *.{DOMAIN} {second_computer.host_ip}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(second_computer.chromium(tmp_path)),
                                                   headless=True,
                                                   args=[*CHROMIUM_ARGS, f"--host-resolver-rules={resolver}"])
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(30000)
            tab = Tab(context, await context.new_page(), f"http://{DOMAIN}:{port}")
            # The namespace is another computer: the server is not on its loopback.
            probe = await context.new_page()
            with pytest.raises(Exception, match="ERR_CONNECTION_REFUSED"):
                await probe.goto(f"http://127.0.0.1:{port}/", timeout=10000)
            await probe.close()
            await log_in(tab, user["user"]["email"])
            await tab.page.get_by_role("button", name="Open my workspace").click()
            link = tab.page.get_by_role("link", name="Open the IDE")
            await link.wait_for(timeout=60000)
            assert await link.get_attribute("href") == f"http://ws-{uid}.{DOMAIN}:{port}/"
            async with context.expect_page() as opened:
                await link.click()
            ide = await opened.value
            await ide.wait_for_url(f"http://ws-{uid}.{DOMAIN}:{port}/", timeout=30000)  # the ticket spent
            await ide.get_by_text("apranova test workspace").wait_for()  # the workspace's own page
            cookies = await context.cookies(f"http://ws-{uid}.{DOMAIN}:{port}/")
            assert [c["name"] for c in cookies if c["domain"] == f"ws-{uid}.{DOMAIN}"] == ["apranova_ws"]
            assert not tab.errors, tab.errors
        finally:
            await browser.close()

    # The workspace was reached through the server only: no host port published.
    name = server.services.settings.instance_name
    ids = docker("ps", "-q", "--filter", f"label=apranova.instance={name}").split()
    assert len(ids) == 1
    info = json.loads(docker("inspect", ids[0]))[0]
    assert not info["HostConfig"].get("PortBindings")
    assert not any(info["NetworkSettings"].get("Ports", {}).values())
    assert re.fullmatch(rf"http://ws-{uid}\.{re.escape(DOMAIN)}:{port}/", (await server_workspace_url(server, uid)))


async def server_workspace_url(server: RunningServer, uid: int) -> str:
    doc = await server.db.workspaces.find_one({"owner_id": uid})
    url, _ = server.services.workspaces.address(doc)
    return url
