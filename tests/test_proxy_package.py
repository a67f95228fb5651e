"""The workspace proxy is one package (proxy/) with one-way imports: no
module of it imports another in a cycle, and nothing below it (services/,
models/) imports it. Read from the source, so a new import that breaks the
layering fails here."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_nothing_below_the_proxy_imports_it():
    for folder in ("services", "models"):
        for path in (ROOT / folder).rglob("*.py"):
            bad = {name for name in imports_of(path) if name == "proxy" or name.startswith("proxy.")}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the services are below the proxy"


def test_the_proxy_modules_import_each_other_without_a_cycle():
    modules = {path.stem: path for path in (ROOT / "proxy").glob("*.py") if path.stem != "__init__"}
    graph = {name: {dep.split(".")[1] for dep in imports_of(path)
                    if dep.startswith("proxy.") and dep.split(".")[1] in modules and dep.split(".")[1] != name}
             for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, f"import cycle: {' -> '.join(trail + (name,))}"
        if name in done:
            return
        for dep in graph[name]:
            visit(dep, trail + (name,))
        done.add(name)

    for name in graph:
        visit(name, ())
    assert graph["relay"] and "lane" not in graph["relay"]  # the cycle of old (lane <-> relay)


def test_the_old_proxy_files_are_gone():
    old = ["handlers/proxy.py", "handlers/proxy_edge.py", "handlers/proxy_server.py", "handlers/proxy_socket.py",
           "services/proxy_auth.py", "services/proxy_conn.py", "services/proxy_lane.py", "services/proxy_relay.py",
           "services/proxy_tunnel.py", "services/workspace_proxy.py"]
    assert [name for name in old if (ROOT / name).exists()] == []


def test_each_proxy_module_imports_on_its_own():
    """First in a fresh interpreter, as a tool or a test might import it (a
    cycle through the handlers package shows only then)."""
    for path in sorted((ROOT / "proxy").glob("*.py")):
        module = "proxy" if path.stem == "__init__" else f"proxy.{path.stem}"
        result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"import {module}: {result.stderr[-500:]}"
