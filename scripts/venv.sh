# Sourced by scripts/run and scripts/test: make .venv and install the project.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.installed-$1"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
  "$ROOT/.venv/bin/pip" install --disable-pip-version-check -q --upgrade pip >/dev/null
  "$ROOT/.venv/bin/pip" install --disable-pip-version-check -q -e "$ROOT$2"
  touch "$stamp"
fi
