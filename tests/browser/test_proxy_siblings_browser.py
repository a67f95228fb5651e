"""Sibling workspaces in a real browser (Debian's Chromium), under a
wildcard-style domain (`ws-<id>.apranova.test`, mapped to loopback by
Chromium's resolver rules: every workspace is the same *site*, as in
production under `ws-<id>.example.edu`), over https (the server's own TLS
with a self-signed wildcard certificate: browsers send Sec-Fetch-* only to
secure origins).

An admin has opened student B's workspace; then views student A's, whose
page is hostile (tests/proxy_hostile.py). A's page tries to read B
(credentialed fetch), to reach it blindly (no-cors fetch without referrer,
img, WebSocket), to frame it, and to poison it (a junk `apranova_ws` for the
parent domain from script, a `Domain=` cookie from A's server). B's IDE
receives none of it and still opens for the admin."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from tornado.testing import bind_unused_port

from handlers import make_app
from proxy.server import ProxyHTTPServer
from services.container import Services
from tests.support.app import app_settings, auth, make_admin, register, require_or_skip, RunningServer
from tests.support.proxy_hostile import Hostile, ok
from tests.support.proxy_upstream import start_upstream
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.proxy import NO_DOCKER
from tests.support.tls import DOMAIN, goto, RESOLVER_RULES, server_context, wildcard_certificate

pytestmark = pytest.mark.browser

ATTACK = """<!doctype html><title>A</title><body><script>
window.results = {};
const B = "%(b)s";
async function attack() {
  try { const r = await fetch(B + "/read", {credentials: "include"}); results.read = r.status + ":" + await r.text(); }
  catch (e) { results.read = "blocked"; }
  try { await fetch(B + "/blind", {credentials: "include", mode: "no-cors", referrerPolicy: "no-referrer"});
        results.blind = "sent"; } catch (e) { results.blind = "blocked"; }
  await new Promise(done => { const img = new Image(); img.referrerPolicy = "no-referrer";
    img.onload = () => { results.img = "loaded"; done(); }; img.onerror = () => { results.img = "error"; done(); };
    img.src = B + "/img"; });
  await new Promise(done => { const socket = new WebSocket(B.replace("https", "wss") + "/ws");
    socket.onopen = () => { results.socket = "open"; done(); };
    socket.onerror = () => { results.socket = "error"; done(); }; });
  await new Promise(done => { const frame = document.createElement("iframe");
    frame.onload = () => { try { results.frame = frame.contentDocument ? "readable" : "opaque"; }
                           catch (e) { results.frame = "opaque"; } done(); };
    frame.src = B + "/frame"; document.body.appendChild(frame); setTimeout(done, 3000); });
  document.cookie = "apranova_ws=junk; domain=%(domain)s; path=/; secure";
  document.cookie = "__Host-apranova_ws=junk; path=/; secure";
  results.cookies = document.cookie;
  results.done = true;
}
attack();
</script></body>"""


async def serve_tls(mongo, tmp_path, cert, key) -> RunningServer:
    """The real app over the server's own TLS (no lane: TLS connections go
    through Tornado), its workspace hosts under DOMAIN."""
    settings = app_settings(mongo, tmp_path, workspace_host_template=f"ws-{{user_id}}.{DOMAIN}", **NO_DOCKER)
    services = await Services(settings).start()
    app = make_app(services)
    sock, port = bind_unused_port()
    http = ProxyHTTPServer(app, ssl_options=server_context(cert, key), max_body_size=64 * 1024 * 1024)
    http.add_sockets([sock])
    return RunningServer(f"https://127.0.0.1:{port}", services, app, http)


async def running_workspace(server: RunningServer, user_id: int, port: int) -> None:
    await server.db.workspaces.insert_one({"_id": uuid.uuid4().hex, "owner_id": user_id, "state": "running",
                                           "port": port, "endpoint": {"host": "127.0.0.1", "port": port},
                                           "seq": 1, "progress": 100, "version": 1})


async def test_a_hostile_workspace_page_can_neither_read_frame_nor_poison_a_sibling(mongo, tmp_path):
    require_or_skip(CHROMIUM.exists(), f"Chromium ({CHROMIUM})")
    from playwright.async_api import async_playwright
    cert, key = wildcard_certificate(tmp_path)
    server = await serve_tls(mongo, tmp_path, cert, key)
    hostile = await Hostile().start()
    b_server, b_port, b_seen = await start_upstream()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, verify=False) as client:
            a, b, admin = await register(client), await register(client), await make_admin(server, client)
            await running_workspace(server, a["user"]["id"], hostile.port)
            await running_workspace(server, b["user"]["id"], b_port)
            port = server.url.rsplit(":", 1)[1]
            origin_b = f"https://ws-{b['user']['id']}.{DOMAIN}:{port}"
            hostile.answers["/"] = ok((ATTACK % {"b": origin_b, "domain": DOMAIN}).encode(),
                                      "Content-Type: text/html", f"Set-Cookie: tossed=1; Domain={DOMAIN}; Path=/")
            urls = {}
            for who in (b, a):
                answer = await client.post(f"/api/users/workspace/open/?user_id={who['user']['id']}",
                                           headers=auth(admin))
                urls[who["user"]["id"]] = answer.json()["url"]
        assert urls[b["user"]["id"]].startswith(origin_b + "/?ticket=")
        async with async_playwright() as playwright:
            chromium = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True,
                args=[*CHROMIUM_ARGS, f"--host-resolver-rules={RESOLVER_RULES}"])
            context = await chromium.new_context(ignore_https_errors=True)
            page = await context.new_page()
            await goto(page, urls[b["user"]["id"]])  # the admin opens B: its cookie on B's host
            assert "/?ticket" not in page.url and '"method": "GET"' in await page.content()
            opened = len(b_seen.requests)
            await goto(page, urls[a["user"]["id"]])  # then A's page, hostile
            await page.wait_for_function("() => window.results && window.results.done", timeout=20000)
            results: dict[str, Any] = await page.evaluate("() => window.results")
            await asyncio.sleep(0.5)
            reached = [r["uri"] for r in b_seen.requests[opened:] if r["uri"] != "/favicon.ico"]  # B's own, late
            assert reached == [], reached
            assert results["read"] == "blocked" and results["img"] == "error" and results["socket"] == "error"
            assert results["frame"] != "readable", results
            # B still opens for the admin: the junk cookie locks nobody out, the tossed one never arrives.
            await goto(page, origin_b + "/after")
            seen = next(r for r in b_seen.requests if r["uri"] == "/after")
            assert "tossed" not in str(seen["cookies"]), seen  # B's own cookie only
            assert "tossed" not in str(await context.cookies(origin_b))
            await chromium.close()
    finally:
        hostile.close()
        b_server.stop()
        await server.stop()
