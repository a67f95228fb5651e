from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from tornado import web

from tests.support.app import ARTIFACTS, register, unique_email

CHROMIUM = Path("/usr/bin/chromium")


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


DESKTOP = {"width": 1280, "height": 900}


PHONE = {"width": 375, "height": 740}


PASSWORD = "Correct-Horse-42"


# The test image's web server, started only after a pause: provisioning then
# sits at "Waiting for the IDE to answer" long enough to reload in the middle.
SLOW_START = "/bin/busybox sh -c '/bin/busybox sleep 4; exec /bin/busybox httpd -f -p 8080 -h /www'"


EXITS_AT_ONCE = "/bin/busybox false"


class Tab:
    """One browser context and page, with the page's uncaught errors kept
    (every test ends by asserting there were none)."""

    def __init__(self, context: Any, page: Any, base: str):
        self.context, self.page, self.base = context, page, base
        self.errors: list[str] = []
        self.sockets: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("websocket", lambda socket: self.sockets.append(socket.url))

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base + path)

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"browser-{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def storage(self) -> dict[str, dict[str, str]]:
        return await self.page.evaluate(
            "() => ({session: {...sessionStorage}, local: {...localStorage}})")

    async def assert_fits_width(self) -> None:
        width = await self.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= self.page.viewport_size["width"], f"horizontal overflow: {width}px"


async def log_in(tab: Tab, email: str, role: str = "student", password: str = PASSWORD) -> None:
    await tab.goto("/login")
    await tab.page.get_by_label("Email").fill(email)
    await tab.page.get_by_label("Password", exact=True).fill(password)
    await tab.page.get_by_label(role.capitalize() if role != "superadmin" else "Super admin", exact=True).check()
    await tab.page.get_by_role("button", name="Log in").click()
    await tab.page.wait_for_url(f"**/{role}/dashboard")


async def fill_sign_up(tab: Tab, name: str, email: str, confirm: str = PASSWORD) -> None:
    """Opens /signup and fills in the name, the email and both passwords."""
    await tab.goto("/signup")
    await tab.page.get_by_label("Full name").fill(name)
    await tab.page.get_by_label("Email").fill(email)
    await tab.page.get_by_label("Password", exact=True).fill(PASSWORD)
    await tab.page.get_by_label("Confirm password").fill(confirm)


async def progress(tab: Tab) -> int:
    return int(await tab.page.get_attribute("#ws-progress", "aria-valuenow"))


async def shown_seqs(tab: Tab) -> list[int]:
    return [int(seq) for seq in await tab.page.eval_on_selector_all("#ws-log li", "els => els.map(e => e.dataset.seq)")]


async def shown_seqs_end_at(tab: Tab, seq: int) -> bool:
    shown = await shown_seqs(tab)
    return bool(shown) and shown[-1] >= seq


async def wait_until_async(predicate: Any, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_until(predicate: Any, timeout: float = 20, what: str = "condition") -> None:
    """Poll a plain predicate (the page and the server share this loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def student_tab(server: Any, open_tab: Any, viewport: dict = DESKTOP, **options: Any) -> tuple[Tab, dict]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        user = await register(client, email=unique_email("ws"), password=PASSWORD, name="Linus Student")
    tab = await open_tab(server.url, viewport=viewport, **options)
    await log_in(tab, user["user"]["email"])
    await tab.page.locator("#workspace").wait_for()
    return tab, user


FETCH = """
async ([method, url, body, token, credentials]) => {
  const headers = {"Content-Type": "application/json"};
  if (token) headers.Authorization = "Bearer " + token;
  try {
    const response = await fetch(url, {method, credentials, headers,
                                       body: body === null ? undefined : JSON.stringify(body)});
    return {status: response.status, data: await response.json()};
  } catch (error) {
    return {status: 0, error: String(error)};
  }
}
"""


async def open_page(browser: Any, url: str) -> Any:  # noqa: F811
    context = await browser.new_context()
    context.set_default_timeout(15000)
    page = await context.new_page()
    await page.goto(url + "/")
    return page


PAGE = "<!doctype html><title>other origin</title><p>client"


class PageHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.write(PAGE)


# The axios adapter's XHR: its default Accept, JSON Content-Type on bodies,
# and withCredentials set before send; resolves with {status, data}.
XHR_REQUEST = """(method, url, body, token) => new Promise((resolve) => {
  const xhr = new XMLHttpRequest();
  xhr.open(method, url, true);
  xhr.withCredentials = true;
  xhr.setRequestHeader("Accept", "application/json, text/plain, */*");
  if (body !== null) xhr.setRequestHeader("Content-Type", "application/json");
  if (token) xhr.setRequestHeader("Authorization", "Bearer " + token);
  xhr.onload = () => resolve({status: xhr.status, data: JSON.parse(xhr.responseText),
                              requestId: xhr.getResponseHeader("X-Request-Id")});
  xhr.onerror = () => resolve({status: 0, error: "network error"});
  xhr.send(body === null ? null : JSON.stringify(body));
})"""
