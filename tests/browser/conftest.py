from __future__ import annotations

import random
from typing import Any, AsyncIterator

import httpx
import pytest
from tornado import web

from tests.support.app import docker_available, require_or_skip
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, Tab
from tests.support.workspaces import TEST_IMAGE, WorkspaceServers, containers_of, docker, ensure_test_image
from tests.support.fake_server import close, listen
from tests.support.browser import PageHandler


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    require_or_skip(CHROMIUM.exists(), f"Chromium ({CHROMIUM})")
    from playwright.async_api import async_playwright
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                    args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def open_tab(browser, request) -> AsyncIterator[Any]:
    """Factory of tabs; at the end each page's last state is saved as
    browser-<test>-end.png (what a failing test saw)."""
    contexts: list[Tab] = []

    async def open_tab(base: str, viewport: dict = DESKTOP, **options: Any) -> Tab:
        context = await browser.new_context(viewport=viewport, **options)
        context.set_default_timeout(15000)
        tab = Tab(context, await context.new_page(), base)
        contexts.append(tab)
        return tab

    yield open_tab
    for index, tab in enumerate(contexts):
        try:
            await tab.shot(f"{request.node.name.removeprefix('test_')}-end{index or ''}")
        finally:
            await tab.context.close()
    for tab in contexts:
        assert not tab.errors, f"uncaught errors in the page: {tab.errors}"


@pytest.fixture
async def app(start_server) -> Any:
    """The app with its own INSTANCE_NAME (its workspace watcher never
    touches another test's containers)."""
    return await start_server(instance_name=f"brw{random.randrange(16**8):08x}")


@pytest.fixture
async def api(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        yield client


@pytest.fixture
async def docker_servers(mongo, tmp_path) -> AsyncIterator[WorkspaceServers]:
    """Workspace-enabled servers: own INSTANCE_NAME, own host-port slice
    (40000-44999, apart from the workspace tests' 20000-32749); every
    container and volume they made is removed at the end."""
    require_or_skip(docker_available(), "Docker engine")
    ensure_test_image()
    require_or_skip(bool(docker("image", "ls", "-q", TEST_IMAGE, check=False)), f"test image {TEST_IMAGE}")
    manager = WorkspaceServers(mongo, tmp_path)
    manager.instance = "brw" + manager.instance[3:]
    base = random.randrange(40000, 45000, 20)
    manager.port_range = f"{base}-{base + 19}"
    try:
        yield manager
    finally:
        await manager.close()
        assert containers_of(manager.instance) == []


@pytest.fixture
async def page_origin() -> AsyncIterator[str]:
    """A page on another origin: `localhost` and its own port, while the API
    is on 127.0.0.1 (another host and port: cross-origin both ways)."""
    http, url = listen(web.Application([(r"/", PageHandler)]))
    yield url.replace("127.0.0.1", "localhost")
    await close(http)
