"""A class starts: the full workspace image (WORKSPACE_IMAGE's default,
what ./scripts/run builds), a real `python server.py` process on a fresh
INSTANCE_NAME (its workspace network made by the burst itself), the real
Docker engine.

1. N students (default 30) create at once: `POST /api/users/workspace/create/`
   to the `running` event on the status WebSocket; p50, p95, max, failures.
2. Memory per idle workspace (no browser yet): `docker stats` of each
   container after they have settled (usage without the page cache).
3. B students (default 5) at once, each in a Chromium context of its own:
   create -> running -> the ticket URL opened through the proxy -> the VS Code
   workbench on screen -> a new integrated terminal -> `echo $((6*7))` shows
   42: a usable workbench; p50, p95. Then the memory of those workspaces
   with the workbench open.

    .venv/bin/python bench/bench_class_start.py [--students 30] [--browsers 5] [--idle 20]

The browsers run on the server's machine here (a real class's run on the
students' machines), so part 3 measures the server with that load on top.
Everything the script creates is removed at the end (by its INSTANCE_NAME).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from bench_workspaces import Server, cleanup, create_to_running, percentile, register

IMAGE = "apranova/workspace:latest"
CHROMIUM = "/usr/bin/chromium"
SETTINGS = {"WORKSPACE_IMAGE": IMAGE, "WORKSPACE_MEMORY": "1g", "WORKSPACE_CPUS": "1", "WORKSPACE_PIDS": "512",
            "WORKSPACE_READY_TIMEOUT": "240", "WORKSPACE_PORT_RANGE": "41300-41399"}


def memory_mib(instance: str, owners: list[int] | None = None) -> list[float]:
    """Each running workspace container's memory now (docker stats: usage
    minus the page cache), in MiB; only `owners`' when given."""
    names = subprocess.run(["docker", "ps", "--filter", f"label=apranova.instance={instance}", "--format",
                            "{{.Names}}"], capture_output=True, text=True).stdout.split()
    if owners is not None:
        names = [n for n in names if int(n.rsplit("-", 1)[1]) in owners]
    if not names:
        return []
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}", *names],
                         capture_output=True, text=True).stdout
    units = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "B": 1 / 1024 ** 2}
    values = []
    for line in out.splitlines():
        used = json.loads(line)["MemUsage"].split("/")[0].strip()
        unit = next(u for u in ("KiB", "MiB", "GiB", "B") if used.endswith(u))
        values.append(float(used[: -len(unit)]) * units[unit])
    return values


def print_failures(server: Server) -> None:
    """The operator's detail of each failed start, from the server's log (once each)."""
    log = Path(server.data) / "server.err"
    lines = [line for line in log.read_text(errors="replace").splitlines() if "failed (reference" in line]
    seen = getattr(server, "failures_shown", 0)
    for line in lines[seen:]:
        print("  failed:", line.split("): ", 1)[-1])
    server.failures_shown = len(lines)


def show_logs(instance: str, owners: list[int]) -> None:
    """The last lines a failed workspace's IDE printed (the engine keeps a
    failed container until its next start)."""
    for owner in owners:
        out = subprocess.run(["docker", "logs", "--tail", "8", f"{instance}-ws-{owner}"], capture_output=True,
                             text=True)
        print(f"  last lines of {instance}-ws-{owner}:", (out.stdout + out.stderr).strip()[-800:])


def stats(values: list[float], unit: str = "s") -> str:
    if not values:
        return "n=0"
    return (f"n={len(values)} p50={statistics.median(values):.1f} {unit} p95={percentile(values, 95):.1f} {unit} "
            f"max={max(values):.1f} {unit}")


async def new_terminal(page) -> None:
    """A new integrated terminal: the command palette, tried again when a
    busy workbench swallowed the keys."""
    for _ in range(5):
        await page.keyboard.press("Escape")
        await page.keyboard.press("F1")
        box = page.locator(".quick-input-widget input.input")
        try:
            await box.wait_for(timeout=5000)
            await box.fill(">Terminal: Create New Terminal")
            await page.locator(".quick-input-list .monaco-list-row",
                               has_text="Terminal: Create New Terminal").first.wait_for(timeout=10000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again
            continue
        await page.keyboard.press("Enter")
        await page.locator(".terminal-wrapper.active .xterm-rows").wait_for(timeout=30000)
        return
    await page.screenshot(path="/tmp/bench-terminal.png")
    raise RuntimeError("no terminal could be opened")


async def type_in_terminal(page, line: str, expect: str, timeout: float = 60) -> None:
    """`line` typed at a new terminal's prompt, until `expect` shows as a row of its own."""
    await new_terminal(page)
    rows = page.locator(".terminal-wrapper.active .xterm-rows > div")
    deadline, typed, text = time.monotonic() + timeout, 0.0, ""
    while time.monotonic() < deadline:
        text = "\n".join(await rows.all_inner_texts()).replace("\xa0", " ")
        if typed and any(row.strip() == expect for row in text.splitlines()):
            return
        if typed and time.monotonic() - typed > 5:  # a shell still starting read the line as empty: again
            typed = 0.0
        if not typed and "$" in text:
            typed = time.monotonic() if await type_line(page, rows, line) else 0.0
        await page.wait_for_timeout(200)
    await page.screenshot(path="/tmp/bench-terminal.png")
    raise RuntimeError(f"the terminal never showed {expect!r}: {text[-300:]!r}")


async def type_line(page, rows, line: str) -> bool:
    """Type `line` and Enter once the prompt shows all of it (keys typed
    while the terminal was still starting are lost: clear and type again)."""
    for _ in range(5):
        await page.locator(".terminal-wrapper.active .xterm").click()
        await page.keyboard.press("Control+U")
        await page.keyboard.type(line)
        await page.wait_for_timeout(300)
        shown = "".join(await rows.all_inner_texts()).replace("\xa0", " ").replace(" ", "")
        if shown.endswith(line.replace(" ", "")):
            await page.keyboard.press("Enter")
            return True
    return False


async def usable_workbench(server: Server, client: httpx.AsyncClient, browser, user: dict) -> float:
    """Seconds from Create to a command run in the workbench's terminal."""
    headers = {"Authorization": f"Bearer {user['access']}"}
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    started = time.perf_counter()
    await create_to_running(server, client, user)
    page = await context.new_page()
    page.set_default_timeout(180000)
    await page.goto((await client.post("/api/users/workspace/open/", headers=headers)).json()["url"])
    await page.locator(".monaco-workbench").wait_for()
    await type_in_terminal(page, "echo $((6*7))", "42")
    user["context"] = context  # kept open: the memory with a workbench open is read next
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--browsers", type=int, default=5)
    parser.add_argument("--idle", type=float, default=20, help="seconds the workspaces settle before part 2")
    parser.add_argument("--image", default=IMAGE, help=f"workspace image (default {IMAGE})")
    args = parser.parse_args()
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    instance = f"bench{uuid.uuid4().hex[:6]}"
    server = Server(instance, **{**SETTINGS, "WORKSPACE_IMAGE": args.image})
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
            users = [await register(client, "class") for _ in range(args.students)]
            results = await asyncio.gather(*[create_to_running(server, client, u) for u in users],
                                           return_exceptions=True)
            times = [r for r in results if isinstance(r, float)]
            failures = [str(r) for r in results if not isinstance(r, float)]
            print(f"{args.students} creates at once, create -> running: {stats(times)}; failures: {len(failures)}")
            print_failures(server)
            show_logs(instance, [u["user"]["id"] for u, r in zip(users, results) if not isinstance(r, float)][:1])
            await asyncio.sleep(args.idle)
            idle = memory_mib(instance)
            print(f"memory per idle workspace ({args.idle:g} s after the burst): {stats(idle, 'MiB')}, "
                  f"total {sum(idle) / 1024:.2f} GiB")
            await asyncio.gather(*[client.delete("/api/users/workspace/?purge=true",
                                                 headers={"Authorization": f"Bearer {u['access']}"}) for u in users])
            if args.browsers:
                await part_browsers(server, client, instance, args.browsers)
    finally:
        server.stop()
        cleanup(instance)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


async def part_browsers(server: Server, client: httpx.AsyncClient, instance: str, count: int) -> None:
    from playwright.async_api import async_playwright

    users = [await register(client, "ide") for _ in range(count)]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
        results = await asyncio.gather(*[usable_workbench(server, client, browser, u) for u in users],
                                       return_exceptions=True)
        times = [r for r in results if isinstance(r, float)]
        failures = [repr(r) for r in results if not isinstance(r, float)]
        print(f"{count} browsers at once, create -> usable workbench (a terminal command ran): {stats(times)}; "
              f"failures: {len(failures)} {failures[:3]}")
        print_failures(server)
        await asyncio.sleep(10)
        open_ = memory_mib(instance, [u["user"]["id"] for u in users])
        print(f"memory per workspace with its workbench open: {stats(open_, 'MiB')}")
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
