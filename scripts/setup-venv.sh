#!/usr/bin/env bash
# Creates .venv with Python >= 3.11 and installs the project with the given extras (e.g. "dev,embedded").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
extras="${1:-embedded}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      python="$candidate"; break
    fi
  done
fi
[ -n "$python" ] || { echo "Python >= 3.11 is required" >&2; exit 1; }
[ -x "$root/.venv/bin/python" ] || "$python" -m venv "$root/.venv"
"$root/.venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$root/.venv/bin/python" -m pip install -q -e "$root[$extras]"
