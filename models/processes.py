"""Worker processes of a computation (the mixture's restarts, the re-clustering's reads): spawned
and tied to the process that started them.

Spawned, not forked: the starting process's threads (RocksDB's, a Kafka client's) do not survive
a fork, and a lock one of them held would stay locked in the child. Tied: a process killed at
its timeout, or with its worker, must not leave its children computing on the same cores.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1  # prctl(2): the signal this process gets when its parent dies
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes that die with this one."""
    spawn = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=spawn, initializer=die_with_parent)
