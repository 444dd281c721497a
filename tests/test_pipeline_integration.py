"""The metrics pipeline against the real broker and Redis: exact averages and visits, counters and
re-clustering requests, dead letters with reasons, recovery after a restart."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
import redis

from streams.profiles import PUBLIC_FIELDS
from tests import streamdata
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration
THRESHOLD = 97


def produce(stack: Stack, records: list[tuple[str, str, bytes]], pause_every: int = 0) -> None:
    producer = stack.producer()
    for i, (topic, key, value) in enumerate(records):
        producer.send(topic, key, value)
        if pause_every and i % pause_every == 0:
            producer.flush()
            time.sleep(0.01)  # pacing, so a restart lands mid-stream (not a synchronisation)
    producer.flush()
    producer.close()


def counters(worker) -> dict:
    status, body = worker.get("/counters")
    return body["clustering"] if status == 200 else {}


def assert_users_exact(stack: Stack, worker, ks: streamdata.KnownStream) -> None:
    r = redis.Redis.from_url(stack.settings.redis_url)
    for uid in ks.users:
        expected = ks.expected_user(uid)
        status, body = worker.get(f"/users/{uid}")
        assert status == 200, (uid, body)
        assert set(body) == set(PUBLIC_FIELDS)
        for name, value in expected.items():
            if isinstance(value, float):
                assert body[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (uid, name)
            else:
                assert body[name] == value, (uid, name)
        mirrored = wait_for(
            lambda uid=uid: r.get(f"{stack.settings.redis_prefix}user:{uid}"),
            10,
            f"Redis copy of {uid}",
        )
        assert json.loads(mirrored) == body


def assert_dead_letters(stack: Stack, ks: streamdata.KnownStream) -> None:
    letters = [json.loads(m.value) for m in stack.consume_all("dead-letters", len(ks.bad))]
    assert len(letters) == len(ks.bad)
    by_payload = {}
    for letter in letters:
        assert letter["topic"] in (
            stack.settings.topic("page-times"),
            stack.settings.topic("new-users"),
        )
        assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)
        by_payload.setdefault(letter["payload_sha256"], []).append(letter["error"])
    for _topic, _key, payload, reason in ks.bad:
        # A letter carries the payload's first KB, its length and its sha256 (the identity).
        errors = by_payload.get(hashlib.sha256(payload).hexdigest())
        assert errors, f"no dead letter for {payload[:60]!r}"
        assert any(reason in e for e in errors), (reason, errors)


def test_known_stream_is_exact(stack: Stack) -> None:
    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = str(THRESHOLD)
    worker = stack.start_worker()
    ks = streamdata.build()
    produce(stack, ks.records)
    total = ks.weight()
    wait_for(lambda: counters(worker).get("total") == total, 120, f"counter total {total}")
    state = counters(worker)
    assert state["requests"] == total // THRESHOLD
    assert state["count"] == total % THRESHOLD
    assert state["threshold"] == THRESHOLD
    assert_users_exact(stack, worker, ks)
    assert_dead_letters(stack, ks)
    assert worker.get("/users/nobody")[0] == 404

    def control() -> list[dict]:
        return [json.loads(m.value) for m in stack.consume_all("control", 0)]

    wait_for(
        lambda: sum(r["requests"] for r in control()) == total // THRESHOLD,
        30,
        "every re-clustering request on `control`",
    )
    assert all(r["reason"] == "counter" for r in control())


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_restart_mid_stream_recovers_exactly(stack: Stack, store: str) -> None:
    """The second worker starts with an empty data directory: its table comes from the changelog."""
    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = str(THRESHOLD)
    stack.env["SMARTSTREAM_STORE"] = store
    worker = stack.start_worker()
    ks = streamdata.build(n_users=200, n_views=6000, seed=11)
    total = ks.weight()
    feeder = threading.Thread(target=produce, args=(stack, ks.records, 200))
    feeder.start()
    wait_for(lambda: counters(worker).get("total", 0) > total // 4, 120, "a quarter processed")
    worker.stop()
    worker = stack.start_worker()
    feeder.join()
    wait_for(lambda: counters(worker).get("total") == total, 120, f"counter total {total}")
    state = counters(worker)
    assert state["requests"] == total // THRESHOLD
    assert_users_exact(stack, worker, ks)
