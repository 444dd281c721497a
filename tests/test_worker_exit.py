"""A worker whose Faust app crashed exits non-zero (so a supervisor restarts it) instead of
staying up with a dead app, never healthy."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CRASH = """
import asyncio
from streams.app import app
asyncio.run(app.crash(RuntimeError("a record nobody expected")))
print("still running")
"""


def test_a_crashed_app_ends_its_process_with_status_70() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASH],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SMARTSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 70, done.stderr[-2000:]
    assert "still running" not in done.stdout
    assert "the app crashed" in done.stderr
