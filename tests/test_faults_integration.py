"""Fault test: SIGKILL the worker at seeded random moments while 100,000 events stream, restart it
each time, and compare every user's averages and visits and the counter with ground truth:
nothing lost, nothing doubled (at-least-once delivery made exact by the profiles' applied-offset
marks and by counters derived from the table)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams.profiles import AVG_FIELDS, VISIT_FIELDS
from tests import streamdata
from tests.conftest import Stack, Worker, start_broker, stop_broker, wait_for

pytestmark = pytest.mark.integration
KILLS = 3


def test_sigkill_mid_stream_loses_and_doubles_nothing(stack: Stack) -> None:
    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = "0"
    ks = streamdata.build(n_users=5000, n_views=100_000, seed=21)
    total = ks.weight()
    worker = stack.start_worker()
    feeder = paced_feed(stack, ks.records, lambda producer, r: producer.send(*r), 5000, 0.2)
    worker = kill_and_restart(stack, worker, KILLS, random.Random(5), 1.0, 3.0)
    feeder.join()

    wait_for(lambda: counter_total(worker) == total, 240, f"counter total {total}")
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
    assert counter_total(worker) == total


def paced_feed(
    stack: Stack, items: list[Any], send: Callable[[Any, Any], Any], every: int, pause: float
) -> threading.Thread:
    """Produce `items` (`send(producer, item)`) from a started thread, flushing and pausing every
    `every` items so that the kills land mid-stream."""

    def feed() -> None:
        producer = stack.producer()
        for i, item in enumerate(items):
            send(producer, item)
            if i % every == 0:
                producer.flush()
                time.sleep(pause)  # pacing, not a synchronisation
        producer.flush()
        producer.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    return feeder


def kill_and_restart(
    stack: Stack, worker: Worker, kills: int, rng: random.Random, low: float, high: float
) -> Worker:
    """SIGKILL the worker `kills` times, `low`..`high` s apart, starting a new one each time."""
    for _ in range(kills):
        time.sleep(rng.uniform(low, high))  # a random moment to kill at, not a synchronisation
        worker.stop(signal.SIGKILL)
        worker = stack.start_worker()
    return worker


def send_all(producer, records: list[tuple[str, str, bytes]]) -> None:
    for topic, key, value in records:
        producer.send(topic, key, value)
    producer.flush()


def counter_total(worker) -> int:
    status, body = worker.get("/counters")
    return body["clustering"]["total"] if status == 200 else -1


def expected_exact(worker, ks: streamdata.KnownStream) -> None:
    for uid in ks.users:
        expected = ks.expected_user(uid)
        status, body = worker.get(f"/users/{uid}")
        assert status == 200, uid
        for name in (*VISIT_FIELDS, *AVG_FIELDS):
            assert body[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (uid, name)


def stream_around(
    stack: Stack, worker, ks: streamdata.KnownStream, fault, timeout: float, what: str
) -> Any:
    """Stream the first half of `ks`; once `worker` is processing, run `fault()`; stream the
    second half with a new producer; wait until `worker` has counted everything and check every
    user exact. Returns what `fault()` returned."""
    producer = stack.producer()
    half = len(ks.records) // 2
    send_all(producer, ks.records[:half])
    producer.close()
    wait_for(lambda: counter_total(worker) > 0, 60, "the worker processing")
    result = fault()
    producer = stack.producer()
    send_all(producer, ks.records[half:])
    producer.close()
    wait_for(lambda: counter_total(worker) == ks.weight(), timeout, what)
    expected_exact(worker, ks)
    return result


def test_two_workers_one_killed_the_other_takes_over(stack: Stack) -> None:
    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = "0"
    ks = streamdata.build(n_users=2000, n_views=30_000, seed=22)
    first, second = stack.start_worker(), stack.start_worker()
    stream_around(
        stack, first, ks, lambda: second.stop(signal.SIGKILL), 240, "the survivor's counter total"
    )


def restart_broker(kafka_dir: Path, bootstrap: str) -> float:
    """Stop the test run's broker (SIGTERM, a clean shutdown) and start it again on its data with
    .ci/kafka/start.sh; returns the seconds it was away."""
    start = time.monotonic()
    stop_broker(kafka_dir)
    start_broker(kafka_dir, bootstrap)
    return time.monotonic() - start


def test_broker_restart_mid_stream(stack: Stack) -> None:
    """The broker stops while a worker is processing and comes back on its data: the worker
    reconnects (with or without a rebalance) and every value is still exact."""
    kafka_dir = os.environ.get("TEST_KAFKA_DIR")
    if not kafka_dir:
        pytest.skip("the broker was not started by scripts/test.sh, so it cannot be restarted")
    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = "0"
    ks = streamdata.build(n_users=3000, n_views=60_000, seed=23)
    worker = stack.start_worker()

    def restart() -> tuple[int, float]:
        at_stop = counter_total(worker)
        return at_stop, restart_broker(Path(kafka_dir), stack.env["SMARTSTREAM_KAFKA_BOOTSTRAP"])

    at_stop, away = stream_around(
        stack, worker, ks, restart, 300, "the counter total after restart"
    )
    assert worker.proc.poll() is None, worker.tail()  # the same process all along
    print(
        f"\n{len(ks.records)} records; broker stopped at counter {at_stop} of {ks.weight()}, "
        f"away {away:.1f} s; {len(ks.users)} users exact"
    )


def test_sigkill_while_labelling_loses_no_label(stack: Stack, tmp_path: Path) -> None:
    """Comments stream while the worker is SIGKILLed twice. Labels are at-least-once records
    keyed by comment id, idempotent per (comment, model version): every comment must have a label
    of the serving version, no comment two different verdicts for one version; the records a
    crash repeated (identical but for `ts`) are counted."""
    from tests.spamdata import corpus, write_youtube_csv

    worker = stack.start_worker()
    path = write_youtube_csv(tmp_path / "Youtube98-Faults.csv", *corpus(300, seed=3))
    stack.pretrain(path)
    wait_for(lambda: worker.get("/spam-filters/comments")[1].get("version") == 1, 120, "model")
    texts, _ = corpus(20_000, seed=4)

    helpers = [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))]
    helpers = [p for p in helpers if _is_helper(p, worker.proc.pid)]
    assert len(helpers) == 1, helpers  # the pretraining fit ran in it
    comments = [(f"k{i}", text) for i, text in enumerate(texts)]
    feeder = paced_feed(stack, comments, lambda producer, c: producer.comment(*c), 1000, 0.1)
    worker = kill_and_restart(stack, worker, 2, random.Random(7), 0.5, 1.5)
    feeder.join()
    # The fit helper of a SIGKILLed worker dies with it.
    wait_for(lambda: not Path(f"/proc/{helpers[0]}").exists(), 10, "the orphaned helper gone")

    with contextlib.suppress(AssertionError):  # what is still missing is counted as lost below
        wait_for(
            lambda: len(stack.labels_by_comment()) == len(texts), 180, "a label for every comment"
        )
    labels = stack.labels_by_comment()
    lost = [f"k{i}" for i in range(len(texts)) if f"k{i}" not in labels]
    verdicts = {
        cid: {(v["model_version"], v["is_spam"], v["score"]) for v in values}
        for cid, values in labels.items()
    }
    conflicting = [cid for cid, seen in verdicts.items() if len(seen) != 1]
    repeated = sum(len(values) - 1 for values in labels.values())
    print(
        f"\n{len(texts)} comments, 2 SIGKILLs: {len(lost)} unlabelled, {len(conflicting)} with "
        f"conflicting labels, {repeated} label records repeated by a crash (idempotent)"
    )
    assert (lost, conflicting) == ([], [])
    assert {version for seen in verdicts.values() for version, _, _ in seen} == {1}


def test_redis_outage_is_caught_up(stack: Stack, tmp_path) -> None:
    """A Redis of the test's own is frozen (SIGSTOP: it keeps its data but answers nothing) while
    events flow: processing goes on, and once it answers again (SIGCONT) every user's latest
    record reaches it."""
    import json
    import shutil
    import subprocess

    import redis

    from tests.conftest import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server")
    port = free_port()

    def start_redis() -> subprocess.Popen:
        proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: _pings(port), 20, "redis up")
        return proc

    redis_proc = start_redis()
    stack.env.update(
        SMARTSTREAM_REDIS_URL=f"redis://127.0.0.1:{port}/0", SMARTSTREAM_CLUSTERING_THRESHOLD="0"
    )
    worker = stack.start_worker()
    ks = streamdata.build(n_users=300, n_views=6000, seed=23)
    stream_around(
        stack,
        worker,
        ks,
        lambda: redis_proc.send_signal(signal.SIGSTOP),
        120,
        "processing while Redis is down",
    )
    redis_proc.send_signal(signal.SIGCONT)
    try:
        r = redis.Redis(port=port)
        prefix = stack.settings.redis_prefix

        def caught_up() -> bool:
            for uid in ks.users:
                raw = r.get(f"{prefix}user:{uid}")
                if raw is None:
                    return False
            return True

        wait_for(caught_up, 60, "every user in Redis")
        wait_for(
            lambda: all(
                json.loads(r.get(f"{prefix}user:{uid}")) == worker.get(f"/users/{uid}")[1]
                for uid in ks.users
            ),
            60,
            "Redis brought up to date",
        )
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


def _pings(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.exceptions.ConnectionError:
        return False


def test_killed_fit_leaves_the_previous_model_serving(stack: Stack) -> None:
    """The helper process that fits is SIGKILLed: the run fails, version 1 keeps serving, and the
    next request fits again in a fresh helper."""
    import itertools
    import os

    from producers.population import generate
    from producers.traffic import Traffic

    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = "0"
    worker = stack.start_worker()
    producer = stack.producer()
    traffic = Traffic(generate(200), seed=5)
    for event in itertools.chain(traffic.new_users(), traffic.history()):
        producer.send(event.topic, event.key, event.value)

    def clusters() -> dict:
        return worker.get("/clusters")[1]

    def request() -> None:
        producer.send("control", "clustering", {"action": "run", "model": "clustering"})
        producer.flush()

    request()
    wait_for(lambda: (c := clusters())["current"] and not c["trainer"]["running"], 120, "v1")
    first = clusters()["current"]
    helpers = [
        int(p) for p in os.listdir("/proc") if p.isdigit() and _is_helper(int(p), worker.proc.pid)
    ]
    assert len(helpers) == 1, helpers
    os.kill(helpers[0], signal.SIGKILL)
    request()
    state = wait_for(
        lambda: (c := clusters())["trainer"]["failures"] == 1 and not c["trainer"]["running"] and c,
        60,
        "the failed run",
    )
    assert state["current"]["version"] == first["version"]
    assert "BrokenProcessPool" in state["trainer"]["last_error"]
    status, user = worker.get("/users/1")
    assert status == 200 and user["cluster"] is not None
    request()
    # The new version serves as soon as it is published; the run counts once it has finished.
    again = wait_for(
        lambda: (
            (c := clusters())["current"]["version"] == first["version"] + 1
            and not c["trainer"]["running"]
            and c
        ),
        120,
        "a fit in a fresh helper",
    )
    assert (again["trainer"]["runs"], again["trainer"]["failures"]) == (2, 1)
    producer.close()


def _is_helper(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return False
    return ppid == parent and b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline


def test_comments_change_hands_while_labelling(stack: Stack, tmp_path: Path) -> None:
    """Comments stream while a second worker joins and the first then leaves (two rebalances:
    the comment partitions, read by each worker's direct fetcher, move twice). Every comment is
    labelled by the serving version, none with two verdicts, and the graceful handovers repeat
    no label: each worker commits what it labelled before it gives a partition away."""
    from tests.spamdata import corpus, write_youtube_csv

    first = stack.start_worker()
    stack.pretrain(write_youtube_csv(tmp_path / "Youtube97-Moves.csv", *corpus(300, seed=5)))
    wait_for(lambda: first.get("/spam-filters/comments")[1].get("version") == 1, 120, "model")
    texts, _ = corpus(12_000, seed=6)
    comments = [(f"m{i}", text) for i, text in enumerate(texts)]
    feeder = paced_feed(stack, comments, lambda producer, c: producer.comment(*c), 500, 0.1)
    second = stack.start_worker()
    wait_for(lambda: len(stack.labels_by_comment()) > len(texts) // 2, 120, "half the labels")
    first.stop()  # SIGTERM: a graceful leave
    feeder.join()
    wait_for(lambda: len(stack.labels_by_comment()) == len(texts), 180, "a label per comment")
    labels = stack.labels_by_comment()
    verdicts = {cid: {(v["model_version"], v["is_spam"]) for v in vs} for cid, vs in labels.items()}
    repeated = sum(len(values) - 1 for values in labels.values())
    assert second.proc.poll() is None, second.tail()
    assert [cid for cid, seen in verdicts.items() if len(seen) != 1] == []
    assert {version for seen in verdicts.values() for version, _ in seen} == {1}
    assert repeated == 0, f"{repeated} labels repeated by a graceful handover"
