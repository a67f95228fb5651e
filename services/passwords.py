"""Password rules and hashing.

bcrypt work runs in a thread pool: a 250 ms hash on the event loop would stall
every other request and WebSocket. Its threads run at a lower CPU priority
(nice +10): on a small machine, 20 concurrent logins otherwise take the cores
from the event loop, and /health waited for them (p99 well over 50 ms).
"""
from __future__ import annotations

import asyncio
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Any

import bcrypt

from services.errors import ShuttingDown

MIN_LENGTH = 8
BCRYPT_MAX_BYTES = 72
SIMILARITY = 0.7


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    path = Path(__file__).with_name("data") / "common_passwords.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def _too_similar(password: str, value: str) -> bool:
    """Like Django's UserAttributeSimilarityValidator (the value and each of
    its words, by SequenceMatcher ratio), plus: the password may not contain
    a word of 4+ letters of the value ("margaret1957" for margaret@...)."""
    lowered = password.lower()
    value = value.lower()
    for part in {value, *re.split(r"\W+", value)}:
        if len(part) < 3:
            continue
        if len(part) >= 4 and part in lowered:
            return True
        matcher = SequenceMatcher(a=lowered, b=part)
        if matcher.quick_ratio() >= SIMILARITY and matcher.ratio() >= SIMILARITY:
            return True
    return False


def password_problems(password: str, email: str = "", name: str = "") -> list[str]:
    """Every rule the password breaks, as messages for the `password1` field."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"Password must be at least {MIN_LENGTH} characters.")
    if len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
        problems.append(f"Password must be at most {BCRYPT_MAX_BYTES} bytes long.")
    if password.isdigit():
        problems.append("Password cannot be entirely numeric.")
    if password.lower() in common_passwords():
        problems.append("This password is too common.")
    # The whole email by ratio; its words only from the local part, so that
    # sharing "com" or "example" with the domain is not "similar".
    local_part = email.split("@", 1)[0]
    if (email and SequenceMatcher(a=password.lower(), b=email.lower()).ratio() >= SIMILARITY) or any(
            value and _too_similar(password, value) for value in (local_part, name)):
        problems.append("The password is too similar to the email or name.")
    return problems


def _hash(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


def _check(password: str, hashed: str) -> bool:
    encoded = password.encode("utf-8")
    if len(encoded) > BCRYPT_MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, hashed.encode("ascii"))
    except ValueError:
        return False


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # this thread only (Linux)
    except (OSError, AttributeError):
        pass


class PasswordHasher:
    """bcrypt with a fixed cost, run off the event loop."""

    def __init__(self, rounds: int):
        self.rounds = rounds
        self.executor = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="bcrypt",
                                           initializer=_lower_priority)
        # Compared against when there is no stored hash (unknown email,
        # OAuth-only account) so that the answer takes as long as a real one.
        self._dummy = _hash("dummy-password-for-timing", rounds)
        self.closing = False

    def shed(self) -> None:
        """Shutting down: hashes still queued (not yet on a thread) are
        cancelled, and their requests answer 503 while their connections are
        still open, instead of dying with the process (a 500 and a logged
        CancelledError). Hashes already running finish."""
        self.closing = True
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        self.shed()

    async def _run(self, function: Any, *args: Any) -> Any:
        if self.closing:
            raise ShuttingDown()
        future = self.executor.submit(function, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and self.closing and not (task and task.cancelling()):
                raise ShuttingDown() from None  # cancelled by shed(), not this request's own cancellation
            raise

    async def hash(self, password: str) -> str:
        return await self._run(_hash, password, self.rounds)

    async def check(self, password: str, hashed: str | None) -> bool:
        matches = await self._run(_check, password, hashed or self._dummy)
        return matches and bool(hashed)

