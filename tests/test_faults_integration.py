"""Fault test: SIGKILL the worker at seeded random moments while 100,000 events stream, restart it
each time, and compare every user's averages and visits and the counter with ground truth:
nothing lost, nothing doubled (at-least-once delivery made exact by the profiles' applied-offset
marks and by counters derived from the table)."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from streams.profiles import AVG_FIELDS, VISIT_FIELDS
from tests import streamdata
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration
KILLS = 3


def test_sigkill_mid_stream_loses_and_doubles_nothing(stack: Stack) -> None:
    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = "0"
    ks = streamdata.build(n_users=5000, n_views=100_000, seed=21)
    total = ks.weight()
    worker = stack.start_worker()

    def feed() -> None:
        producer = stack.producer()
        for i, (topic, key, value) in enumerate(ks.records):
            producer.send(topic, key, value)
            if i % 5000 == 0:
                producer.flush()
                time.sleep(0.2)  # pacing, so that the kills land mid-stream
        producer.flush()
        producer.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    rng = random.Random(5)
    for _ in range(KILLS):
        time.sleep(rng.uniform(1.0, 3.0))  # a random moment to kill at, not a synchronisation
        worker.stop(signal.SIGKILL)
        worker = stack.start_worker()
    feeder.join()

    def counter_total() -> int:
        status, body = worker.get("/counters")
        return body["clustering"]["total"] if status == 200 else -1

    wait_for(lambda: counter_total() == total, 240, f"counter total {total}")
    lost = doubled = compared = 0
    for uid in ks.users:
        expected = ks.expected_user(uid)
        status, body = worker.get(f"/users/{uid}")
        assert status == 200, uid
        for name in VISIT_FIELDS:
            compared += 1
            lost += max(0, expected[name] - body[name])
            doubled += max(0, body[name] - expected[name])
        for name in AVG_FIELDS:
            compared += 1
            assert body[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (uid, name)
    print(
        f"\n{len(ks.records)} records, {KILLS} SIGKILLs, {compared} values compared: "
        f"{lost} visits lost, {doubled} doubled"
    )
    assert (lost, doubled) == (0, 0)
    assert counter_total() == total
