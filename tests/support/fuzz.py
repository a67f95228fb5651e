from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from xml.etree import ElementTree

from tests.support.app import ARTIFACTS

SEED = "20261127"


EXAMPLES = "25"


# Docker is out of reach on purpose: workspace endpoints are fuzzed as "503
# when Docker is unavailable" and never start containers.
NO_DOCKER = "unix:///nonexistent/apranova-fuzz.sock"


SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


# Features whose endpoints answer 503 by design here: the fuzz server has no
# Docker engine, no Stripe keys and no OAuth clients configured.
DEPENDENT_TAGS = ("workspaces", "payments", "oauth")


async def run_schemathesis(base_url: str, *extra: str, report: str, config: Path | None = None) -> tuple[int, str]:
    ARTIFACTS.mkdir(exist_ok=True)
    args = [str(SCHEMATHESIS), *(["--config-file", str(config)] if config else []), "--no-color",
            "run", f"{base_url}/api/openapi.json",
            "--seed", SEED, "--max-examples", EXAMPLES, "--mode", "all",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--request-timeout", "20", "--no-shrink",
            "--report", "junit", "--report-junit-path", str(ARTIFACTS / f"schemathesis-{report}.xml"),
            *extra]
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, cwd=str(ARTIFACTS))
    output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    text = output.decode(errors="replace")
    (ARTIFACTS / f"schemathesis-{report}.txt").write_text(text)
    return process.returncode, text


def operations_of(document: dict, tags: tuple[str, ...], *, tagged: bool) -> set[str]:
    """'METHOD /path' of the HTTP operations with (or without) one of the tags."""
    found = set()
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete") and not op.get("x-websocket"):
                if bool(set(op.get("tags", ())) & set(tags)) == tagged:
                    found.add(f"{method.upper()} {path}")
    # schemathesis does not fuzz the endpoint that serves the schema itself
    found.discard("GET /api/openapi.json")
    return found


def fuzzed_operations(report: str) -> set[str]:
    root = ElementTree.parse(ARTIFACTS / f"schemathesis-{report}.xml").getroot()
    return {case.get("name") for case in root.iter("testcase")} - {"Stateful tests"}
