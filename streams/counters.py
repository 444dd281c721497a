"""Weighted counters and run requests (SPEC §4): each model's counter sums the absolute totals
its partitions' owners send to `counter-increments` and asks the trainer (streams.trainer) for a
run each time it crosses the model's threshold.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from typing import Any

import faust
from faust.web import Request, Response, View

from streams import topics as t
from streams.app import app, control_topic, counter_increments_topic, settings
from streams.auth import Role, requires
from streams.deadletters import send_dead_letter
from streams.records import (
    CounterTotal,
    Rejected,
    RunRequest,
)
from streams.serving import CLUSTERING
from streams.trainer import kinds

TOTALS = t.SPECS[t.COUNTER_INCREMENTS]

counters_table = app.Table(
    "counters",
    default=None,
    partitions=1,
    key_type=bytes,  # raw user-id keys, as on the source topics; JSON values
    help="Weighted counters of the models: count, threshold, requests emitted.",
)


def send_total(model: str, partition: int, total: int, extra: dict[str, int] | None = None) -> None:
    """A partition's absolute total for a model's counter (see :func:`update_total`)."""
    message = CounterTotal(model=model, partition=partition, total=total, extra=extra)
    counter_increments_topic.send_soon(key=model.encode(), value=message.dumps())


def threshold_of(model: str) -> int:
    """The count at which `model`'s kind asks for a run (clustering: weighted events; a spam
    filter: moderators' reviews); 0 for a model no kind registered."""
    kind = kinds.get(model)
    return kind.threshold() if kind is not None else 0


def stored_counter(model: str) -> dict[str, Any]:
    """A copy of the model's stored counter: the memory store hands out the stored object itself."""
    state = copy.deepcopy(counters_table.get(model.encode()))
    if state is None:
        state = {"model": model, "total": 0, "requests": 0, "partitions": {}, "extras": {}}
    return state


def counter_state(model: str) -> dict[str, Any]:
    """The stored counter with what derives from it: the threshold, the count towards it, and
    the partitions' extra figures summed."""
    state = stored_counter(model)
    threshold = threshold_of(model)
    state["threshold"] = threshold or None
    state["count"] = state["total"] % threshold if threshold > 0 else state["total"]
    summed: dict[str, int] = defaultdict(int)
    for extra in state.get("extras", {}).values():
        for name, value in extra.items():
            summed[name] += value
    state["summed"] = dict(summed)
    return state


def update_total(
    state: dict[str, Any],
    partition: int,
    total: int,
    threshold: int,
    extra: dict[str, int] | None = None,
) -> int:
    """Take a partition's absolute total; return how many new run requests it makes.

    Requests are floor(total / threshold) over the sum of the partitions' totals, whatever order
    the totals arrive in; the counter (count) is the overflow, total modulo threshold. `extra`
    figures (e.g. a filter's confusion counts) travel with the total they belong to.
    """
    partitions = state["partitions"]
    if total >= partitions.get(str(partition), 0) and extra is not None:
        state.setdefault("extras", {})[str(partition)] = extra
    partitions[str(partition)] = max(total, partitions.get(str(partition), 0))
    state["total"] = sum(partitions.values())
    if threshold <= 0:
        return 0
    new = state["total"] // threshold - state["requests"]
    if new <= 0:
        return 0
    state["requests"] += new
    return new


@app.agent(counter_increments_topic)
async def counters_agent(stream: faust.StreamT) -> None:
    async for event in stream.events():
        try:
            total = TOTALS.decode(event.message.value, settings.max_payload_bytes)
        except Rejected as exc:
            await send_dead_letter(event.message, f"bad counter total: {exc}")
            continue
        if total.model not in kinds:
            await send_dead_letter(event.message, f"counter total of unknown model {total.model!r}")
            continue
        state = stored_counter(total.model)
        threshold = threshold_of(total.model)
        new = update_total(state, total.partition, total.total, threshold, total.extra)
        counters_table[total.model.encode()] = state
        if new:
            await request_run(total.model, "counter", new)


async def request_run(model: str, reason: str, requests: int = 1) -> None:
    """Ask the trainer (the owner of the single `control` partition) for a model run.

    `requests` counts the threshold crossings one increment made; the trainer coalesces them.
    """
    request = RunRequest(model=model, reason=reason, requests=requests, ts=time.time())
    # Sent now, not attached to the current event (Faust would hold it until the commit): a
    # repeat after a crash is harmless, the trainer coalesces requests.
    await control_topic.send(key=model.encode(), value=request.dumps(), force=True)


@app.page("/counters")
class CountersView(View):
    """Every model's counter, from the worker that owns the counters' single partition."""

    @requires(Role.SERVER)
    @app.table_route(table=counters_table, exact_key=CLUSTERING)
    async def get(self, request: Request) -> Response:
        models = {key.decode() for key in counters_table} | {CLUSTERING}
        return self.json({model: counter_state(model) for model in sorted(models)})
