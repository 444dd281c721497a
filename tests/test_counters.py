"""The weighted counter's arithmetic: absolute per-partition totals make the number of
re-clustering requests floor(total / threshold), in any order, with resends and losses healed."""

from __future__ import annotations

import random

from streams.counters import update_total


def fresh() -> dict:
    return {"total": 0, "requests": 0, "partitions": {}}


def test_requests_are_floor_of_total_over_threshold_in_any_order_with_resends():
    # Each partition's totals grow; messages are shuffled across partitions and some repeated.
    rng = random.Random(3)
    streams = {p: sorted(rng.sample(range(1, 400), 25)) for p in range(4)}
    messages = [(p, t) for p, totals in streams.items() for t in totals]
    for seed in range(5):
        order = messages + rng.sample(messages, 20)
        random.Random(seed).shuffle(order)
        order.sort(key=lambda m: (m[0], m[1]))  # per partition, totals arrive in order
        random.Random(seed).shuffle(order)  # ... but resends may come late: max() ignores them
        state = fresh()
        emitted = sum(update_total(state, p, t, 10) for p, t in order)
        final = sum(totals[-1] for totals in streams.values())
        assert state["total"] == final
        assert emitted == state["requests"] == final // 10


def test_a_lost_total_is_healed_by_the_next_one():
    state = fresh()
    assert update_total(state, 0, 8, 10) == 0
    # the total 19 was lost; 27 arrives
    assert update_total(state, 0, 27, 10) == 2
    assert state["total"] == 27 and state["requests"] == 2


def test_zero_threshold_disables_requests():
    state = fresh()
    assert update_total(state, 0, 500, 0) == 0 and state["requests"] == 0
