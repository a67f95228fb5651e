"""The test swarm's network: a bridge in a network namespace of its own, the
host joined to it by one veth, and one namespace per node with a veth to the
bridge. Also the host snapshot that proves teardown left nothing behind.

Why a namespace for the bridge: a bridge in the host namespace drops
node-to-node traffic, because the host's FORWARD policy is DROP and bridge
netfilter is on. In a namespace of its own the bridge sees an empty ruleset.
The host gains exactly one link (the host end of its veth); every other link
is made inside the namespaces (`ip -n`), so it never appears in `ip link`."""
from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass

NETNS_DIR = "/run/netns"


def sh(*cmd: str, check: bool = True, timeout: float = 60, stdin: str | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host routes or holds an address in."""
    nets = []
    for line in sh("ip", "-4", "route", "show", "table", "all").splitlines() + \
            sh("ip", "-4", "-o", "addr").splitlines():
        for word in line.split():
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    return nets


def free_subnet(base: str = "10.213.0.0/16", also_taken: list | None = None) -> ipaddress.IPv4Network:
    """The first /24 of `base` that overlaps nothing the host routes (the
    host's own interface gets an address in it) nor `also_taken`."""
    taken = host_networks() + (also_taken or [])
    for candidate in ipaddress.ip_network(base).subnets(new_prefix=24):
        if candidate.network_address.packed[2] == 0:
            continue  # skip x.y.0.0/24, easy to confuse with the pool itself
        if not any(candidate.overlaps(net) for net in taken if net.prefixlen > 0):
            return candidate
    raise RuntimeError(f"no free /24 in {base}")


@dataclass
class Net:
    """Names and addresses of one test swarm's network, all derived from its
    tag (so that a later process can tear down what an earlier one made)."""
    tag: str
    subnet: str
    nodes: tuple[str, ...] = ("node1", "node2")

    @property
    def bridge_ns(self) -> str:
        return f"{self.tag}-br"

    @property
    def host_link(self) -> str:
        return f"{self.tag}-host"  # the only link the host gains

    def node_ns(self, node: str) -> str:
        return f"{self.tag}-{node}"

    def address(self, who: str) -> str:
        """`host` is .1, node N is .(10+N)."""
        net = ipaddress.ip_network(self.subnet)
        index = 1 if who == "host" else 10 + int(who.removeprefix("node"))
        return str(net.network_address + index)

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def netns_path(self, node: str) -> str:
        return f"{NETNS_DIR}/{self.node_ns(node)}"

    def namespaces(self) -> list[str]:
        return [self.bridge_ns, *(self.node_ns(n) for n in self.nodes)]

    def up(self) -> None:
        br = self.bridge_ns
        sh("ip", "netns", "add", br)
        sh("ip", "-n", br, "link", "set", "lo", "up")
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        # The host's veth: made inside the bridge namespace, its host end
        # moved out, so the host never holds the bridge end even briefly.
        sh("ip", "-n", br, "link", "add", "p-host", "type", "veth", "peer", "name", self.host_link)
        sh("ip", "-n", br, "link", "set", self.host_link, "netns", "1")
        sh("ip", "-n", br, "link", "set", "p-host", "master", "br0", "up")
        sh("ip", "addr", "add", f"{self.address('host')}/{self.prefix}", "dev", self.host_link)
        sh("ip", "link", "set", self.host_link, "up")
        for node in self.nodes:
            ns = self.node_ns(node)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", br, "link", "add", f"p-{node}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", br, "link", "set", f"p-{node}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.address(node)}/{self.prefix}", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def down(self) -> None:
        """Deleting a namespace deletes its links, and a veth goes with its
        peer, so the host's link goes with the bridge namespace. Tolerant of
        half-made states (teardown after a failed bring-up)."""
        sh("ip", "link", "del", self.host_link, check=False)
        for ns in reversed(self.namespaces()):
            if os.path.exists(f"{NETNS_DIR}/{ns}"):
                sh("ip", "netns", "del", ns, check=False)

    def leftovers(self) -> list[str]:
        left = [f"netns {ns}" for ns in self.namespaces() if os.path.exists(f"{NETNS_DIR}/{ns}")]
        if self.host_link in link_names():
            left.append(f"link {self.host_link}")
        return left


def link_names() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)[:@]", sh("ip", "-o", "link"), re.M)}


# The main engine is shared: while the swarm is up, other people's tests make
# and remove Docker networks and containers on it, which adds and removes
# br-<id> bridges, veth<hex> links and their iptables rules. Those changes are
# not ours, so the before/after comparison ignores them.
_MAIN_ENGINE_LINK = re.compile(r"^(br-[0-9a-f]{12}|veth[0-9a-f]{7})$")
_MAIN_ENGINE_RULE = re.compile(r"br-[0-9a-f]{12}|^:DOCKER|-j DOCKER|--to-destination 172\.|-[sd] 172\.")
# Every test swarm's names start with "asw" (aswt<pid>, aswdev): another
# one's links and rules (a second run on the same machine) are not this one's.
_TEST_SWARM = re.compile(r"\basw[a-z0-9]+")
_COUNTERS = re.compile(r"\[\d+:\d+\]")


def iptables_lines() -> set[str]:
    """`iptables-save` without comments and counters."""
    return {_COUNTERS.sub("", line).strip() for line in sh("iptables-save").splitlines()
            if line and not line.startswith("#")}


@dataclass
class HostSnapshot:
    rules: set[str]
    links: set[str]

    @classmethod
    def take(cls) -> "HostSnapshot":
        return cls(iptables_lines(), link_names())

    def to_json(self) -> dict:
        return {"rules": sorted(self.rules), "links": sorted(self.links)}

    @classmethod
    def from_json(cls, data: dict) -> "HostSnapshot":
        return cls(set(data["rules"]), set(data["links"]))

    def differences(self, later: "HostSnapshot", tag: str) -> list[str]:
        """What changed on the host that is not the main engine's doing; any
        rule or link naming our tag counts even if it looks like Docker's."""
        out = []

        def others(text: str) -> bool:
            return tag not in text and bool(_TEST_SWARM.search(text))

        for line in sorted(self.rules ^ later.rules):
            if others(line):
                continue
            if tag in line or not _MAIN_ENGINE_RULE.search(line):
                out.append(("+ " if line in later.rules else "- ") + f"iptables: {line}")
        for link in sorted(self.links ^ later.links):
            if others(link):
                continue
            if tag in link or not _MAIN_ENGINE_LINK.match(link):
                out.append(("+ " if link in later.links else "- ") + f"link: {link}")
        return out
