"""A self-signed wildcard certificate for tests that need https (Chromium
sends Sec-Fetch-* only to secure origins; the nginx front recipe), made with
the openssl command line in a temporary directory."""
from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

DOMAIN = "apranova.test"  # reserved (RFC 2606): never a real name
RESOLVER_RULES = f"MAP *.{DOMAIN} 127.0.0.1, MAP {DOMAIN} 127.0.0.1"  # Chromium's stand-in for wildcard DNS


def wildcard_certificate(directory: Path, domain: str = DOMAIN) -> tuple[Path, Path]:
    """(certificate, key) for `domain` and `*.domain`, valid for a day."""
    cert, key = directory / "wildcard.crt", directory / "wildcard.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={domain}",
                    "-addext", f"subjectAltName=DNS:{domain},DNS:*.{domain}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


async def goto(page, url: str, tries: int = 3) -> None:
    """page.goto, again when Chromium reports ERR_NETWORK_CHANGED (the shared
    machine's Docker engine adds and removes interfaces all the time; the
    request was not sent)."""
    for attempt in range(tries):
        try:
            await page.goto(url)
            return
        except Exception as error:  # noqa: BLE001 - playwright's Error
            if "ERR_NETWORK_CHANGED" not in str(error) or attempt == tries - 1:
                raise
