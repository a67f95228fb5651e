"""Outgoing email over SMTP (aiosmtplib), sent in the background.

Mail is sent after the answer, never during it: an SMTP server that is slow
or down must not hold up (or, by timing, reveal anything about) the request
that asked for the mail. Failures are logged (never with the message body,
which holds single-use links) and counted as `smtp` dependency errors.

Without SMTP_HOST there is no mailer (`Services.mailer` is None), and the
features that need mail say so: see the README's "Email" section.
"""
from __future__ import annotations

import asyncio
import logging
from email.message import EmailMessage
from typing import Any, Callable

import aiosmtplib

from services.settings import Settings

log = logging.getLogger("apranova.mail")


class Mailer:
    def __init__(self, settings: Settings, on_error: Callable[[str], None] = lambda dependency: None):
        self.settings = settings
        self.on_error = on_error
        self.pending: set[asyncio.Task] = set()
        self.sent = 0

    def message(self, to: str, subject: str, text: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        return message

    async def send(self, to: str, subject: str, text: str) -> None:
        """Send one message now; raises aiosmtplib's errors."""
        s = self.settings
        await aiosmtplib.send(
            self.message(to, subject, text), hostname=s.smtp_host, port=s.smtp_port,
            username=s.smtp_user or None, password=s.smtp_password or None,
            use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls", timeout=s.smtp_timeout)
        self.sent += 1

    def send_later(self, to: str, subject: str, text: str) -> None:
        """Send in the background; the caller's answer does not wait."""
        task = asyncio.create_task(self._send_logged(to, subject, text))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send_logged(self, to: str, subject: str, text: str) -> None:
        try:
            await self.send(to, subject, text)
            log.info("sent mail %r", subject)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            self.on_error("smtp")
            log.warning("could not send mail %r via %s:%s: %s", subject, self.settings.smtp_host,
                        self.settings.smtp_port, type(exc).__name__)

    async def close(self, timeout: float = 2.0) -> None:
        """Give mail being sent a moment to go out, then cancel the rest."""
        if self.pending:
            _, late = await asyncio.wait(set(self.pending), timeout=timeout)
            for task in late:
                task.cancel()


async def start(services: Any) -> None:
    settings = services.settings
    services.mailer = Mailer(settings, services.record_dependency_error) if settings.smtp_host else None
    if services.mailer is not None:
        services.on_close(services.mailer.close)
