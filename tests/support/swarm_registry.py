"""Debian's docker-registry for the test swarm, on the host end of the host's
veth: the nodes reach the host there, and a registry on loopback would be out
of their reach (they have network namespaces of their own).

Images get in through node1, not through the main engine: the main engine
treats only 127.0.0.0/8 as an insecure registry, and teaching it another
address means reconfiguring a shared engine. So `push` streams the image
from the main engine into node1 (`docker save | docker load`), pushes it from
there (node1 was started with `--insecure-registry`), then drops node1's copy
so that node1 pulls like any other node."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import alive, wait_gone
from tests.support.swarm_node import Node

_CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {addr}
"""


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@dataclass
class Registry:
    address: str     # host:port
    data_dir: Path

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "registry.pid"

    def start(self, timeout: float = 20) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "config.yml"
        config.write_text(_CONFIG.format(root=self.data_dir / "storage", addr=self.address))
        with open(self.data_dir / "registry.log", "ab") as log:
            proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        host, port = self.address.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited {proc.returncode}")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not listen on {self.address} in {timeout} s")

    def stop(self) -> None:
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return
        if alive(pid) and Path(f"/proc/{pid}/comm").read_text().strip().startswith("docker-regis"):
            os.kill(pid, signal.SIGTERM)
            wait_gone([pid], 10)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def push(self, local_name: str, via: Node) -> str:
        """Copy `local_name` from the main engine into the registry; returns
        the reference every node pulls."""
        ref = f"{self.address}/{local_name.split('/', 1)[-1] if _has_registry(local_name) else local_name}"
        save = subprocess.Popen(["docker", "save", local_name], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", via.docker_host, "load", "-q"], stdin=save.stdout,
                              capture_output=True, text=True, timeout=600)
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"copying {local_name} into {via.name}: {load.stderr.strip()}")
        via.docker("tag", local_name, ref)
        via.docker("push", "-q", ref, timeout=600)
        via.docker("rmi", ref, local_name, check=False)
        return ref


def _has_registry(name: str) -> bool:
    first = name.split("/", 1)[0]
    return "/" in name and ("." in first or ":" in first or first == "localhost")
