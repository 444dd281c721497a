#!/usr/bin/env bash
# The demo command (README): sets up .venv and runs `smartstream demo` (extra arguments are passed on).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup-venv.sh" demo
exec "$root/.venv/bin/smartstream" demo "$@"
