"""Stopping a ProcessPoolExecutor's running job: the stdlib cannot cancel one that started, so
its processes (a private mapping of the pool) are killed and the pool dropped."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor


def kill_pool(pool: ProcessPoolExecutor) -> None:
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
