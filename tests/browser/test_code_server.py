"""The real code-server image end to end: the slim image that
workspace-image/build-offline.sh builds (scripts/test-env.sh builds it once
per machine), provisioned through the workspace API by the real app, then
used in Debian's Chromium like a student would: open it from the dashboard,
through the server's proxy on the workspace's own origin, see the
workbench with no login of code-server's own (behind the proxy it runs with
`--auth none`: WORKSPACE_IDE_PASSWORD=auto), run a command in the integrated terminal and
read its output (the terminal lives on WebSockets), save a file, change a
setting, stop and start the workspace through the API, and find both again.

The busybox stand-in stays for the fast lifecycle tests; this is the one
journey that catches regressions in the real image's behaviour (its auth
modes, uid 1000 owning the volume, ENTRYPOINT + CMD, WebSockets).
Screenshots go to test-artifacts/code-server-*.png.
"""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from typing import Any, AsyncIterator

import httpx
import pytest

from tests.support.app import ARTIFACTS, auth, require_or_skip
from tests.support.browser import student_tab
from tests.support.workspaces import docker, wait_for_state

# Every test here starts the real code-server image on the Docker engine.
pytestmark = pytest.mark.docker

CODE_SERVER_IMAGE = os.environ.get("WORKSPACE_CODE_SERVER_IMAGE", "apranova/workspace-slim:latest")
HOME = "/home/coder"
MARK = "apranova-e2e"
# A setting that changes nothing on screen (the font size would reflow the
# terminal the test reads).
SETTING = "files.autoSaveDelay"
SHOW_SETTING = f"grep -h {SETTING} {HOME}/.local/share/code-server/User/settings.json"


@pytest.fixture
async def ide_server(servers) -> Any:
    """The app provisioning the real image: code-server needs more memory,
    processes and start-up time than the stand-in."""
    require_or_skip(bool(docker("image", "ls", "-q", CODE_SERVER_IMAGE, check=False)),
                    f"code-server image {CODE_SERVER_IMAGE} (run workspace-image/build-offline.sh --slim)")
    return await servers.start(workspace_image=CODE_SERVER_IMAGE, workspace_memory="1g", workspace_pids="512",
                               workspace_cpus="1", workspace_ready_timeout="120", workspace_wait_timeout="150")


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"code-server-{name}.png"))


# -- reaching the IDE: as a student does, from the dashboard, through the server's
# proxy on the workspace's own origin (ws-<id>.localhost: Chromium resolves it to
# loopback); code-server asks for no password of its own behind the proxy -----------
async def open_ide(tab: Any, user_id: int) -> Any:
    """Click "Open the IDE" on the dashboard (a one-time ticket URL in a new
    tab); returns the IDE's page once the VS Code workbench is on screen,
    having checked that code-server showed no login page on the way."""
    link = tab.page.get_by_role("link", name="Open the IDE")
    await link.wait_for(timeout=150000)
    assert await tab.page.locator("#ws-password-field").is_hidden()  # nothing to type: no password shown
    async with tab.context.expect_page() as opened:
        await link.click()
    page = await opened.value
    page.set_default_timeout(30000)
    await page.wait_for_url(re.compile(rf"^http://ws-{user_id}\.localhost:\d+/"), timeout=60000)
    password = page.locator("input[type=password]")
    workbench = page.locator(".monaco-workbench")
    await password.or_(workbench).first.wait_for(timeout=60000)
    assert not await password.is_visible(), "code-server asked for a password behind the proxy"
    await workbench.wait_for(timeout=60000)
    assert "/login" not in page.url
    return page


# -- driving VS Code -------------------------------------------------------------------
async def command(page: Any, name: str) -> None:
    """Run a command from the command palette."""
    await page.keyboard.press("F1")
    box = page.locator(".quick-input-widget input.input")
    await box.wait_for()
    await box.fill(f">{name}")
    await page.locator(".quick-input-list .monaco-list-row", has_text=name).first.wait_for()
    await page.keyboard.press("Enter")


async def terminal_run(page: Any, line: str, expect: str, timeout: float = 30) -> str:
    """Type a command into the integrated terminal and wait for `expect`
    (a regular expression) in what the terminal shows."""
    terminal = page.locator(".terminal-wrapper.active .xterm")
    # The Settings editor takes the focus back once its write lands (later on a
    # loaded machine), even in the middle of typing: type the line, check that
    # the prompt shows all of it, else take the focus again, clear the line
    # (Ctrl+U) and type it again.
    for _ in range(5):
        await focus_terminal(page, terminal)
        await page.keyboard.press("Control+U")
        await page.keyboard.type(line)
        if await prompt_shows(page, line):
            break
    await page.keyboard.press("Enter")
    deadline = time.monotonic() + timeout
    while True:
        text = await terminal_text(page)
        if re.search(expect, text):
            return text
        if time.monotonic() > deadline:
            await shot(page, "terminal-timeout")  # what the IDE showed instead
            raise AssertionError(f"terminal never showed {expect!r}: {text[-500:]!r}")
        await page.wait_for_timeout(200)


async def focus_terminal(page: Any, terminal: Any) -> None:
    for _ in range(50):
        await terminal.click()
        if await page.locator(".terminal-wrapper.active .xterm.focus").count():
            return
        await page.wait_for_timeout(200)


async def prompt_shows(page: Any, line: str, timeout: float = 3) -> bool:
    """The terminal's last line ends with `line` (rows joined: a long line wraps)."""
    wanted = line.replace(" ", "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await terminal_text(page)).replace("\n", "").replace(" ", "").endswith(wanted):
            return True
        await page.wait_for_timeout(100)
    return False


async def terminal_text(page: Any) -> str:
    # The DOM renderer (headless Chromium has no GPU for the WebGL one) keeps
    # one element per row.
    rows = page.locator(".terminal-wrapper.active .xterm-rows > div")
    return "\n".join(await rows.all_inner_texts()).replace("\xa0", " ")


async def open_terminal(page: Any) -> None:
    """A new integrated terminal, once its shell prompt shows."""
    await command(page, "Terminal: Create New Terminal")
    await page.locator(".terminal-wrapper.active .xterm-rows").wait_for()
    deadline = time.monotonic() + 60
    while "$" not in await terminal_text(page):
        assert time.monotonic() < deadline, "no shell prompt in the terminal"
        await page.wait_for_timeout(200)


async def save_new_file(page: Any, name: str, content: str) -> None:
    """Create a file with the Explorer's New File action, type into it and
    save it with Ctrl+S."""
    header = page.locator(".pane-header", has=page.locator('a[aria-label="New File..."]')).first
    await header.hover()  # the view's actions show on hover
    await header.locator('a[aria-label="New File..."]').click()
    await page.locator(".explorer-viewlet .monaco-inputbox input").wait_for()
    await page.keyboard.type(name)
    await page.keyboard.press("Enter")
    await page.locator(".editor-group-container.active .monaco-editor.focused").wait_for()
    await page.keyboard.type(content)
    await page.keyboard.press("Control+s")
    await page.locator(".editor-group-container.active .tab.dirty").wait_for(state="detached")


async def set_number_setting(page: Any, key: str, value: int) -> None:
    """Change a number setting in the Settings editor (User scope: the User
    settings.json in the home)."""
    await command(page, "Preferences: Open User Settings")
    await page.locator(".settings-editor .suggest-input-container").wait_for()
    await page.keyboard.type(key)  # the search box has the focus
    await page.locator(".settings-editor .settings-count-widget", has_text="1 Setting Found").wait_for()
    field = page.locator(".settings-editor .setting-item-number input").first
    await field.fill(str(value))
    await page.keyboard.press("Tab")  # the value is written when the field loses focus
    await page.locator(".settings-editor .setting-item-number .setting-item-modified-indicator").first.wait_for()


@pytest.mark.browser
async def test_code_server_journey(ide_server, open_tab) -> None:  # noqa: F811
    tab, student = await student_tab(ide_server, open_tab)
    uid, headers = student["user"]["id"], auth(student)
    async with httpx.AsyncClient(base_url=ide_server.url, timeout=60) as api:
        created_at = time.monotonic()
        await tab.page.get_by_role("button", name="Open my workspace").click()
        workspace = await wait_for_state(api, headers, {"running"}, timeout=150)
        # Behind the proxy the IDE has no password: the field is there, empty.
        assert workspace["password"] == "" and workspace["url"].split("?ticket=")[0] == f"http://ws-{uid}.localhost:8000/"
        assert _ide_runs_without_password(ide_server)

        page = await open_ide(tab, uid)
        print(f"create -> workbench visible: {time.monotonic() - created_at:.1f} s")
        await shot(page, "workbench")

        await open_terminal(page)  # keys and output travel over code-server's WebSockets, through the proxy
        # The output, not the echoed command line, has the values: the image's
        # user (never root) in its home.
        await terminal_run(page, 'echo "uid=$(id -u) home=$HOME sum=$((6*7))"', rf"uid=1000 home={HOME} sum=42")
        await shot(page, "terminal")

        await save_new_file(page, "notes.txt", f"{MARK} saved in the editor")
        await set_number_setting(page, SETTING, 2345)
        await terminal_run(page, 'echo "[$(cat ~/project/notes.txt)]"', rf"\[{MARK} saved in the editor\]")
        await terminal_run(page, SHOW_SETTING, rf'"{SETTING}":\s*2345')
        await shot(page, "saved")
        await page.close()

        assert (await api.post("/api/users/workspace/stop/", headers=headers)).status_code == 200
        await wait_for_state(api, headers, {"stopped"}, timeout=60)
        assert (await api.post("/api/users/workspace/create/", headers=headers)).status_code in (200, 201)
        workspace = await wait_for_state(api, headers, {"running"}, timeout=150)

    assert _home_is_the_volume(ide_server)
    page = await open_ide(tab, uid)
    await open_terminal(page)
    await terminal_run(page, 'echo "[$(cat ~/project/notes.txt)]"', rf"\[{MARK} saved in the editor\]")
    await terminal_run(page, SHOW_SETTING, rf'"{SETTING}":\s*2345')
    await shot(page, "restarted")


def _ide_runs_without_password(server: Any) -> bool:
    """The container runs the image's command with `--auth none`, and no
    PASSWORD in its environment."""
    name = server.services.settings.instance_name
    ids = docker("ps", "-q", "--filter", f"label=apranova.instance={name}").split()
    cmd = docker("inspect", "-f", "{{json .Config.Cmd}}", *ids)
    env = docker("inspect", "-f", "{{json .Config.Env}}", *ids)
    return '"--auth","none"' in cmd and "PASSWORD=" not in env


def test_only_the_auth_value_of_the_ide_command_changes() -> None:
    from services.settings import without_ide_password
    image = ["--bind-addr", "0.0.0.0:8080", "--auth", "password", "--disable-telemetry", "/home/coder/project"]
    assert without_ide_password(image) == ["--bind-addr", "0.0.0.0:8080", "--auth", "none", "--disable-telemetry",
                                           "/home/coder/project"]
    assert without_ide_password(["--auth=password", "x"]) == ["--auth=none", "x"]
    stand_in = ["/bin/busybox", "httpd", "-f", "-p", "8080"]  # not code-server: kept as it is
    assert without_ide_password(stand_in) == stand_in


def _home_is_the_volume(server: Any) -> bool:
    name = server.services.settings.instance_name
    ids = docker("ps", "-q", "--filter", f"label=apranova.instance={name}").split()
    mounts = docker("inspect", "-f", "{{range .Mounts}}{{.Destination}} {{end}}", *ids).split()
    return HOME in mounts


# -- the image alone: the user, the home volume, password auth -------------------------
class Container:
    """One container of the code-server image, run the way the server runs
    workspaces (uid 1000, every capability dropped, no-new-privileges), with
    this test's label so that it is always removed."""

    def __init__(self, label: str, home: list[str]):
        self.id = docker("run", "-d", "--label", label, "--user", "1000:1000", "--cap-drop", "ALL",
                         "--security-opt", "no-new-privileges", "-e", "PASSWORD=pw-e2e", "-p", "127.0.0.1::8080",
                         *home, CODE_SERVER_IMAGE)

    @property
    def url(self) -> str:
        return "http://" + docker("port", self.id, "8080/tcp").splitlines()[0]

    def sh(self, script: str) -> str:
        return docker("exec", self.id, "sh", "-c", script)

    async def healthy(self, timeout: float = 60) -> None:
        """Wait for code-server's /healthz (no password needed)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            state = docker("inspect", "-f", "{{.State.Status}}", self.id)
            assert state == "running" and time.monotonic() < deadline, \
                f"code-server never answered ({state}): {docker('logs', self.id, check=False)}"
            await asyncio.sleep(0.3)


@pytest.fixture
def label(servers) -> AsyncIterator[str]:
    """A label of this test's own; its containers and volumes go at the end."""
    yield f"apranova.instance={servers.instance}"


async def test_image_home_volume_and_password(label) -> None:
    require_or_skip(bool(docker("image", "ls", "-q", CODE_SERVER_IMAGE, check=False)),
                    f"code-server image {CODE_SERVER_IMAGE} (run workspace-image/build-offline.sh --slim)")
    volume = docker("volume", "create", "--label", label)
    home = ["--mount", f"type=volume,source={volume},target={HOME}"]

    # A new volume (Docker copies the image's home into it): code-server runs
    # as coder and the entrypoint makes what the IDE needs.
    first = Container(label, home)
    await first.healthy()
    # One code-server process (workspace-image/one-process.js), not code-server's parent and child.
    nodes = [line for line in first.sh("ps -eo args").splitlines() if line.split()[0].endswith("/node")]
    assert len(nodes) == 1 and "one-process.js" in nodes[0], nodes
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
        assert first.sh("id -u; id -g; stat -c %u:%g ~ ~/project") == "1000\n1000\n1000:1000\n1000:1000"
        assert '"security.workspace.trust.enabled": false' in first.sh(
            "cat ~/.local/share/code-server/User/settings.json")
        # Password auth: nothing but /healthz and the login page without it.
        response = await client.get("/")
        assert response.status_code == 302 and "login" in response.headers["location"]
        assert (await client.post("/login", data={"password": "wrong"})).status_code != 302
        response = await client.post("/login", data={"password": "pw-e2e"})
        assert response.status_code == 302 and response.cookies
    first.sh("echo '{\"editor.fontSize\": 19}' > ~/.local/share/code-server/User/settings.json;"
             " echo '[user]' > ~/.gitconfig; echo kept > ~/project/kept.txt")
    # A stop is a clean exit (dumb-init hands SIGTERM to code-server), well within Docker's 10 s.
    started = time.monotonic()
    docker("stop", first.id)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", first.id) == "0" and time.monotonic() - started < 8
    docker("rm", "-f", first.id)
    # What is not a server start goes to code-server's own entry, unchanged.
    assert "with Code" in docker("run", "--rm", "--label", label, CODE_SERVER_IMAGE, "--version")

    # The next container on the same volume finds everything, untouched.
    second = Container(label, home)
    await second.healthy()
    assert second.sh("cat ~/project/kept.txt ~/.gitconfig ~/.local/share/code-server/User/settings.json") \
        == 'kept\n[user]\n{"editor.fontSize": 19}'

    # An empty home given to 1000:1000 (a volume the server chowned).
    empty = Container(label, ["--tmpfs", f"{HOME}:uid=1000,gid=1000,mode=0755,exec"])
    await empty.healthy()
    made = "~/project ~/.config/code-server ~/.local/share/code-server/User/settings.json ~/.bashrc ~/.profile"
    assert empty.sh(f"stat -c %U {made}").split() == ["coder"] * 5

    # A home uid 1000 cannot write: a clear message, not a crash loop.
    locked = Container(label, ["--tmpfs", f"{HOME}:mode=0755"])
    assert docker("wait", locked.id) == "70"
    logs = subprocess.run(["docker", "logs", locked.id], capture_output=True, text=True, timeout=30).stderr
    assert f"{HOME} is not writable by uid 1000" in logs
