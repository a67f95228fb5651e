# Sourced by scripts/run and scripts/test: make .venv and install the project.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  if ! "$PY" -m venv "$ROOT/.venv" 2>/dev/null; then
    # Debian splits venv out of python3; install it when we may.
    rm -rf "$ROOT/.venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv "$ROOT/.venv"
    else
      echo "python3 -m venv failed: install Debian's python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
stamp="$ROOT/.venv/.installed-$1"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
  "$ROOT/.venv/bin/pip" install --disable-pip-version-check -q --upgrade pip >/dev/null
  "$ROOT/.venv/bin/pip" install --disable-pip-version-check -q -e "$ROOT$2"
  touch "$stamp"
fi
