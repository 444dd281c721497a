"""The worker's wiring (pure, no broker): every module that registers on the Faust app is one
the worker imports, so none is silently left unregistered."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from streams.cli import WORKER_MODULES

STREAMS = Path(__file__).resolve().parent.parent / "streams"
# What registers on the app: agents, pages, tasks, timers, tables, bulk handlers, recovery hooks
# and signal receivers.
REGISTERS = re.compile(
    r"^@(app\.(agent|page|task|timer|crontab|bulk|on_\w+)|\w+_table\.on_recover)|app\.(Table|GlobalTable)\(",
    re.M,
)


def registering_modules() -> set[str]:
    return {
        path.stem
        for path in STREAMS.glob("*.py")
        if path.stem != "app" and REGISTERS.search(path.read_text())
    }


def test_every_registering_module_is_loaded_by_the_worker() -> None:
    found = registering_modules()
    assert {"user_events", "counters", "ingest", "clustering", "moderation"} <= found
    missing = found - set(WORKER_MODULES)
    assert not missing, f"modules that register on the app but are not in WORKER_MODULES: {missing}"


def test_every_listed_module_exists() -> None:
    assert all((STREAMS / f"{name}.py").is_file() for name in WORKER_MODULES)


def test_the_helper_process_imports_no_worker_module() -> None:
    """A spawned helper unpickles streams.fitting's functions by module name: importing it must
    not build the Faust app nor load Faust (a fresh interpreter, as the helper is)."""
    probe = (
        "import sys, streams.fitting; "
        "print(sorted(m for m in sys.modules if m == 'faust' or m.startswith(('faust.', "
        "'streams.app', 'streams.trainer', 'streams.clustering', 'streams.moderation'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
