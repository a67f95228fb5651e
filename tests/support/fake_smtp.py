"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""
from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import time
import urllib.parse
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


class FakeSMTP:
    def __init__(self) -> None:
        self.inbox = Inbox()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def start(self) -> "FakeSMTP":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def settings(self, **extra: str) -> dict[str, str]:
        return {"smtp_host": "127.0.0.1", "smtp_port": str(self.port), "smtp_tls": "none",
                "smtp_from": "ApraNova <no-reply@apranova.test>", "public_base_url": "https://apranova.test",
                **extra}

    def to(self, address: str, subject: str = "") -> list[EmailMessage]:
        return [m for m in self.inbox.messages if m["To"] == address and subject in m["Subject"]]

    async def wait_for(self, address: str, count: int = 1, subject: str = "", timeout: float = 10) -> EmailMessage:
        """The `count`-th message to `address` (with `subject` in its subject);
        mail is sent in the background."""
        deadline = time.monotonic() + timeout
        while len(self.to(address, subject)) < count:
            assert time.monotonic() < deadline, f"no mail #{count} to {address} in {timeout}s"
            await asyncio.sleep(0.02)
        return self.to(address, subject)[count - 1]


def link_params(message: EmailMessage, path: str) -> dict[str, str]:
    """The query parameters of the link to `path` in a message's body."""
    body = message.get_content()
    match = re.search(r"https://apranova\.test" + re.escape(path) + r"\?(\S+)", body)
    assert match, body
    return dict(urllib.parse.parse_qsl(match[1]))


@pytest.fixture
def smtp():
    """A FakeSMTP running for one test (a fixture for every test module)."""
    server = FakeSMTP().start()
    yield server
    server.stop()
