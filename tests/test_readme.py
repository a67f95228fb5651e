"""The README's promises: its settings table matches the code, and its curl
examples work verbatim against a running server."""
import asyncio
import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.app import ROOT

README = ROOT / "README.md"


def test_settings_table_in_readme_is_current():
    readme = README.read_text()
    match = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", readme, re.S)
    assert match, "README lost its settings table markers"
    generated = subprocess.run([sys.executable, "server.py", "settings-table"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    assert match.group(1).strip() == generated, "regenerate with: python server.py settings-table"


def curl_examples() -> str:
    section = README.read_text().split("## Try it with curl", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def json_values(text: str) -> list:
    """The JSON bodies curl printed back to back (they end in no newline)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


@pytest.mark.docker
async def test_curl_examples_work_verbatim(servers):
    """Runs the README's curl block unchanged but for the server's address;
    a wrapper records every HTTP status curl saw. Run twice: the second
    registration is refused (the email is taken) and the rest still works."""
    assert shutil.which("curl"), "curl is needed (scripts/test-env.sh installs it)"
    server = await servers.start()
    block = curl_examples().replace("http://localhost:8000", server.url)
    wrapper = "curl() { command curl -w '%{stderr}STATUS %{http_code} %{method} %{url_effective}\\n' \"$@\"; }\n"
    for run in (1, 2):
        process = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", wrapper + block,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, err.decode()
        statuses = [line.split(" ", 3)[1:] for line in err.decode().splitlines() if line.startswith("STATUS ")]
        paths = [(method, url.removeprefix(server.url)) for _, method, url in statuses]
        assert paths == [("POST", "/api/auth/registration/"), ("POST", "/api/users/login/"),
                         ("POST", "/api/users/login/"), ("GET", "/api/users/profile/"),
                         ("PATCH", "/api/users/profile/"), ("POST", "/api/users/check-email/"),
                         ("POST", "/api/auth/token/refresh/"), ("POST", "/api/users/workspace/create/"),
                         ("GET", "/api/users/workspace/"), ("POST", "/api/users/logout/")]
        codes = [int(code) for code, _, _ in statuses]
        expected_first = 201 if run == 1 else 400
        assert codes == [expected_first, 200, 200, 200, 200, 200, 200, 201 if run == 1 else 200, 200, 200], \
            out.decode()
        replies = json_values(out.decode())
        assert {"message": "Logout successful"} in replies
        assert any(reply.get("state") == "running" for reply in replies)
