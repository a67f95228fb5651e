"""Each backend declares the settings it alone reads (a class attribute
`SETTINGS`): they are parsed once with the server's, refused with a clear
message, and listed by --help and the README's table. A 'module:Class'
backend (this module's ExtraBackend) can add one. Seconds are finite
numbers: nan and inf are refused."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services import settings as settings_mod
from services.setting_parsers import number
from services.settings import Setting, SettingsError
from services.workspaces.docker.backend import DockerBackend

ROOT = Path(__file__).resolve().parent.parent
EXTRA = "tests.test_backend_settings:ExtraBackend"


class ExtraBackend(DockerBackend):
    """A third-party engine: Docker's settings (inherited) and one of its own."""
    SETTINGS = DockerBackend.SETTINGS + [
        Setting("EXTRA_DRAIN_SECONDS", "7", "Seconds the extra engine drains a node.", number, group="extra"),
        Setting("EXTRA_TOKEN", "", "The extra engine's API token.", secret=True, group="extra")]


@pytest.mark.parametrize("name", ["proxy_idle_timeout", "proxy_connect_timeout", "proxy_cookie_hours",
                                  "workspace_ready_timeout", "workspace_idle_timeout", "shutdown_timeout",
                                  "oauth_timeout", "smtp_timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_seconds_are_finite_numbers(name, value):
    with pytest.raises(SettingsError) as raised:
        settings_mod.load(environ={name.upper(): value})
    assert str(raised.value).startswith(f"{name.upper()}:") and "a number" in str(raised.value)


def test_proxy_counts_are_whole_numbers():
    for name in ("PROXY_MAX_BODY_BYTES", "PROXY_TICKET_SECONDS"):
        with pytest.raises(SettingsError, match=name):
            settings_mod.load(environ={name: "1e400"})


def test_a_module_backend_adds_its_own_setting_parsed_once_and_checked():
    settings = settings_mod.load(environ={"WORKSPACE_BACKEND": EXTRA, "EXTRA_DRAIN_SECONDS": "2.5",
                                          "EXTRA_TOKEN": "s3cret-token"})
    assert settings.extra_drain_seconds == 2.5 and settings.docker_host == ""
    assert "s3cret-token" not in repr(settings)  # a backend's secret is masked like the server's
    with pytest.raises(SettingsError, match="^EXTRA_DRAIN_SECONDS: must be a number"):
        settings_mod.load(environ={"WORKSPACE_BACKEND": EXTRA, "EXTRA_DRAIN_SECONDS": "inf"})
    # Not its backend: the setting is not one of this server's.
    assert not hasattr(settings_mod.load(environ={}), "extra_drain_seconds")


def test_an_unloadable_backend_is_refused_at_load():
    with pytest.raises(SettingsError, match="WORKSPACE_BACKEND 'nowhere:Nothing' cannot be loaded"):
        settings_mod.load(environ={"WORKSPACE_BACKEND": "nowhere:Nothing"})


def test_help_and_table_list_the_backends_settings():
    env = {**os.environ, "WORKSPACE_BACKEND": EXTRA, "PYTHONPATH": str(ROOT)}
    shown = subprocess.run([sys.executable, "server.py", "--help"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "--extra-drain-seconds" in shown.stdout and "--docker-host" in shown.stdout
    table = settings_mod.settings_table()
    docker_rows = [row for row in table.splitlines() if row.startswith(("| `DOCKER_HOST`", "| `WORKSPACE_PORT_RANGE`"))]
    assert len(docker_rows) == 2  # declared by the Docker backend, listed once
    assert "EXTRA_DRAIN_SECONDS" not in table  # the README lists the built-in backends only


def test_a_bad_backend_still_has_help_and_serving_says_what_is_wrong():
    env = {**os.environ, "WORKSPACE_BACKEND": "nowhere:Nothing", "PYTHONPATH": str(ROOT)}
    shown = subprocess.run([sys.executable, "server.py", "--help"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "--docker-host" in shown.stdout, shown.stderr
    served = subprocess.run([sys.executable, "server.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert served.returncode != 0 and "WORKSPACE_BACKEND 'nowhere:Nothing' cannot be loaded" in served.stderr
    assert "Traceback" not in served.stderr


@pytest.mark.parametrize("environ, words", [
    ({"WORKSPACE_EXPOSURE": "direct"}, "WORKSPACE_EXPOSURE must be 'network'"),
    ({"SWARM_STOP_GRACE": "nan"}, "SWARM_STOP_GRACE: must be a number"),
    ({"SWARM_STOP_GRACE": "301"}, "SWARM_STOP_GRACE must be between 0 and 300"),
    ({"SWARM_VOLUME_OPTIONS": "type=nfs device"}, "SWARM_VOLUME_OPTIONS: must be key=value words"),
])
def test_the_swarm_backend_refuses_what_cannot_work_on_a_swarm(environ, words):
    with pytest.raises(SettingsError, match=words):
        settings_mod.load(environ={"WORKSPACE_BACKEND": "swarm", **environ})
    # The same values are nobody's business with the Docker backend (its own default exposure aside).
    if "WORKSPACE_EXPOSURE" in environ:
        settings_mod.load(environ=environ)


def test_swarm_volume_options_keep_commas_and_equals_inside_a_value():
    settings = settings_mod.load(environ={"WORKSPACE_BACKEND": "swarm", "SWARM_VOLUME_DRIVER": "local",
                                          "SWARM_VOLUME_OPTIONS": "type=nfs 'o=addr=10.0.0.5,rw' device=:/export"})
    assert settings.swarm_volume_options == {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/export"}
