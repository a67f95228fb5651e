"""Client addresses behind proxies."""
from __future__ import annotations

import ipaddress
from typing import Iterable


def _in(address: str, networks: Iterable) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None):  # ::ffff:10.1.2.3 on a dual-stack socket is 10.1.2.3
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def client_ip(remote_ip: str, forwarded_for: str | None, trusted: list) -> str:
    """The caller's address. X-Forwarded-For is believed only when the peer is
    a trusted proxy, and then only back to the first untrusted hop (the
    right-most address that a trusted proxy did not add itself)."""
    if not forwarded_for or not trusted or not _in(remote_ip, trusted):
        return remote_ip
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote_ip
    return hops[0] if hops else remote_ip


def allowed(address: str, networks: list) -> bool:
    """True when networks is empty (no restriction) or holds the address."""
    return not networks or _in(address, networks)
