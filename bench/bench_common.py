"""Helpers every bench_*.py script shares (imported as a sibling module:
the scripts run as `python bench/bench_x.py`)."""
from __future__ import annotations

import time


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def wait_http(url: str, headers: dict | None = None, timeout: float = 60) -> None:
    """Until `url` answers at all (any status)."""
    import httpx  # not at import time: the load-generator processes never need it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, headers=headers, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")
