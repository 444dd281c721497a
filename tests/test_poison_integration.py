"""Poison records on every topic a worker reads, through the real broker.

Hostile records (integers of hundreds of digits, NaN and Infinity literals, null and wrong keys,
records in the wrong partition, rewritten comment ids, hostile model documents and commands) go
to page-times, new-users, comments, comment-reviews, models, user-commands, control, pretraining
and counter-increments, between valid events. The worker must stay up, keep its models, put
every hostile record in `dead-letters` with a reason, and apply the valid events exactly; a
restart on that history must come up healthy with the same models.
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2

from tests.conftest import Stack, wait_for
from tests.spamdata import corpus, write_youtube_csv

pytestmark = pytest.mark.integration
PARTITIONS = 4
HUGE = 10**400  # json.dumps writes all 401 digits; float() of it overflows


def partition_of(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def dumps(value: Any) -> bytes:
    """JSON as a hostile producer writes it: NaN and Infinity literals allowed."""
    return json.dumps(value).encode()


class Sender:
    """Produces raw records and remembers where each hostile one landed."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.producer = KafkaProducer(
            acks="all", max_request_size=4 << 20, **stack.settings.kafka_python_config()
        )
        self.hostile: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) -> what
        self.valid_views: dict[str, list[tuple[str, float]]] = defaultdict(list)

    def send(
        self, topic: str, key: str | None, value: bytes, partition: int | None = None
    ) -> tuple[str, int, int]:
        meta = self.producer.send(
            self.stack.settings.topic(topic),
            key=None if key is None else key.encode(),
            value=value,
            partition=partition,
        ).get(timeout=30)
        return meta.topic, meta.partition, meta.offset

    def bad(
        self, what: str, topic: str, key: str | None, value: bytes, partition: int | None = None
    ) -> None:
        self.hostile[self.send(topic, key, value, partition)] = what

    def view(self, user: str, page: str, seconds: float) -> None:
        value = {"user_id": user, "page_type": page, "seconds": seconds, "event_id": f"{user}-x"}
        self.send("page-times", user, dumps(value))
        self.valid_views[user].append((page, seconds))

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


def latest_documents(stack: Stack) -> dict[str, dict]:
    consumer = KafkaConsumer(
        stack.settings.topic("models"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
        **stack.settings.kafka_python_config(),
    )
    out = {}
    for record in consumer:
        try:
            out[record.key.decode()] = json.loads(record.value)
        except (ValueError, AttributeError):
            continue
    consumer.close()
    return out


def hostile_documents(docs: dict[str, dict]) -> list[tuple[str, str, bytes]]:
    """(what, key, value) of model documents every worker must refuse; versions above the
    serving ones, so a document that slipped through would show as a new version."""
    clustering, spam = docs["clustering"], docs["spam:comments"]

    def variant(doc: dict, version: Any, path: list, value: Any, *more: tuple) -> dict:
        out = json.loads(json.dumps(doc))
        out["version"] = version
        if "mixture" in out and isinstance(version, int):
            out["mixture"]["version"] = version
        if "model" in out and isinstance(version, int):
            out["model"]["version"] = version
        for steps, new in [(path, value), *more]:
            node = out
            for step in steps[:-1]:
                node = node[step]
            if steps:
                node[steps[-1]] = new
        return out

    coef = base64.b64decode(spam["model"]["classifier"]["coef"])
    longer = base64.b64encode(coef + b"\0" * 80).decode()
    kernel = {
        "type": "kernel",
        "kernel": "rbf",
        "gamma": 1.0,
        "degree": 3,
        "coef0": 0.0,
        "intercept": 0.0,
        "dual_coef": "",
        "sv_shape": [10**9, 10**9],
        "sv_data": "",
        "sv_indices": [],
        "sv_indptr": [0],
    }
    return [
        ("clustering version Infinity", "clustering", dumps(variant(clustering, math.inf, [], 0))),
        ("clustering version 400 digits", "clustering", dumps(variant(clustering, HUGE, [], 0))),
        (
            "mixture label out of range",
            "clustering",
            dumps(variant(clustering, 50, ["mixture", "labels"], {"99": "Z"})),
        ),
        (
            "population b = 0",
            "clustering",
            dumps(variant(clustering, 51, ["population", "b"], 0.0)),
        ),
        ("Platt NaN", "spam:comments", dumps(variant(spam, 50, ["model", "platt"], [math.nan, 0]))),
        (
            "coefficients longer than the vocabulary",
            "spam:comments",
            dumps(variant(spam, 51, ["model", "classifier", "coef"], longer)),
        ),
        (
            "a 1e9 x 1e9 support-vector matrix declared in a small document",
            "spam:comments",
            dumps(
                variant(
                    spam,
                    52,
                    ["model", "classifier"],
                    kernel,
                    (["model", "config", "classifier"], "svc"),
                    (["model", "config", "kernel"], "rbf"),
                )
            ),
        ),
        ("version as a string", "clustering", dumps(variant(clustering, "53", [], 0))),
        ("name is not the key", "clustering", dumps(variant(spam, 54, [], 0))),
        ("unknown model", "evil", dumps(variant(clustering, 55, [], 0))),
        ("not JSON", "clustering", b"\x80\x81 not json"),
    ]


def send_hostile_events(s: Sender) -> None:
    """Every hostile record for the event topics, comments and reviews."""
    u = "pv0"
    right, wrong = partition_of(u), (partition_of(u) + 1) % PARTITIONS
    view = {"user_id": u, "page_type": "A", "seconds": 3.0}
    s.bad("seconds 400 digits", "page-times", u, dumps({**view, "seconds": HUGE}))
    s.bad("ts 400 digits", "page-times", u, dumps({**view, "ts": HUGE}))
    s.bad("seconds NaN", "page-times", u, dumps({**view, "seconds": math.nan}))
    s.bad("seconds Infinity", "page-times", u, dumps({**view, "seconds": math.inf}))
    s.bad("null key", "page-times", None, dumps(view), partition=right)
    s.bad("key of another user", "page-times", "pv1", dumps(view))
    s.bad("wrong partition", "page-times", u, dumps(view), partition=wrong)
    s.bad("not UTF-8", "page-times", u, b"\xff\xfe{")
    joined = {"user_id": "pv2", "age": 30}
    s.bad("avg1 400 digits", "new-users", "pv2", dumps({**joined, "avg1": HUGE}))
    s.bad("age 400 digits", "new-users", "pv2", dumps({**joined, "age": HUGE}))
    s.bad("ts Infinity", "new-users", "pv2", dumps({**joined, "ts": math.inf}))
    s.bad("null key", "new-users", None, dumps(joined), partition=partition_of("pv2"))
    comment = {"comment_id": "cr1", "text": "a song I love"}
    s.send("comments", "cr1", dumps(comment))
    s.bad("comment rewritten", "comments", "cr1", dumps({**comment, "text": "FREE MONEY"}))
    s.bad("comment null key", "comments", None, dumps(comment), partition=partition_of("cr1"))
    s.bad("comment key mismatch", "comments", "other", dumps(comment))
    s.bad(
        "comment ts 400 digits",
        "comments",
        "cr2",
        dumps({"comment_id": "cr2", "text": "x", "ts": HUGE}),
    )
    review = {"comment_id": "cr1", "is_spam": False}
    s.bad("review is_spam a string", "comment-reviews", "cr1", dumps({**review, "is_spam": "no"}))
    s.bad("review ts 400 digits", "comment-reviews", "cr1", dumps({**review, "ts": HUGE}))
    s.bad("review null key", "comment-reviews", None, dumps(review), partition=partition_of("cr1"))
    s.bad(
        "review wrong partition",
        "comment-reviews",
        "cr1",
        dumps(review),
        partition=(partition_of("cr1") + 1) % PARTITIONS,
    )


def send_hostile_internal(s: Sender) -> None:
    """Every hostile record for the internal topics (commands, control, counters, pretraining)."""
    reassign = {"action": "reassign", "model": "clustering"}
    legacy = {"action": "reassign", "model": {"name": "clustering", "version": math.inf}}
    for what, value in [
        ("command version Infinity", {**reassign, "version": math.inf}),
        ("command version 400 digits", {**reassign, "version": HUGE}),
        ("legacy command with a hostile model", legacy),
        ("unknown command", {"action": "explode"}),
    ]:
        s.bad(what, "user-commands", None, dumps(value), partition=0)
    s.bad("command not JSON", "user-commands", None, b"{{{", partition=1)
    for what, value in [
        ("control not JSON", b"\x00\x01"),
        ("control unknown model", dumps({"action": "run", "model": "nope"})),
        ("control requests 400 digits", dumps({"model": "clustering", "requests": HUGE})),
        ("control a list", dumps([1, 2])),
    ]:
        s.bad(what, "control", "clustering", value)
    for what, value in [
        ("total 400 digits", {"model": "clustering", "partition": 0, "total": HUGE}),
        ("total Infinity", {"model": "clustering", "partition": 0, "total": math.inf}),
        ("partition -1", {"model": "clustering", "partition": -1, "total": 1}),
        (
            "extra 400 digits",
            {"model": "spam:comments", "partition": 0, "total": 1, "extra": {"tp": HUGE}},
        ),
        ("total of a model no kind registered", {"model": "spam:nope", "partition": 0, "total": 1}),
    ]:
        s.bad(what, "counter-increments", "clustering", dumps(value))
    for what, value in [
        ("pretraining not JSON", b"nope"),
        ("pretraining is_spam a string", dumps({"filter": "comments", "text": "t", "is_spam": 1})),
        ("pretraining without text", dumps({"filter": "comments", "is_spam": True})),
    ]:
        s.bad(what, "pretraining", f"comments:{what}", value)


def test_keys_and_comment_ids_cannot_corrupt_state(stack: Stack) -> None:
    """The key and comment-rewrite cases alone (they failed on the landed code): a user's
    unkeyed events on two partitions, and a comment id posted again with other text after its
    review, are refused with reasons, not applied as a replay or a rewrite."""
    worker = stack.start_worker()
    s = Sender(stack)
    view = {"user_id": "k1", "page_type": "A", "seconds": 5.0}
    s.bad("unkeyed, partition 0", "page-times", None, dumps(view), partition=0)
    s.bad("unkeyed, partition 1", "page-times", None, dumps(view), partition=1)
    s.view("k1", "B", 2.0)
    s.send("comments", "kc", dumps({"comment_id": "kc", "text": "lovely chorus"}))
    s.send("comment-reviews", "kc", dumps({"comment_id": "kc", "is_spam": False}))
    wait_for(lambda: (worker.get("/comments/kc")[1] or {}).get("review") is False, 60, "review")
    s.bad("rewrite", "comments", "kc", dumps({"comment_id": "kc", "text": "FREE MONEY click"}))
    s.close()
    assert_exact(worker, s)
    letters = wait_for(
        lambda: (d := dead_letters(stack)) and set(s.hostile) <= set(d) and d, 60, "dead letters"
    )
    assert {letters[where] for where in s.hostile} == {
        "key null is not the user_id 'k1'",
        "comment id already holds another text (first write wins)",
    }
    row = worker.get("/comments/kc")[1]
    assert (row["text"], row["review"]) == ("lovely chorus", False)


def versions(worker) -> tuple[int, int]:
    clusters = worker.get("/clusters")[1] or {}
    current = clusters.get("current") or {}
    spam = worker.get("/spam-filters/comments")[1] or {}
    return current.get("version", 0), spam.get("version", 0)


def expected_profile(views: list[tuple[str, float]]) -> dict[str, Any]:
    """The user's averages computed here, independently of streams.profiles."""
    out: dict[str, Any] = {"visits_pages": len(views)}
    out["avg_time_pages"] = sum(sec for _, sec in views) / len(views)
    for page in "abcdefghij":
        mine = [sec for p, sec in views if p.lower() == page]
        out[f"visits_pages_{page}"] = len(mine)
        out[f"avg_time_pages_{page}"] = sum(mine) / len(mine) if mine else 0.0
    return out


def assert_exact(worker, s: Sender) -> None:
    for user, views in s.valid_views.items():
        expected = expected_profile(views)
        n = len(views)
        _, body = wait_for(
            lambda u=user, n=n: (
                (r := worker.get(f"/users/{u}"))[0] == 200 and r[1]["visits_pages"] == n and r
            ),
            60,
            f"{user}'s {n} views",
        )
        for name, value in expected.items():
            assert body[name] == pytest.approx(value, rel=1e-12), (user, name)


def dead_letters(stack: Stack) -> dict[tuple[str, int, int], str]:
    out = {}
    for m in stack.consume_all("dead-letters", 0):
        letter = json.loads(m.value)
        out[(letter["topic"], letter["partition"], letter["offset"])] = letter["error"]
    return out


def test_poison_records_on_every_topic(stack: Stack, tmp_path) -> None:
    stack.env.update(
        SMARTSTREAM_PARTITIONS=str(PARTITIONS),
        SMARTSTREAM_CLUSTERING_THRESHOLD="0",
        SMARTSTREAM_CLUSTERING_RESTARTS="2",
    )
    worker = stack.start_worker()
    s = Sender(stack)
    stack.pretrain(write_youtube_csv(tmp_path / "Youtube98-Poison.csv", *corpus(200, seed=5)))
    for i in range(40):
        s.send("new-users", f"pv{i}", dumps({"user_id": f"pv{i}", "avg1": float(i % 7)}))
        for j in range(3):
            s.view(f"pv{i}", "ABC"[j], 1.0 + (i * 3 + j) % 11)
    wait_for(lambda: versions(worker)[1] == 1, 120, "spam filter v1")
    stack.cli("recluster")
    wait_for(lambda: versions(worker) == (1, 1), 120, "clustering v1")
    documents = latest_documents(stack)

    for what, key, value in hostile_documents(documents):
        s.bad(what, "models", key, value)
    send_hostile_events(s)
    send_hostile_internal(s)
    for i in range(40):
        s.view(f"pv{i}", "D", 2.5 + i % 5)
    stack.cli("retrain", "--filter", "comments")  # reads the hostile pretraining records
    wait_for(lambda: versions(worker) == (1, 2), 120, "spam filter v2 from the retrain")

    assert_exact(worker, s)
    letters = wait_for(
        lambda: (d := dead_letters(stack)) and set(s.hostile) <= set(d) and d,
        90,
        "a dead letter for every hostile record",
    )
    missing = {what for where, what in s.hostile.items() if not letters.get(where)}
    assert not missing, missing
    for where, what in sorted(s.hostile.items()):
        print(f"{where[0].split('-', 1)[1]:>20} {what:>45}: {letters[where][:90]}")
    assert worker.proc.poll() is None, "the worker died"
    assert worker.get("/comments/cr1")[1]["text"] == "a song I love"
    assert versions(worker) == (1, 2)

    # Restart on that history: healthy, the same models, valid events still exact.
    worker.stop()
    worker = stack.start_worker()
    wait_for(lambda: versions(worker) == (1, 2), 60, "the same models after the restart")
    for i in range(40):
        s.view(f"pv{i}", "E", 4.0 + i % 3)
    assert_exact(worker, s)
    assert worker.get("/health")[0] == 200
    assert worker.proc.poll() is None
    s.close()
    print(f"\n{len(s.hostile)} hostile records on {len({t for t, _, _ in s.hostile})} topics")
