"""Settings that cannot work are refused at start, each with a message that
names the setting and says what is expected (never a Python error text)."""
from __future__ import annotations

import pytest

from services import settings as settings_mod
from services.settings import SettingsError


@pytest.mark.parametrize("name, value, words", [
    ("port", "70000", "1 and 65535"), ("port", "0", "1 and 65535"), ("port", "-5", "1 and 65535"),
    ("port", "abc", "whole number"), ("port", "80.5", "whole number"), ("smtp_port", "99999", "1 and 65535"),
    ("workspace_container_port", "65536", "1 and 65535"), ("db_timeout_ms", "soon", "whole number"),
    ("bcrypt_rounds", "twelve", "whole number"), ("shutdown_timeout", "long", "a number"),
    ("workspace_cpus", "nan", "a number"), ("shutdown_timeout", "-1", "negative"),
    ("cors_origins", "localhost:8000", "scheme"), ("cors_origins", "http://localhost:3000,example.com", "scheme"),
    ("cors_origins", "http://localhost:3000/app", "no path"), ("cors_origins", "ftp://example.com", "scheme"),
    ("tracks", "DP", "CODE=Title"), ("tracks", "DP=Data Professional,FSD", "CODE=Title"),
    ("tracks", "DP=,FSD=Full-Stack", "CODE=Title"), ("tracks", "D P=Data", "letters"),
    ("tracks", "DP=Data,DP=Again", "twice"),
])
def test_unusable_values_are_refused_with_a_clear_message(name, value, words):
    with pytest.raises(SettingsError) as raised:
        settings_mod.load(environ={}, **{name: value})
    message = str(raised.value)
    assert message.startswith(name.upper() + ":") or name.upper() in message, message
    assert words.lower() in message.lower(), message
    assert "invalid literal" not in message and "could not convert" not in message


@pytest.mark.parametrize("name, value, parsed", [
    ("port", "8080", 8080), ("port", " 443 ", 443),
    ("cors_origins", "*", ["*"]), ("cors_origins", "https://app.example.com, http://localhost:3000",
                                   ["https://app.example.com", "http://localhost:3000"]),
    ("cors_origins", "http://[::1]:8000", ["http://[::1]:8000"]),
    ("tracks", "DP=Data Professional, FSD=Full-Stack Developer",
     {"DP": "Data Professional", "FSD": "Full-Stack Developer"}),
])
def test_usable_values_are_accepted(name, value, parsed):
    assert getattr(settings_mod.load(environ={}, **{name: value}), name) == parsed


def test_every_default_is_usable():
    settings = settings_mod.load(environ={})
    for setting in settings_mod.declared():
        assert hasattr(settings, setting.attr)


@pytest.mark.parametrize("host, url", [("0.0.0.0", "http://localhost:8000/"), ("::", "http://localhost:8000/"),
                                       ("127.0.0.1", "http://127.0.0.1:8000/"), ("::1", "http://[::1]:8000/"),
                                       ("apranova.local", "http://apranova.local:8000/")])
def test_start_up_says_which_address_to_open(host, url):
    from server import browser_url
    assert browser_url(host, 8000) == url
