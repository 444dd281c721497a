"""models.processes: a computation's spawned processes die with the process that started them
(a helper killed at its fit timeout must not leave its restarts running on the worker's cores)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, wait_for

PARENT = textwrap.dedent(
    """
    import sys, time
    from models.processes import spawn_pool

    if __name__ == "__main__":
        pool = spawn_pool(2)
        pids = {pool.submit(__import__("os").getpid).result() for _ in range(8)}
        for _ in range(2):
            pool.submit(time.sleep, 600)
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(2) is Linux's")
def test_spawned_processes_die_with_their_parent(tmp_path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    children: list[int] = []
    try:
        assert parent.stdout is not None
        children = [int(pid) for pid in parent.stdout.readline().split()]
        assert children and all(map(alive, children))  # busy sleeping, 600 s to go
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_for(lambda: not any(map(alive, children)), 20, f"children {children} to die")
    finally:
        parent.kill()
        for pid in filter(alive, children):  # a failed run leaves no process behind
            os.kill(pid, signal.SIGKILL)
