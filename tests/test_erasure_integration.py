"""Erasure of a user through the real broker and Redis: after `DELETE /users/{id}` nothing of the
user remains in any compacted topic's latest state, in Redis or in a served view, and the next
re-clustering and retraining no longer see the user."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from streams import topics as t
from tests.conftest import Stack, http, wait_for
from tests.spamdata import corpus, write_youtube_csv

pytestmark = pytest.mark.integration
VICTIM = "victim-7"
MARK = "zqxvictim"  # a word only the victim's comments hold: it enters the filter's vocabulary
ADMIN = {"Authorization": "Bearer adm"}


def compacted_topics(stack: Stack) -> list[str]:
    """The deployment's compacted topics: the contract's and Faust's table changelogs."""
    names = [stack.settings.topic(s.name) for s in t.CONTRACT_TOPICS if s.compacted]
    return names + [
        f"{stack.settings.app_id}-{table}-changelog" for table in ("users", "comments", "counters")
    ]


def latest_state(stack: Stack, topic: str) -> dict[bytes | None, bytes]:
    """Every key's latest value (tombstones remove the key), read from the start to the end."""
    consumer = KafkaConsumer(enable_auto_commit=False, **stack.settings.kafka_python_config())
    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    latest: dict[bytes | None, bytes] = {}
    while any(consumer.position(tp) < end[tp] for tp in tps):
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                if r.value is None:
                    latest.pop(r.key, None)
                else:
                    latest[r.key] = r.value
    consumer.close()
    return latest


def traces(stack: Stack) -> dict[str, int]:
    """Per compacted topic, how many latest records mention the victim or the victim's words."""
    out = {}
    for topic in compacted_topics(stack):
        found = sum(
            1
            for key, value in latest_state(stack, topic).items()
            if any(m.encode() in (key or b"") + value for m in (VICTIM, MARK))
        )
        if found:
            out[topic] = found
    return out


def get(worker, path: str) -> tuple[int, Any]:
    return http("GET", worker.url + path, headers=ADMIN)


def versions(worker) -> tuple[int, int]:
    current = (get(worker, "/clusters")[1] or {}).get("current") or {}
    return current.get("version", 0), (get(worker, "/spam-filters/comments")[1] or {}).get(
        "version", 0
    )


def test_erasure_leaves_nothing_of_the_user(stack: Stack, redis_url: str, tmp_path) -> None:
    stack.env.update(
        SMARTSTREAM_CLUSTERING_THRESHOLD="0",
        SMARTSTREAM_CLUSTERING_RESTARTS="2",
        SMARTSTREAM_ADMIN_TOKEN="adm",
    )
    worker = stack.start_worker()
    stack.pretrain(write_youtube_csv(tmp_path / "Youtube97-Erase.csv", *corpus(200, seed=9)))
    producer = stack.producer()
    users = [f"u{i}" for i in range(30)] + [VICTIM]
    for i, user in enumerate(users):
        producer.new_user(user, age=20 + i, avg1=float(i % 9))
        for page in "ABC":
            producer.page_time(user, page, 1.0 + (i * 7) % 13)
    victim_comments = [f"vc{i}" for i in range(3)]
    for i, comment_id in enumerate(victim_comments):
        producer.comment(comment_id, f"free {MARK}{i} money click", user_id=VICTIM)
    for i in range(6):
        producer.comment(f"oc{i}", f"I love this song {i}", user_id=f"u{i}")
    producer.flush()
    wait_for(lambda: get(worker, "/comments/vc2")[0] == 200, 60, "the victim's comments")
    for comment_id in victim_comments[:2]:
        producer.review(comment_id, True, reviewer="mod")
    producer.review("oc0", False, reviewer="mod")
    producer.flush()
    wait_for(lambda: versions(worker)[1] == 1, 120, "spam filter v1")
    stack.cli("recluster")
    wait_for(lambda: versions(worker)[0] == 1, 120, "clustering v1")
    stack.cli("retrain", "--filter", "comments")
    wait_for(lambda: versions(worker)[1] == 2, 120, "spam filter v2, with the victim's reviews")
    r = redis.Redis.from_url(redis_url)
    user_key = f"{stack.settings.redis_prefix}user:{VICTIM}"
    wait_for(lambda: r.exists(user_key), 30, "the victim's Redis copy")
    before = traces(stack)
    # The test can fail: the victim is everywhere before the erasure.
    assert {
        stack.settings.topic("models"),
        stack.settings.topic("cluster-assignments"),
        stack.settings.topic("training-examples"),
    } <= set(before), before

    assert http("DELETE", worker.url + f"/users/{VICTIM}")[0] == 401
    status, answer = http("DELETE", worker.url + f"/users/{VICTIM}", headers=ADMIN)
    assert status == 202, answer
    wait_for(lambda: get(worker, f"/users/{VICTIM}")[0] == 404, 60, "the profile gone")
    for comment_id in victim_comments:
        wait_for(lambda c=comment_id: get(worker, f"/comments/{c}")[0] == 404, 60, "comments gone")
    # The erasure's re-clustering and retraining no longer see the user.
    wait_for(lambda: versions(worker) == (2, 3), 180, "clustering v2 and spam filter v3")
    clusters = get(worker, "/clusters")[1]["current"]
    assert clusters["users"] == len(users) - 1
    spam = get(worker, "/spam-filters/comments")[1]["current"]
    assert spam["reviewed_size"] == 1  # oc0 only
    wait_for(lambda: not traces(stack), 60, f"no trace in compacted topics (last: {traces(stack)})")
    wait_for(lambda: not r.exists(user_key), 30, "the Redis key deleted")
    assert not [
        k
        for k in r.scan_iter(f"{stack.settings.redis_prefix}*")
        if MARK.encode() in (r.get(k) or b"") or VICTIM.encode() in k
    ]
    for path in ("/dashboard/data", "/site/data", "/clusters", "/counters"):
        body = json.dumps(get(worker, path)[1])
        assert VICTIM not in body and MARK not in body, path
    facts = latest_state(stack, stack.settings.topic("erasures"))
    assert [json.loads(v)["erasure_id"] for v in facts.values()] == [answer["erasure_id"]]
    assert all(VICTIM.encode() not in v for v in facts.values())
    # The CLI erases the same way.
    assert "requested" in stack.cli("erase", "u3").stdout
    wait_for(lambda: get(worker, "/users/u3")[0] == 404, 60, "u3 erased by the CLI")
    assert get(worker, "/users/u4")[0] == 200
