"""The README's TLS front, tested: Debian's nginx runs deploy/nginx/apranova.conf
(its names, ports and paths replaced by the test's own) on loopback in front
of the real server, with upstream keep-alive on, so that connections from
nginx to the server are shared by every browser and user.

* A hostile workspace writes a second, planted answer after each of its
  answers (issue 19, finding 1): under keep-alive that answer would go to
  whichever user's request nginx sends next on that connection. Nobody
  gets it.
* Chromium opens a workspace through nginx (wss WebSocket included), and
  its cookie is `__Host-` and Secure because nginx's X-Forwarded-Proto is
  trusted through TRUSTED_PROXIES.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
from tornado.testing import bind_unused_port

from tests.support.app import auth, IN_CI, register, require_or_skip
from tests.support.proxy_hostile import chunked, Hostile, ok, PLANTED
from tests.support.proxy_upstream import start_upstream
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.proxy import NO_DOCKER
from tests.support.tls import DOMAIN, goto, RESOLVER_RULES, wildcard_certificate

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "deploy" / "nginx" / "apranova.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


class Nginx:
    """nginx with the recipe, in a directory of its own (its pid, logs and
    temporary files there); stopped by `stop`."""

    def __init__(self, directory: Path, cert: Path, key: Path):
        self.directory, self.port, self.plain_port = directory, free_port(), free_port()
        self.cert, self.key = cert, key
        self.process: subprocess.Popen | None = None

    def configure(self, server_port: int) -> None:
        directory, cert, key = self.directory, self.cert, self.key
        recipe = RECIPE.read_text()
        for old, new in (("apranova.example.edu", DOMAIN), ("127.0.0.1:8000", f"127.0.0.1:{server_port}"),
                         ("listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;"),
                         ("listen 80;", f"listen 127.0.0.1:{self.plain_port};"),
                         ("/etc/ssl/apranova/wildcard.crt", str(cert)), ("/etc/ssl/apranova/wildcard.key", str(key))):
            assert old in recipe, f"the recipe no longer has {old!r}"
            recipe = recipe.replace(old, new)
        (directory / "apranova.conf").write_text(recipe)
        temp = "\n".join(f"    {name}_temp_path {directory}/{name};" for name in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (directory / "nginx.conf").write_text(
            f"user root;\nworker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log warn;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {directory}/access.log;\n{temp}\n    include {directory}/apranova.conf;\n}}\n")

    async def start(self) -> None:
        self.process = subprocess.Popen([NGINX, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf"),
                                         "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                assert self.process.poll() is None, self.process.stderr.read().decode()
                await asyncio.sleep(0.05)
        raise AssertionError("nginx did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
async def front(start_server, tmp_path) -> AsyncIterator[tuple]:
    """(server, nginx) with the recipe's settings."""
    require_or_skip(Path(NGINX).exists(), f"nginx ({NGINX})")
    cert, key = wildcard_certificate(tmp_path)
    nginx_dir = tmp_path / f"nginx-{uuid.uuid4().hex[:6]}"
    nginx_dir.mkdir()
    nginx = Nginx(nginx_dir, cert, key)
    server = await start_server(public_url=f"https://{DOMAIN}:{nginx.port}", trusted_proxies="127.0.0.1/32",
                                workspace_host_template=f"ws-{{user_id}}.{DOMAIN}", **NO_DOCKER)
    nginx.configure(int(server.url.rsplit(":", 1)[1]))
    await nginx.start()
    try:
        yield server, nginx
    finally:
        nginx.stop()


async def workspace_for(server, client: httpx.AsyncClient, port: int) -> tuple[dict, str]:
    """A student whose running workspace listens on `port`, and the URL that opens it."""
    user = await register(client)
    await server.db.workspaces.insert_one({"_id": uuid.uuid4().hex, "owner_id": user["user"]["id"],
                                           "state": "running", "port": port, "seq": 1, "progress": 100,
                                           "endpoint": {"host": "127.0.0.1", "port": port}, "version": 1})
    answer = await client.post("/api/users/workspace/open/", headers=auth(user))
    return user, answer.json()["url"]


async def test_a_planted_answer_reaches_nobody_behind_nginx_keepalive(front):
    server, nginx = front
    hostile = await Hostile().start()
    for path in ("/chunked", "/sized"):
        hostile.delayed[path] = (0.0, PLANTED)  # written at once after each answer, in its own write
    hostile.answers["/chunked"] = chunked(b"ok") + PLANTED
    hostile.answers["/sized"] = ok(b"ok")
    front_url = f"https://127.0.0.1:{nginx.port}"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        _, url = await workspace_for(server, api, hostile.port)
    host = url.split("/")[2]
    async with httpx.AsyncClient(base_url=front_url, timeout=30, verify=False) as attacker, \
            httpx.AsyncClient(base_url=front_url, timeout=30, verify=False) as victim:
        redeemed = await attacker.get(url.replace(f"https://{host}", ""), headers={"Host": host})
        assert redeemed.status_code == 302 and redeemed.headers["set-cookie"].startswith("__Host-apranova_ws=")
        assert "secure" in redeemed.headers["set-cookie"].lower()  # X-Forwarded-Proto from nginx, trusted
        cookie = redeemed.headers["set-cookie"].split(";", 1)[0]
        for round_ in range(15):
            path = ("/chunked", "/sized")[round_ % 2]
            mine = await attacker.get(path, headers={"Host": host, "Cookie": cookie})
            assert mine.status_code == 200 and mine.text == "ok", (path, mine.status_code, mine.text)
            theirs = await victim.get("/health", headers={"Host": DOMAIN})
            assert theirs.status_code == 200 and "planted" not in theirs.text, theirs.text
            assert theirs.json()["status"] in ("ok", "healthy"), theirs.text
    hostile.close()


@pytest.mark.browser
async def test_chromium_opens_a_workspace_through_nginx(front):
    require_or_skip(CHROMIUM.exists(), f"Chromium ({CHROMIUM})")
    from playwright.async_api import async_playwright
    server, nginx = front
    upstream, port, recorder = await start_upstream()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        _, url = await workspace_for(server, api, port)
    assert url.startswith(f"https://ws-") and f".{DOMAIN}:{nginx.port}/?ticket=" in url
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                    args=[*CHROMIUM_ARGS, f"--host-resolver-rules={RESOLVER_RULES}"])
        context = await chromium.new_context(ignore_https_errors=True)
        page = await context.new_page()
        await goto(page, url)
        assert '"method": "GET"' in await page.content() and "ticket" not in page.url
        cookies = {c["name"]: c for c in await context.cookies(page.url)}
        assert cookies["__Host-apranova_ws"]["secure"] and cookies["__Host-apranova_ws"]["httpOnly"]
        echoed = await page.evaluate("""() => new Promise((resolve, reject) => {
            const socket = new WebSocket(location.origin.replace("https", "wss") + "/ws");
            socket.onopen = () => socket.send("through nginx");
            socket.onmessage = event => { resolve(event.data); socket.close(); };
            socket.onerror = () => reject(new Error("no socket")); })""")
        assert echoed == "through nginx"
        await chromium.close()
    seen = [r for r in recorder.requests if r["method"] == "WEBSOCKET"]
    assert seen and seen[0]["headers"]["X-Forwarded-Proto"] == "https"
    upstream.stop()
    if IN_CI:
        assert (nginx.directory / "access.log").read_text()  # nginx, not a shortcut, served it
