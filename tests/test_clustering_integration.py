"""Re-clustering through the real broker: the counter triggers the trainer, every user ends with an
assignment on `cluster-assignments` and in Redis, the clusters recover the generator's groups, and
the worker keeps processing while BayesPy fits."""

from __future__ import annotations

import itertools
import json
import threading
import time

import numpy as np
import pytest
import redis
from sklearn.metrics import adjusted_rand_score

from producers.population import generate
from producers.traffic import Traffic
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration
USERS = 400
VIEWS = 24000


def feed(stack: Stack, rate: float) -> None:
    """New users, then page views paced at `rate` per second (the stream the worker must keep up
    with while the trainer fits)."""
    producer = stack.producer()
    traffic = Traffic(generate(USERS), seed=3)
    start = time.monotonic()
    for i, event in enumerate(traffic.events()):
        if i >= USERS + VIEWS:
            break
        producer.send(event.topic, event.key, event.value)
        if i % 500 == 0:
            ahead = i / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not synchronising the test
    producer.flush()
    producer.close()


def events_processed(worker) -> float:
    """Sum of smartstream_events_total over the user-keyed input topics, from GET /metrics."""
    status, text = worker.get("/metrics")
    if status != 200:
        return -1.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("smartstream_events_total{")
        and ("page-times" in line or "new-users" in line)
    )


def test_counter_triggers_clustering_and_every_user_is_assigned(stack: Stack) -> None:
    stack.env.update(SMARTSTREAM_CLUSTERING_THRESHOLD="9000", SMARTSTREAM_CLUSTERING_RESTARTS="8")
    worker = stack.start_worker()
    expected_total = VIEWS + 5 * USERS
    feeder = threading.Thread(target=feed, args=(stack, 2500.0))
    feeder.start()

    # Watch the events the users agent has processed (its Prometheus counter): the longest time
    # it stands still while events flow is the longest processing gap, fits included.
    changes: list[float] = []
    last = -1.0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and last < USERS + VIEWS:
        processed = events_processed(worker)
        if processed != last:
            changes.append(time.monotonic())
            last = processed
        time.sleep(0.05)
    feeder.join()
    assert last == USERS + VIEWS, worker.tail()
    gaps = np.diff(changes)
    longest_gap = float(gaps.max()) if len(gaps) else 0.0
    wait_for(
        lambda: worker.get("/counters")[1]["clustering"]["total"] == expected_total,
        60,
        "the counter total",
    )

    runs_expected = expected_total // 9000
    clusters = wait_for(
        lambda: (
            (c := worker.get("/clusters")[1])
            and c["trainer"]["runs"] >= runs_expected
            and not c["trainer"]["running"]
            and c
        ),
        240,
        "the re-clusterings the counter requested",
    )
    current = clusters["current"]
    assert current["version"] >= 2 and clusters["previous"]["version"] == current["version"] - 1
    fit_time = max(current["duration_s"], clusters["previous"]["duration_s"])
    print(f"\nlongest processing gap {longest_gap:.3f} s; fit {fit_time:.2f} s")
    assert longest_gap < max(1.5, fit_time / 2), "the stream stalled during a fit"

    # Every user has an assignment on the topic (latest per key) and in Redis.
    wanted = {str(i + 1) for i in range(USERS)}

    def latest_assignments() -> dict[str, dict]:
        latest = {}
        for m in stack.consume_all("cluster-assignments", 0):
            latest[m.key.decode()] = json.loads(m.value)
        return latest if set(latest) >= wanted else {}

    r = redis.Redis.from_url(stack.settings.redis_url)

    def redis_users() -> dict[str, dict]:
        keys = {uid: f"{stack.settings.redis_prefix}user:{uid}" for uid in wanted}
        return {uid: json.loads(raw) for uid, key in keys.items() if (raw := r.get(key))}

    def agreeing() -> dict[str, dict] | None:
        """Redis's users, once they agree with the topic's latest assignments: the last version's
        re-assignments reach both by different routes, so the test waits for them (or fails at
        the deadline)."""
        assignments, users = latest_assignments(), redis_users()
        if not assignments or set(users) != wanted:
            return None
        fields = ("cluster", "atypical")
        same = all(users[u][f] == assignments[u][f] for u in wanted for f in fields)
        return users if same else None

    users = wait_for(agreeing, 60, "an assignment for every user, Redis agreeing")

    truth = generate(USERS).group
    labels = np.array([users[str(i + 1)]["cluster"] for i in range(USERS)])
    separated = np.isin(truth, [2, 3])  # long stay (25, 25) and short stay (16, 16)
    ari = adjusted_rand_score(truth[separated], labels[separated])
    ari_all = adjusted_rand_score(truth, labels)
    print(f"ARI long/short stay {ari:.3f}, all four groups {ari_all:.3f}")
    assert ari >= 0.9
    band = current["atypical"]["band"]
    avg1 = np.array([users[str(i + 1)]["avg1"] for i in range(USERS)])
    flagged = np.array([users[str(i + 1)]["atypical"] for i in range(USERS)])
    assert (flagged == ((avg1 < band[0]) | (avg1 > band[1]))).all()


def test_streamed_original_population_reproduces_the_reference(stack: Stack) -> None:
    """The generator's 200 users and their past visits, streamed through Kafka, rebuild the
    original UserInfo table exactly; a requested re-clustering then gives the reference result
    (SPEC §6.8) and BN1's band flags the reference 9 users."""
    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = "0"
    worker = stack.start_worker()
    population = generate(200)
    traffic = Traffic(population, seed=5)
    producer = stack.producer()
    sent = 0
    for event in itertools.chain(traffic.new_users(), traffic.history()):
        producer.send(event.topic, event.key, event.value)
        sent += 1
    producer.flush()
    wait_for(lambda: events_processed(worker) == sent, 120, "the population's history")
    _, first = worker.get("/users/1")
    assert first["avg_time_pages"] == pytest.approx(19.9106, abs=1e-4)
    assert first["avg_time_pages_a"] == pytest.approx(20.6634, abs=1e-4)
    assert (first["visits_pages"], first["visits_pages_a"], first["age"]) == (102, 36, 27)

    producer.send(
        "control", "clustering", {"action": "run", "model": "clustering", "reason": "test"}
    )
    producer.flush()
    producer.close()
    clusters = wait_for(
        lambda: (c := worker.get("/clusters")[1]) and c["current"] and c,
        120,
        "the requested re-clustering",
    )["current"]
    sizes = sorted(c["size"] for c in clusters["clusters"])
    assert sizes == [49, 50, 50, 51]
    assert clusters["lower_bound"] == pytest.approx(-951.58, abs=0.05)
    means = sorted(tuple(round(x, 2) for x in c["mean"]) for c in clusters["clusters"])
    assert means == [(15.89, 15.88), (19.97, 19.7), (19.98, 20.09), (24.8, 25.38)]
    band = clusters["atypical"]["band"]
    assert band == pytest.approx([-0.30, 19.92], abs=0.01)
    r = redis.Redis.from_url(stack.settings.redis_url)

    def flagged() -> int | None:
        users = [
            json.loads(r.get(f"{stack.settings.redis_prefix}user:{i}") or b"{}")
            for i in range(1, 201)
        ]
        if any(u.get("model_version") is None for u in users):
            return None
        return sum(bool(u["atypical"]) for u in users)

    assert wait_for(flagged, 60, "every user assigned in Redis") == 9


def test_crontab_schedule_triggers_clustering(stack: Stack) -> None:
    """With the counter disabled, the crontab schedule (every minute here) is the only trigger:
    a run happens at the next minute and says so."""
    stack.env.update(
        SMARTSTREAM_CLUSTERING_THRESHOLD="0",
        SMARTSTREAM_CLUSTERING_CRON="* * * * *",
        SMARTSTREAM_CLUSTERING_RESTARTS="3",
    )
    worker = stack.start_worker()
    producer = stack.producer()
    for event in itertools.islice(Traffic(generate(200), seed=5).events(), 200 + 2000):
        producer.send(event.topic, event.key, event.value)
    producer.flush()
    producer.close()
    wait_for(lambda: events_processed(worker) == 2200, 60, "the events processed")

    def current() -> dict | None:
        status, body = worker.get("/clusters")
        return body.get("current") if status == 200 else None

    run = wait_for(current, 150, "a run at the next minute")
    assert run["reason"] == "crontab"
    assert worker.get("/counters")[1]["clustering"]["requests"] == 0  # not the counter
