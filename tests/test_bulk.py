"""Bulk delivery (streams/adapter/bulk.py) with in-memory fakes, no broker: which records reach
which handler, in what order and concurrency, and what Faust's own commit logic then finds acked
(its ``_new_offset`` is the real one: it decides the offsets a worker commits)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import faust.streams as faust_streams
import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.adapter.bulk import BulkConsumer, Coalescer, gathered

A, B, OTHER = "smartstream-page-times", "smartstream-new-users", "smartstream-comments"


class Event:
    """What app.create_event returns (weak-referenceable, like Faust's)."""

    def __init__(self, key: Any, message: Any) -> None:
        self.key, self.message = key, message


class FakeApp:
    def __init__(self, handlers: dict[str, Any]) -> None:
        self.bulk_handlers = handlers
        self.consumer_generation_id = 1

    def create_event(self, key: Any, value: Any, headers: Any, message: Any) -> Event:
        return Event(key, message)


def consumer(handlers: dict[str, Any]) -> BulkConsumer:
    """A BulkConsumer with Faust's commit bookkeeping and nothing else (no transport)."""
    c = BulkConsumer.__new__(BulkConsumer)
    c.app = FakeApp(handlers)
    c.flow_active = True
    c._gap = defaultdict(faust_consumer.IntervalTree)  # Faust's own gap bookkeeping
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._read_offset = defaultdict(lambda: None)
    c._committed_offset = defaultdict(lambda: None)
    c._n_acked = 0
    return c


def committed(c: BulkConsumer, tp: TP) -> int | None:
    """The offset Faust's commit loop reaches for `tp`: it commits what ``_new_offset`` gives
    (a gap can take two commits) until that gives nothing more."""
    while (offset := c._new_offset(tp)) is not None:
        c._committed_offset[tp] = offset
    return c._committed_offset[tp]


def record(topic: str, partition: int, offset: int) -> ConsumerRecord:
    key = f"{topic}:{partition}:{offset}".encode()
    return ConsumerRecord(topic, partition, offset, 0, 0, key, b"{}", None, len(key), 2, ())


def fetch(*specs: tuple[str, int, list[int]]) -> dict[TP, list[ConsumerRecord]]:
    return {TP(t, p): [record(t, p, o) for o in offsets] for t, p, offsets in specs}


class Recorder:
    """A bulk handler that records its calls (and the partition Faust's current event names)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[tuple[str, int]], int]] = []

    async def __call__(self, partition: int, records: list[Any]) -> None:
        current = faust_streams._current_event.get()()
        self.calls.append(
            (partition, [(r.topic, r.offset) for r in records], current.message.partition)
        )


def test_each_partition_gets_its_records_in_one_call_and_they_become_committable() -> None:
    handler = Recorder()
    c = consumer({A: handler, B: handler})
    bulk = fetch((A, 0, [5, 6, 7]), (B, 0, [2]), (A, 1, [0, 1]))
    asyncio.run(c._deliver(bulk, generation=1))
    assert sorted(handler.calls) == [
        (0, [(A, 5), (A, 6), (A, 7), (B, 2)], 0),  # both topics of partition 0, one call
        (1, [(A, 0), (A, 1)], 1),
    ]
    assert committed(c, TP(A, 0)) == 8  # Faust's commit logic: the next offset to read
    assert committed(c, TP(B, 0)) == 3
    assert committed(c, TP(A, 1)) == 2
    assert c._n_acked == 6


def test_offsets_skipped_by_transaction_markers_do_not_block_the_commit() -> None:
    c = consumer({A: Recorder()})
    asyncio.run(c._deliver(fetch((A, 0, [0, 1])), generation=1))
    asyncio.run(c._deliver(fetch((A, 0, [3, 4, 9])), generation=1))  # 2, 5..8: markers
    assert committed(c, TP(A, 0)) == 10


def test_records_below_the_committed_offset_are_not_acked_again() -> None:
    c = consumer({A: Recorder()})
    c._committed_offset[TP(A, 0)] = 5
    asyncio.run(c._deliver(fetch((A, 0, [3, 4, 5, 6])), generation=1))
    assert sorted(c._acked[TP(A, 0)]) == [5, 6]
    assert committed(c, TP(A, 0)) == 7


def test_a_rebalance_during_the_fetch_delivers_and_acks_nothing() -> None:
    handler = Recorder()
    c = consumer({A: handler})
    c.app.consumer_generation_id = 2  # the group moved on since the fetch
    asyncio.run(c._deliver(fetch((A, 0, [0, 1])), generation=1))
    c.app.consumer_generation_id, c.flow_active = 1, False  # or flow stopped for one
    asyncio.run(c._deliver(fetch((A, 0, [0, 1])), generation=1))
    assert handler.calls == [] and c._n_acked == 0
    assert committed(c, TP(A, 0)) is None  # nothing to commit: the records come again


def test_a_failing_handler_acks_nothing_of_its_partition() -> None:
    async def failing(partition: int, records: list[Any]) -> None:
        raise RuntimeError("broker down")

    c = consumer({A: failing})
    with pytest.raises(RuntimeError, match="broker down"):
        asyncio.run(c._deliver(fetch((A, 0, [0, 1])), generation=1))
    assert committed(c, TP(A, 0)) is None


def test_partitions_are_handled_concurrently() -> None:
    """A slow partition's awaited writes do not hold the others back (their writes overlap)."""
    release = asyncio.Event()
    started: list[int] = []

    async def handler(partition: int, records: list[Any]) -> None:
        started.append(partition)
        if partition == 0:
            await release.wait()

    async def scenario() -> None:
        c = consumer({A: handler})
        task = asyncio.ensure_future(c._deliver(fetch((A, 0, [0]), (A, 1, [0])), 1))
        while committed(c, TP(A, 1)) is None:  # partition 1 is done while partition 0 waits
            await asyncio.sleep(0)
        assert started == [0, 1] and committed(c, TP(A, 0)) is None
        release.set()
        await task
        assert committed(c, TP(A, 0)) == 1

    asyncio.run(asyncio.wait_for(scenario(), 5))


class InFlight:
    """A handler whose effects stay in flight (a changelog write) until released, per call."""

    def __init__(self, deferred: set[int]) -> None:
        self.deferred = deferred  # the calls (0, 1, ...) that return an effect in flight
        self.writes: list[asyncio.Future] = []
        self.calls = 0

    async def __call__(self, partition: int, records: list[Any]) -> asyncio.Future | None:
        call, self.calls = self.calls, self.calls + 1
        if call not in self.deferred:
            return None
        self.writes.append(asyncio.get_running_loop().create_future())
        return self.writes[-1]


def test_records_are_acked_once_their_effects_in_flight_are_written_and_in_order() -> None:
    """A handler's changelog write in flight: the next fetch is handled meanwhile, but no
    offset of the first fetch (nor, behind it, of the second) is committable until it is
    written."""

    async def scenario() -> None:
        handler = InFlight(deferred={0})
        c = consumer({A: handler})
        await c._deliver(fetch((A, 0, [0, 1])), 1)
        await c._deliver(fetch((A, 0, [2, 3])), 1)  # its effects are done at once
        await c._deliver(fetch((A, 1, [0])), 1)  # another partition: not held
        for _ in range(5):
            await asyncio.sleep(0)
        assert handler.calls == 3
        assert committed(c, TP(A, 0)) is None and committed(c, TP(A, 1)) == 1
        handler.writes[0].set_result(None)
        await c._settled()
        assert committed(c, TP(A, 0)) == 4

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_failed_write_in_flight_stops_the_consumer_and_acks_nothing() -> None:
    async def scenario() -> None:
        handler = InFlight(deferred={0})
        c = consumer({A: handler})
        await c._deliver(fetch((A, 0, [0, 1])), 1)
        await c._deliver(fetch((A, 0, [2])), 1)
        handler.writes[0].set_exception(RuntimeError("changelog write failed"))
        with pytest.raises(RuntimeError, match="changelog write failed"):
            await c._settled()
        assert committed(c, TP(A, 0)) is None

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_records_behind_a_failed_write_are_not_acked() -> None:
    """The write fails before the next fetch is delivered: that fetch's records, handled at
    once, must still not become committable past the failed ones."""

    async def scenario() -> None:
        handler = InFlight(deferred={0})
        c = consumer({A: handler})
        await c._deliver(fetch((A, 0, [0, 1])), 1)
        handler.writes[0].set_exception(RuntimeError("changelog write failed"))
        for _ in range(5):  # the first fetch's ack fails
            await asyncio.sleep(0)
        await c._deliver(fetch((A, 0, [2])), 1)
        with pytest.raises(RuntimeError, match="changelog write failed"):
            await c._settled()
        assert committed(c, TP(A, 0)) is None

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_partitions_are_given_away_only_after_their_writes_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust calls wait_empty before a rebalance's commit: it returns once the effects in
    flight are written and their records acked (so the commit includes them)."""

    async def nothing(self: Any) -> None:
        return None

    monkeypatch.setattr(faust_aiokafka.Consumer, "wait_empty", nothing)

    async def scenario() -> None:
        handler = InFlight(deferred={0})
        c = consumer({A: handler})
        await c._deliver(fetch((A, 0, [0, 1])), 1)
        waiting = asyncio.ensure_future(c.wait_empty())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        handler.writes[0].set_result(None)
        await waiting
        assert committed(c, TP(A, 0)) == 2

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_write_completed_after_a_rebalance_acks_nothing() -> None:
    async def scenario() -> None:
        handler = InFlight(deferred={0})
        c = consumer({A: handler})
        await c._deliver(fetch((A, 0, [0, 1])), 1)
        c.app.consumer_generation_id = 2  # the group moved on: the records come again
        handler.writes[0].set_result(None)
        await c._settled()
        assert committed(c, TP(A, 0)) is None

    asyncio.run(asyncio.wait_for(scenario(), 5))


class Writes:
    """A fake write target: records what each write got; a write waits for `gate` when set."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[tuple[bytes, bytes | None]]]] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def __call__(self, target: Any, records: list[tuple[bytes, bytes | None]]) -> None:
        self.calls.append((target, records))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail


def test_coalesced_writes_are_merged_per_target_with_each_key_latest() -> None:
    async def scenario() -> None:
        writes = Writes()
        merged = Coalescer(writes, linger=0.01)
        first = merged.add(("t", 0), [(b"a", b"1"), (b"b", b"1")])
        second = merged.add(("t", 0), [(b"a", b"2"), (b"c", None)])
        other = merged.add(("t", 1), [(b"x", b"1")])
        assert first is second is other and not first.done()
        await asyncio.wait_for(first, 1)
        assert sorted(writes.calls) == [
            (("t", 0), [(b"a", b"2"), (b"b", b"1"), (b"c", None)]),
            (("t", 1), [(b"x", b"1")]),
        ]
        later = merged.add(("t", 0), [(b"a", b"3")])  # a new merge after the flush
        assert later is not first
        await asyncio.wait_for(later, 1)
        assert writes.calls[-1] == (("t", 0), [(b"a", b"3")])

    asyncio.run(scenario())


def test_a_coalesced_write_starts_after_the_previous_one_is_written() -> None:
    async def scenario() -> None:
        writes = Writes()
        writes.gate = asyncio.Event()
        merged = Coalescer(writes, linger=0.001)
        first = merged.add("t", [(b"a", b"1")])
        while not writes.calls:  # the first write began and hangs at the gate
            await asyncio.sleep(0.001)
        second = merged.add("t", [(b"a", b"2")])
        await asyncio.sleep(0.05)  # well past the linger: the second flush is due
        assert len(writes.calls) == 1 and not second.done()
        writes.gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 1)
        assert writes.calls == [("t", [(b"a", b"1")]), ("t", [(b"a", b"2")])]

    asyncio.run(scenario())


def test_a_failed_coalesced_write_fails_its_callers() -> None:
    async def scenario() -> None:
        writes = Writes()
        writes.fail = OSError("broker gone")
        merged = Coalescer(writes, linger=0.001)
        done = merged.add("t", [(b"a", b"1")])
        with pytest.raises(OSError, match="broker gone"):
            await asyncio.wait_for(done, 1)
        writes.fail = None
        await asyncio.wait_for(merged.add("t", [(b"a", b"2")]), 1)  # the next one is written
        assert writes.calls[-1] == ("t", [(b"a", b"2")])

    asyncio.run(scenario())


def test_gathered_gives_every_result_in_order_and_raises_a_failure() -> None:
    async def value(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def fails() -> int:
        raise OSError("broker gone")

    async def scenario() -> None:
        assert await gathered([]) == []
        assert await gathered([value(1)]) == [1]
        assert await gathered([value(1), value(2)]) == [1, 2]
        with pytest.raises(OSError, match="broker gone"):
            await gathered([fails()])

    asyncio.run(scenario())
