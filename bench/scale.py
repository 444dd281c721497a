"""Throughput of 1 and 2 workers in one consumer group on the same broker and the same backlog.

    SMARTSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092 python bench/scale.py --events 200000 --users 20000

Each run gets a fresh topic prefix holding the same events; the rate is first-to-last processed
event, the sum of the workers' processed-event counters (GET /metrics). On a
2-core machine two workers and the broker share the cores: the figure shows the coordination
overhead more than the scaling a bigger machine would give.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline import processed, produce, worker_env
from streams.settings import Settings
from streams.topics import delete_prefixed_topics, ensure_topics


def run(workers: int, events: int, users: int) -> float:
    prefix = f"scale{workers}{uuid.uuid4().hex[:6]}-"
    settings = Settings.from_env({**os.environ, "SMARTSTREAM_TOPIC_PREFIX": prefix})
    ensure_topics(settings)
    produce(settings, events, users)
    procs, ports = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(workers):
            os.makedirs(f"{tmp}/{i}")
            env, port = worker_env(prefix, "memory://", f"{tmp}/{i}")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", "worker"],
                    env=env,
                    cwd=f"{tmp}/{i}",
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports.append(port)
        try:
            first = None
            deadline = time.monotonic() + 900
            total = 0
            while time.monotonic() < deadline and total < events:
                try:
                    total = sum(processed(port) for port in ports)
                except (OSError, KeyError, ValueError):
                    total = 0
                if total and first is None:
                    first = (time.perf_counter(), total)
                time.sleep(0.05)
            assert first is not None and total >= events, f"processed {total} of {events}"
            return (events - first[1]) / (time.perf_counter() - first[0])
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            delete_prefixed_topics(settings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    args = parser.parse_args()
    one = run(1, args.events, args.users)
    print(f"1 worker:  {one:,.0f} events/s", flush=True)
    two = run(2, args.events, args.users)
    print(f"2 workers: {two:,.0f} events/s ({two / one:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
