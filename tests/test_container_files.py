"""Static checks of the Dockerfile and docker-compose.yml (no registry is
reachable here, so the image cannot be built in CI): hadolint-like rules,
every COPY source exists, the CMD runs, and compose wires the server to a
real MongoDB and the Docker socket."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import yaml

from services.settings import declared
from tests.support.app import ROOT


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def of(kind: str) -> list[str]:
    return [args for keyword, args in instructions() if keyword == kind]


def test_base_image_is_a_pinned_slim_python():
    (base,) = of("FROM")
    image, _, tag = base.partition(":")
    assert image == "python" and "slim" in tag
    assert re.match(r"\d+\.\d+\.\d+-slim", tag), "pin the full version (hadolint DL3006/DL3007)"


def test_runs_as_a_non_root_user():
    users = of("USER")
    assert users and users[-1] not in ("root", "0"), "the last USER must not be root (DL3002)"
    (run,) = [r for r in of("RUN") if "useradd" in r]
    assert users[-1] in run


def test_every_copy_source_exists_and_nothing_is_fetched_by_add():
    assert not [a for a in of("ADD") if re.search(r"https?://", a)], "no ADD of URLs (DL3020)"
    copies = of("COPY")
    assert copies
    for args in copies:
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"


def test_healthcheck_probes_ready():
    (check,) = of("HEALTHCHECK")
    assert "/ready" in check and "CMD" in check
    assert "curl" not in check and "wget" not in check  # neither is in the slim image


def test_settings_come_from_the_environment_and_data_is_a_volume():
    env = " ".join(of("ENV"))
    names = {s.name for s in declared()}  # the server's and the built-in backends'
    assigned = set(re.findall(r"\b([A-Z_]+)=", env))
    assert {"HOST", "PORT", "DATA_DIR"} <= assigned and assigned - {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
                                                                    "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"} <= names
    assert "JWT_SECRET" not in env, "no secret baked into the image"
    (volume,) = of("VOLUME")
    data_dir = re.search(r"DATA_DIR=(\S+)", env).group(1)
    assert data_dir in json.loads(volume)


def test_pip_installs_pinned_dependencies_without_cache():
    (install,) = [r for r in of("RUN") if "pip install" in r]
    assert "pip install ." in install  # the pins of setup.cfg
    assert "PIP_NO_CACHE_DIR=1" in " ".join(of("ENV"))


def test_the_cmd_runs():
    (cmd,) = of("CMD")
    argv = json.loads(cmd)  # exec form: signals reach the server (SIGTERM drain)
    assert argv[0] == "python" and (ROOT / argv[1]).exists()
    result = subprocess.run([sys.executable, *argv[1:], "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--mongodb-uri" in result.stdout


def test_the_healthcheck_command_is_valid_python():
    (check,) = of("HEALTHCHECK")
    argv = json.loads(check[check.index("CMD") + 3:].strip())
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<healthcheck>", "exec")


def test_compose_runs_server_with_mongodb_and_the_docker_socket():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    server, mongo = services["server"], services["mongo"]
    assert server["build"]["dockerfile"] == "Dockerfile" and (ROOT / server["build"]["dockerfile"]).exists()
    image, _, tag = mongo["image"].partition(":")
    assert image == "mongo" and re.match(r"\d+\.\d+", tag)
    env = server["environment"]
    assert env["MONGODB_URI"].startswith("mongodb://mongo:")
    assert env["RATE_LIMIT_STORAGE"] == "mongodb"
    assert set(env) <= {s.name for s in declared()}, "compose sets only real settings"
    assert "/var/run/docker.sock:/var/run/docker.sock" in server["volumes"]
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert "mongo" in server["depends_on"]
    assert any(v.endswith(":/data") for v in server["volumes"])
