"""Time from create to a usable workbench with the real code-server image
(the slim one workspace-image/build-offline.sh --slim builds), against a real
`python server.py` process and the real Docker engine, in Debian's Chromium.

Per round, a new student (an empty volume: code-server's first start):
  create -> running: `POST /api/users/workspace/create/` to the `running`
    event (the readiness probe got an HTTP answer);
  running -> workbench: `POST /api/users/workspace/open/` (the one-time
    ticket URL the dashboard's "Open the IDE" opens), open it in Chromium
    (through the proxy on ws-<id>.localhost), until the VS Code workbench
    (`.monaco-workbench`) is on screen; behind the proxy code-server asks for
    no password (WORKSPACE_IDE_PASSWORD=auto), else it is typed in;
  create -> workbench: the sum, what a student waits.
Then the same student's workspace is stopped and started again (a warm
volume) and measured the same way.

    .venv/bin/python bench/bench_code_server.py [--rounds 3]

Everything the script creates is removed at the end (by its INSTANCE_NAME).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import httpx

from bench_workspaces import Server, cleanup, create_to_running, register

IMAGE = os.environ.get("WORKSPACE_CODE_SERVER_IMAGE", "apranova/workspace-slim:latest")
CHROMIUM = "/usr/bin/chromium"


async def workbench(browser, client: httpx.AsyncClient, headers: dict, password: str) -> float:
    """Seconds from asking for the IDE's ticket URL (the dashboard's click) to
    the workbench on screen."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        started = time.perf_counter()
        url = (await client.post("/api/users/workspace/open/", headers=headers)).json()["url"]
        await page.goto(url)
        box, bench = page.locator("input[type=password]"), page.locator(".monaco-workbench")
        await box.or_(bench).first.wait_for(timeout=120000)
        if password and await box.is_visible():  # WORKSPACE_IDE_PASSWORD=always: code-server's own login too
            await box.fill(password)
            await page.keyboard.press("Enter")
        await bench.wait_for(timeout=120000)
        return time.perf_counter() - started
    finally:
        await context.close()


async def measure(server: Server, client: httpx.AsyncClient, browser, user: dict) -> tuple[float, float]:
    running = await create_to_running(server, client, user)
    headers = {"Authorization": f"Bearer {user['access']}"}
    workspace = (await client.get("/api/users/workspace/", headers=headers)).json()
    return running, await workbench(browser, client, headers, workspace["password"])


def summary(name: str, rows: list[tuple[float, float]]) -> None:
    for label, values in (("create -> running", [r for r, _ in rows]), ("running -> workbench", [w for _, w in rows]),
                          ("create -> workbench", [r + w for r, w in rows])):
        print(f"{name:>6} {label:<22} n={len(values)} median {statistics.median(values):5.2f} s  "
              f"min {min(values):5.2f} s  max {max(values):5.2f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from playwright.async_api import async_playwright

    instance = f"bench{uuid.uuid4().hex[:6]}"
    server = Server(instance, WORKSPACE_IMAGE=IMAGE, WORKSPACE_PORT_RANGE="41200-41299", WORKSPACE_MEMORY="1g",
                    WORKSPACE_CPUS="1", WORKSPACE_PIDS="512", WORKSPACE_READY_TIMEOUT="120")
    first, again = [], []
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=180) as client, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                       args=["--no-sandbox", "--disable-gpu"])
            for _ in range(args.rounds):
                user = await register(client, "ide")
                headers = {"Authorization": f"Bearer {user['access']}"}
                first.append(await measure(server, client, browser, user))
                await client.post("/api/users/workspace/stop/", headers=headers)
                again.append(await measure(server, client, browser, user))
                await client.delete("/api/users/workspace/?purge=true", headers=headers)
            await browser.close()
    finally:
        server.stop()
        cleanup(instance)
    print(f"image {IMAGE}")
    summary("new", first)
    summary("again", again)


if __name__ == "__main__":
    asyncio.run(main())
