"""One Docker engine of the test swarm, running in its node's network
namespace beside the shared main engine, which it must never disturb.

`ip netns exec` does not work for dockerd: it remounts /sys and loses the
cgroup v1 mounts. So each engine starts under
`nsenter --net=<netns> unshare --mount --uts --propagation slave` and, inside
its own mount namespace, gets its own hostname, a fresh sysfs (showing its
namespace's links) with the host's /sys/fs/cgroup bound back, and tmpfs over
/run/docker and /run/containerd: Docker 20.10 and containerd 1.6 otherwise put
sockets (containerd's, the shims') in the main engine's directories. With no
containerd socket in its /run/containerd, each dockerd starts its own
containerd, with state under its exec root.

Everything else is per engine: data root, exec root, API socket, pidfile,
cgroup parent, default bridge address, and a daemon.json with its own
`deprecated-key-path` (otherwise all engines share one engine ID, and a swarm
refuses the second node)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import alive, wait_gone
from tests.support.swarm_net import sh

# Runs as `sh -c SCRIPT node cgroup-stash` inside the new mount namespace,
# then becomes dockerd ("$@" after the two positional parameters).
_INSIDE = r"""set -e
hostname "$1"
mkdir -p "$2" /run/docker /run/containerd
mount --rbind /sys/fs/cgroup "$2"
mount -t sysfs sysfs /sys
mount --move "$2" /sys/fs/cgroup
mount -t tmpfs -o mode=0700 tmpfs /run/docker
mount -t tmpfs -o mode=0700 tmpfs /run/containerd
shift 2
exec "$@"
"""

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class Node:
    name: str            # node1, node2: also the engine's hostname
    hostname: str
    address: str
    netns: str           # /run/netns/<ns>
    run_dir: Path        # sockets, pidfile, exec root (short: unix socket paths are limited)
    data_dir: Path       # data root, daemon.json, key, log
    cgroup_parent: str
    bip: str
    registry: str        # host:port, insecure for this engine

    @property
    def socket(self) -> str:
        return str(self.run_dir / "docker.sock")

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def log(self) -> Path:
        return self.data_dir / "dockerd.log"

    def docker(self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None) -> str:
        return sh("docker", "-H", self.docker_host, *args, check=check, timeout=timeout, stdin=stdin).strip()

    def dockerd_argv(self) -> list[str]:
        config = self.data_dir / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(self.data_dir / "key.json")}))
        return ["dockerd", "--config-file", str(config),
                "--data-root", str(self.data_dir / "root"), "--exec-root", str(self.run_dir / "x"),
                "-H", self.docker_host, "--pidfile", str(self.pidfile),
                "--cgroup-parent", self.cgroup_parent, "--bip", self.bip,
                "--insecure-registry", self.registry]

    def start(self, timeout: float = 120) -> None:
        """A fresh mount namespace, unless a previous engine's processes
        (containerd, shims) survive: then dockerd joins theirs, since the
        running containers' mounts and sockets live there."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        holder = self.mount_ns_holder()
        if holder:
            argv = ["nsenter", f"--net={self.netns}", f"--mount=/proc/{holder}/ns/mnt",
                    f"--uts=/proc/{holder}/ns/uts", *self.dockerd_argv()]
        else:
            argv = ["nsenter", f"--net={self.netns}", "unshare", "--mount", "--uts", "--propagation", "slave",
                    "sh", "-c", _INSIDE, "sh", self.hostname, str(self.run_dir / "cg"), *self.dockerd_argv()]
        with open(self.log, "ab") as log:
            # its own session: the CLI exits while the engine keeps running
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd for {self.name} exited {proc.returncode}: {self.log_tail()}")
            try:
                if self.docker("version", "-f", "{{.Server.Version}}", check=False, timeout=5):
                    return
            except subprocess.TimeoutExpired:
                pass  # the socket accepts before the engine has restored its containers
            time.sleep(0.2)
        raise RuntimeError(f"dockerd for {self.name} did not answer in {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def dockerd_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) and _comm(pid) == "dockerd" else None

    def kill(self) -> int:
        """SIGKILL the engine alone, as a machine losing its Docker would:
        its containerd, shims and containers survive."""
        pid = self.dockerd_pid()
        if pid is None:
            raise RuntimeError(f"{self.name}: no dockerd running")
        os.kill(pid, signal.SIGKILL)
        wait_gone([pid], 10)
        return pid

    def processes(self) -> list[int]:
        """Every process in this node's network namespace (dockerd,
        containerd, shims, containers), found by the namespace's inode."""
        try:
            target = os.stat(self.netns).st_ino
        except OSError:
            return []
        return [pid for pid in _pids() if _ns_inode(pid, "net") == target]

    def mount_ns_holder(self) -> int | None:
        """A surviving containerd or shim of this node, whose mount namespace
        a restarted engine must join."""
        for pid in self.processes():
            if _comm(pid).startswith("containerd") and _ns_inode(pid, "mnt") != _ns_inode(1, "mnt"):
                return pid
        return None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the engine (it stops its containers and its containerd),
        then SIGKILL whatever is left in the namespace, by pid."""
        pid = self.dockerd_pid()
        if pid is not None:
            # Kill the containers first: the stand-in image's httpd ignores
            # SIGTERM as pid 1, and dockerd would wait 10 s for each.
            ids = self.docker("ps", "-aq", check=False, timeout=10).split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=30)
            os.kill(pid, signal.SIGTERM)
            wait_gone([pid], timeout)
        left = self.processes()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(left, 10)

    def remove_cgroups(self) -> list[str]:
        """rmdir our cgroup parent in every hierarchy, deepest first; returns
        what could not be removed."""
        failed = []
        for hierarchy in CGROUP_ROOT.iterdir():
            top = hierarchy / self.cgroup_parent.strip("/")
            if not top.is_dir():
                continue
            for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
                try:
                    path.rmdir()
                except OSError as err:
                    failed.append(f"{path}: {err.strerror}")
        return failed


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ns_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
