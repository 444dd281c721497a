"""The weighted counter's arithmetic: order-independent threshold crossings and replay detection."""

from __future__ import annotations

import itertools
import random

from streams.metrics import add_weight, is_replay


def fresh() -> dict:
    return {"count": 0, "total": 0, "requests": 0, "sources": {}}


def test_requests_are_floor_of_total_over_threshold_in_any_order():
    weights = [1] * 37 + [5] * 11 + [250, 3]
    expected = sum(weights) // 10
    for seed in range(5):
        random.Random(seed).shuffle(weights)
        state = fresh()
        crossings = sum(add_weight(state, w, 10) for w in weights)
        assert crossings == state["requests"] == expected
        assert state["count"] == sum(weights) % 10 and state["total"] == sum(weights)


def test_zero_threshold_disables_requests():
    state = fresh()
    assert add_weight(state, 500, 0) == 0 and state["requests"] == 0 and state["total"] == 500


def test_a_resent_increment_is_a_replay_and_a_new_one_is_not():
    state = fresh()
    first = {"page-times:0": 10, "new-users:0": 3}
    assert not is_replay(state, first)
    assert is_replay(state, dict(first))
    assert not is_replay(state, {"page-times:0": 11})
    assert not is_replay(state, {"page-times:1": 0})
    assert list(itertools.islice(state["sources"].items(), 3)) == [
        ("page-times:0", 11),
        ("new-users:0", 3),
        ("page-times:1", 0),
    ]
