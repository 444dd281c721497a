"""Hostile input: arbitrary bytes, deep or huge JSON, wrong types, unicode edge cases and beacon
bodies. Every record is processed or refused with a reason (Rejected), never another exception;
through a live worker, every HTTP answer is 204 or 400 and every refused record is dead-lettered
while the valid ones around it are processed."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.records import (
    Rejected,
    loads_object,
    parse_comment,
    parse_comment_review,
    parse_new_user,
    parse_page_time,
)
from tests.conftest import Stack, wait_for

PARSERS = {
    "page-times": lambda o: parse_page_time(o, 86400),
    "new-users": parse_new_user,
    "comments": parse_comment,
    "comment-reviews": parse_comment_review,
}
# Integers of hundreds of digits (float() of them overflows), and floats with NaN and infinities
# (json.dumps writes them as the NaN / Infinity literals a hostile producer can send).
huge_integers = st.integers(min_value=10**309, max_value=10**450) | st.integers(
    min_value=-(10**450), max_value=-(10**309)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | huge_integers | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)
FIELDS = [
    "user_id",
    "page_type",
    "seconds",
    "metric",
    "time_spent",
    "age",
    "sex",
    "avg1",
    "comment_id",
    "text",
    "filter",
    "is_spam",
    "reviewer",
    "ts",
    "event_id",
]
shaped = st.dictionaries(
    st.sampled_from(FIELDS),
    json_values
    | st.sampled_from(
        ["A", "J", "AB", "", "time_spent", "\ufeff", "\x00", "é", "\U0001d538", "M", "F"]
    ),
    max_size=8,
)


def outcome(topic: str, raw: bytes) -> str:
    try:
        PARSERS[topic](loads_object(raw, 65536))
        return "ok"
    except Rejected as exc:
        assert str(exc)
        return "rejected"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(PARSERS)))
def test_arbitrary_bytes_are_processed_or_refused(raw, topic):
    outcome(topic, raw)


@settings(max_examples=400, deadline=None)
@given(shaped, st.sampled_from(sorted(PARSERS)))
def test_wrong_types_and_unicode_are_processed_or_refused(obj, topic):
    outcome(topic, json.dumps(obj).encode())


VALID = {
    "page-times": {"user_id": "u", "page_type": "A", "seconds": 2.0, "ts": 1.0},
    "new-users": {"user_id": "u", "age": 30, "avg1": 1.5, "ts": 1.0},
    "comments": {"comment_id": "c", "text": "hi", "ts": 1.0},
    "comment-reviews": {"comment_id": "c", "is_spam": True, "ts": 1.0},
}
hostile_numbers = huge_integers | st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.data())
def test_hostile_numbers_in_valid_records_are_refused(topic, data):
    """A valid record with one numeric field replaced by a number outside float range, NaN or
    an infinity: a rejection, never an OverflowError (a poison pill on the landed code)."""
    record = dict(VALID[topic])
    field = data.draw(st.sampled_from([k for k, v in record.items() if type(v) in (int, float)]))
    record[field] = data.draw(hostile_numbers)
    assert outcome(topic, json.dumps(record).encode()) == "rejected"


@given(st.integers(min_value=1, max_value=50_000))
def test_deep_nesting_is_refused_not_a_crash(depth):
    raw = b"[" * depth + b"]" * depth
    assert outcome("page-times", raw) == "rejected"


def hostile_payloads(n: int, seed: int = 0) -> list[bytes]:
    """A deterministic fuzz corpus: random bytes, mangled contract records, deep and huge JSON."""
    rng = random.Random(seed)
    base = [
        {"user_id": "h1", "page_type": "A", "seconds": 3.5},
        {"metric": "time_spent", "user_id": 7, "page_type": "b", "time_spent": 1.5},
        {"user_id": "h2", "age": 30, "sex": "F", "avg1": 1.0},
        {"comment_id": "hc", "text": "<script>alert(1)</script>"},
        {"comment_id": "hc", "is_spam": True},
    ]
    values = [
        None,
        True,
        -1,
        0,
        1e308,
        float("inf"),
        "",
        "A",
        "AB",
        "\ud800",
        "\x00",
        "💥" * 50,
        [1],
        {"a": 1},
        2**64,
        "x" * 5000,
    ]
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.25:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        elif kind < 0.75:
            obj = dict(rng.choice(base))
            for _ in range(rng.randrange(1, 3)):
                obj[rng.choice(FIELDS)] = rng.choice(values)
            out.append(
                json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
            )
        elif kind < 0.9:
            depth = rng.randrange(100, 5000)
            out.append(b'{"user_id": ' + b"[" * depth + b"]" * depth + b"}")
        else:
            out.append(b'{"user_id": "' + b"u" * rng.randrange(60_000, 200_000) + b'"}')
    return out


@pytest.mark.integration
def test_live_worker_survives_hostile_input(stack: Stack) -> None:
    worker = stack.start_worker()
    payloads = hostile_payloads(240)
    routes = {
        "/events/page-time": "page-times",
        "/events/new-user": "new-users",
        "/comments": "comments",
    }
    answers = {}
    for i, raw in enumerate(payloads):
        route = list(routes)[i % 3]
        content_type = "text/plain" if i % 2 else "application/json"
        status, _ = worker.post(route, raw, content_type=content_type)
        answers[status] = answers.get(status, 0) + 1
        # Only the beacon route takes text/plain (no cross-site posts elsewhere): 415.
        refused_type = content_type == "text/plain" and route != "/events/page-time"
        expected = {415} if refused_type else {204, 400}
        assert status in expected, (route, raw[:80], status)
    producer = stack.producer(max_request_size=1 << 20)
    expected_rejects = 0
    for i, raw in enumerate(payloads):
        topic = sorted(PARSERS)[i % 4]
        key = f"k{i}"
        if len(raw) < 900_000:
            producer.send(topic, key, raw)
            verdict = outcome(topic, raw)
            obj_key_ok = True
            if verdict == "ok" and topic in ("page-times", "new-users"):
                obj_key_ok = PARSERS[topic](loads_object(raw, 65536)).user_id == key
            expected_rejects += verdict == "rejected" or not obj_key_ok
    producer.page_time("sentinel", "C", 12.0)
    producer.comment("sentinel-c", "hello after the storm")
    producer.flush()
    producer.close()
    wait_for(lambda: worker.get("/users/sentinel")[0] == 200, 60, "the valid event after the storm")
    wait_for(lambda: worker.get("/comments/sentinel-c")[0] == 200, 60, "the valid comment")
    letters = stack.consume_all("dead-letters", expected_rejects, timeout=60)
    assert all(json.loads(m.value)["error"] for m in letters)
    assert worker.get("/health")[0] == 200
    print(f"\nHTTP answers {answers}; {expected_rejects} refused records dead-lettered")
