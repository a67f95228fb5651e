"""The host behind a workspace network's gateway (WORKSPACE_HOST_WALL).

A workspace container reaches the internet through its Docker network's
gateway, which is an address of this host: so it also reaches every service
of the host that listens on all addresses (the server's own port, a
database or registry bound to 0.0.0.0...), with the student's code as the
client. Docker's `internal` networks would stop that, but they have no
route out at all, and students need `pip install` and `git clone`.

With WORKSPACE_HOST_WALL on, the host drops what a workspace network sends
to the host itself (iptables `INPUT`, matched on the network's bridge),
except reply traffic (conntrack ESTABLISHED/RELATED): the proxy's
connections to the IDEs still get their answers, forwarded traffic to the
internet (the FORWARD chain) is untouched. The rules live in a chain of
their own per bridge (`APN-WALL-<bridge>`), added once and removable
without a trace (`remove`). IPv4 only: the workspace networks have no IPv6.
Needs root in the host's network namespace (the server as a host process).
"""
from __future__ import annotations

import asyncio
import logging
import shutil

log = logging.getLogger("apranova.workspaces")
IPTABLES = "iptables"


class WallError(RuntimeError):
    """The rules could not be applied (no iptables, no root...)."""


def bridge_of(network: dict) -> str:
    """The Linux bridge of a Docker bridge network (Docker names it
    br-<first 12 of the id> unless the network says otherwise)."""
    options = network.get("Options") or {}
    return options.get("com.docker.network.bridge.name") or "br-" + network["Id"][:12]


def chain_of(bridge: str) -> str:
    return f"APN-WALL-{bridge}"[:28]  # iptables allows 28 characters


def chain_rules(chain: str) -> list[list[str]]:
    return [["-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
            ["-A", chain, "-j", "DROP"]]


def hook(bridge: str) -> list[str]:
    return ["INPUT", "-i", bridge, "-j", chain_of(bridge)]


async def _iptables(*args: str) -> tuple[int, str]:
    if shutil.which(IPTABLES) is None:
        raise WallError(f"{IPTABLES} is not installed")
    process = await asyncio.create_subprocess_exec(IPTABLES, "-w", "10", *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    return process.returncode or 0, (out + err).decode(errors="replace").strip()


async def ensure(bridge: str) -> None:
    """The wall for `bridge`, added when missing (idempotent)."""
    chain = chain_of(bridge)
    code, _ = await _iptables("-S", chain)
    if code != 0:
        code, text = await _iptables("-N", chain)
        if code != 0 and "exists" not in text:
            raise WallError(f"cannot create the iptables chain {chain}: {text}")
        await _iptables("-F", chain)
        for rule in chain_rules(chain):
            code, text = await _iptables(*rule)
            if code != 0:
                raise WallError(f"cannot add an iptables rule to {chain}: {text}")
    code, _ = await _iptables("-C", *hook(bridge))
    if code != 0:
        code, text = await _iptables("-I", *hook(bridge))
        if code != 0:
            raise WallError(f"cannot hook {chain} into INPUT: {text}")
        log.info("workspace network %s: host wall on (chain %s)", bridge, chain)


async def remove(bridge: str) -> None:
    """Every trace of the wall for `bridge`."""
    while (await _iptables("-C", *hook(bridge)))[0] == 0:
        await _iptables("-D", *hook(bridge))
    chain = chain_of(bridge)
    if (await _iptables("-S", chain))[0] == 0:
        await _iptables("-F", chain)
        await _iptables("-X", chain)
