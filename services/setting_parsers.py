"""Parsers of setting values (services/settings.py): each turns the raw
string into the value, or raises ValueError with a message that says what is
expected; `settings.load` prefixes the setting's name, so an operator reads
one line like "PORT: a port must be between 1 and 65535, not 70000"."""
from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse


def csv_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def whole_number(value: str) -> int:
    if not re.fullmatch(r"\s*-?[0-9]+\s*", value):
        raise ValueError(f"must be a whole number, not {value!r}")
    return int(value)


def number(value: str) -> float:
    try:
        parsed = float(value)
    except ValueError:
        raise ValueError(f"must be a number, not {value!r}") from None
    if not math.isfinite(parsed):
        raise ValueError(f"must be a number, not {value!r}")
    if parsed < 0:
        raise ValueError(f"must not be negative, not {value!r}")
    return parsed


def port(value: str) -> int:
    port = whole_number(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"a port must be between 1 and 65535, not {port}")
    return port


def origins(value: str) -> list[str]:
    """CORS origins as browsers send them: scheme://host[:port], or '*'."""
    origins = csv_list(value)
    for origin in origins:
        if origin == "*":
            continue
        try:
            parts = urllib.parse.urlsplit(origin)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError(f"not an origin like https://app.example.com: {origin!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an origin needs a scheme and a host, like https://app.example.com: {origin!r}")
        if parts.path or parts.query or parts.fragment or parts.username:
            raise ValueError(f"an origin has no path, like https://app.example.com: {origin!r}")
    return origins


def tracks(value: str) -> dict[str, str]:
    tracks: dict[str, str] = {}
    for part in csv_list(value):
        code, equals, title = (piece.strip() for piece in part.partition("="))
        if not equals or not code or not title:
            raise ValueError(f"each track is CODE=Title (e.g. DP=Data Professional), not {part!r}")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", code):
            raise ValueError(f"a track code is 1-32 letters, digits, '-' or '_', not {code!r}")
        if code in tracks:
            raise ValueError(f"track {code!r} is listed twice")
        tracks[code] = title
    if not tracks:
        raise ValueError("at least one track is needed")
    return tracks


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def rate(value: str) -> str:
    if not re.fullmatch(r"\s*\d+\s*/\s*(second|minute|hour|day)s?\s*", value):
        raise ValueError(f"not a rate like '100/hour': {value!r}")
    return value.replace(" ", "")


def http_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value.strip()


def statuses(value: str) -> list[int]:
    statuses = [int(part) for part in csv_list(value) if part.isascii() and part.isdigit() and 100 <= int(part) <= 599]
    if not statuses or len(statuses) != len(csv_list(value)):
        raise ValueError(f"not a list of HTTP statuses like '200,204': {value!r}")
    return statuses


def optional_http_url(value: str) -> str:
    return http_url(value).rstrip("/") if value.strip() else ""


def networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(part, strict=False) for part in csv_list(value)]


def prices(value: str) -> dict[str, str]:
    prices = {}
    for part in csv_list(value):
        code, _, price = part.partition("=")
        prices[code.strip()] = price.strip()
    return prices


BYTE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
              "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4}


def byte_size(value: str) -> int:
    """A size in bytes with an optional binary unit ('2GiB', '512m', '1.5g',
    '65536'); empty means 0. Units are powers of 1024, as `docker run
    --memory` reads them, whatever the spelling."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower())
    if not value.strip():
        return 0
    if not match or match[2] not in BYTE_UNITS:
        raise ValueError(f"not a size like 2GiB, 512MiB or a number of bytes: {value!r}")
    return int(float(match[1]) * BYTE_UNITS[match[2]])


def link_template(*fields: str):
    """A parser of a mailed link's template: an http(s) URL, or a path
    (starting with /) that PUBLIC_BASE_URL is put before, holding each of
    `fields` ({uid}, {token}, {key}) once and no other placeholder."""
    import string

    def parse(value: str) -> str:
        value = value.strip()
        try:
            parsed = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(value)
                      if name is not None]
            found = [name if not spec and not conversion else "" for name, spec, conversion in parsed]
        except ValueError:
            raise ValueError(f"unbalanced braces in {value!r}") from None
        if sorted(found) != sorted(fields):
            wanted = ", ".join("{" + f + "}" for f in fields)
            raise ValueError(f"needs exactly {wanted} (and no other placeholder): {value!r}")
        if not value.startswith("/"):
            http_url(value.replace("{", "").replace("}", ""))
        return value
    parse.__name__ = f"link_template({', '.join(fields)})"
    return parse
