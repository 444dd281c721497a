#!/usr/bin/env bash
# Creates .venv with Python >= 3.11 and installs the project from a lock file: `demo` (the demo's
# packages) or `test` (the test suite's). Every package is pinned and hash-checked
# (requirements/*.lock, made with `uv pip compile ... --generate-hashes`, see requirements/README);
# the project itself is then installed editable, without build isolation, so nothing unpinned is
# downloaded. pip's output goes to run/pip.log and is shown only when the install fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
lock="$root/requirements/${1:-demo}.lock"
[ -f "$lock" ] || { echo "no lock file $lock" >&2; exit 1; }
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      python="$candidate"; break
    fi
  done
fi
[ -n "$python" ] || { echo "Python >= 3.11 is required" >&2; exit 1; }
mkdir -p "$root/run"
log="$root/run/pip.log"
[ -x "$root/.venv/bin/python" ] || "$python" -m venv "$root/.venv"
pip=("$root/.venv/bin/python" -m pip --disable-pip-version-check)
if ! { "${pip[@]}" install --require-hashes --no-deps -r "$lock" \
       && "${pip[@]}" install --no-deps --no-build-isolation -e "$root"; } >"$log" 2>&1; then
  tail -40 "$log" >&2
  echo "pip install failed; full log in $log" >&2
  exit 1
fi
