"""Bulk delivery: whole fetches of chosen topics handed to one handler, past Faust's
per-message stream path.

Why: Faust passes every record through the conductor, a channel queue, the stream iterator, a
sensor round and an ack, with two tasks created per record. Measured here (py-spy and
``bench/pipeline.py --naive``), an agent that does nothing with its events tops out at ~10,000
events/s on one core, far below the 20,000 events/s the users pipeline needs per worker.

:class:`BulkConsumer` keeps everything else of Faust: the consumer group and its assignor, table
recovery, flow control on rebalances, offset commits (the producer is flushed before each), and
the normal path for every other topic. The bulk topics are fetched on the event loop by
streams.adapter.direct; per fetch, their records are grouped by partition and given to the
handler in one call, with Faust's "current event" set to the last record of the partition
(table writes go to that partition, as in an agent). The records are acked once the handler's
effects are written, so their offsets are committed only after their effects were produced:
at-least-once, which the handlers make exact with idempotent updates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import faust
import faust.streams as faust_streams
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.exceptions import NotReady
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import TP, EventT
from faust.types.tuples import ack_lock
from faust.web.exceptions import ServiceUnavailable

from streams.adapter.direct import DirectFetcher
from streams.topics import key_partition

T = TypeVar("T")
# handler(partition, records): the records (aiokafka ConsumerRecords) of the handler's topics in
# one partition from one fetch, in offset order per topic. It may return an awaitable of effects
# still in flight (a changelog write): the records are acked once it is done, while the next
# fetch is already handled.
BulkHandler = Callable[[int, list[Any]], Awaitable[Awaitable[Any] | None]]


@contextmanager
def acting_on(event: EventT) -> Iterator[None]:
    """Make `event` faust's current event in this task only (table writes use its partition).

    Only the context variable is set (``Stream._set_current_event`` needs a stream, and bulk
    records have none): the handlers of concurrent partitions each see their own event.
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


class BulkConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with bulk delivery of ``app.bulk_handlers``' topics (see module
    doc)."""

    # The last ack of each partition waiting for a handler's effects in flight. A partition's
    # records are acked in offset order (Faust reads offsets skipped between two acks as
    # transaction markers, committable), so each ack waits for the one before it: the last ones
    # stand for them all.
    _last_ack: dict[TP, asyncio.Future] | None = None
    # One fetcher per bulk handler, set by App._new_consumer: each fetch carries only its
    # handler's partitions (aiokafka decodes every partition's header of a response in Python),
    # and a busy handler's large fetches never hold up another's records.
    fetchers: tuple[DirectFetcher, ...] = ()

    def reap_acks(self) -> None:
        """Forget the acks done; a failed one (its effects were not written) is raised here and
        stops the consumer."""
        for tp, ack in [(tp, f) for tp, f in (self._last_ack or {}).items() if f.done()]:
            del self._last_ack[tp]  # type: ignore[index]
            ack.result()

    async def _settled(self) -> None:
        """Every handler's effects in flight written and their records acked."""
        while self._last_ack:
            await asyncio.gather(*set(self._last_ack.values()))
            self.reap_acks()

    async def wait_empty(self) -> None:
        """Faust calls this before giving partitions away (and committing): finish the batch in
        hand and the effects in flight first."""
        for fetcher in self.fetchers:
            await fetcher.settled()
        await self._settled()
        await super().wait_empty()

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        super().pause_partitions(tps)
        self._fetch_in_client({tp for tp in tps if self._is_changelog_tp(tp)}, fetch=False)
        for fetcher in self.fetchers:
            fetcher.pause(tps)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        super().resume_partitions(tps)
        self._fetch_in_client({tp for tp in tps if self._is_changelog_tp(tp)}, fetch=True)
        self._fetch_in_client(self._read_directly(tps), fetch=False)
        for fetcher in self.fetchers:
            fetcher.resume(tps)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # before Faust's client fetches any of them
        self._fetch_in_client(self._read_directly(assigned), fetch=False)
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for fetcher in self.fetchers:
            fetcher.revoke(revoked)
        await super().on_partitions_revoked(revoked)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Faust's fetch, without the directly read partitions."""
        if self.fetchers and active_partitions:
            active_partitions = active_partitions - self._read_directly(active_partitions)
            if not active_partitions:  # what Faust does without active partitions
                await asyncio.sleep(timeout)
                return {}
        return await super()._getmany(active_partitions, timeout)

    def highwater(self, tp: TP) -> int | None:
        """The high-water mark of `tp` as its reader last saw it: the bulk topics' fetcher's
        (Faust's client never fetches those), else Faust's client's."""
        for fetcher in self.fetchers:
            if fetcher.mine([tp]):
                return fetcher.highwater(tp)
        return super().highwater(tp)

    def _read_directly(self, tps: Iterable[TP]) -> set[TP]:
        return {tp for tp in tps if tp.topic in self.app.bulk_handlers}

    async def committed_offset(self, tp: TP) -> int | None:
        """The group's committed offset of `tp` (None: none), asked by Faust's client."""
        consumer = self._thread._consumer
        if consumer is None:
            return None
        return await self._thread.call_thread(
            consumer.committed, TopicPartition(tp.topic, tp.partition)
        )

    def verify_event_path(self, now: float, tp: TP) -> None:
        """Faust's check that its client fetches and its streams process each partition; the
        directly read ones are neither (their acks still reach the commits)."""
        if not self._read_directly([tp]):
            super().verify_event_path(now, tp)

    async def on_stop(self) -> None:
        for fetcher in self.fetchers:
            await fetcher.stop()
        await super().on_stop()

    def _fetch_in_client(self, tps: set[TP], fetch: bool) -> None:
        """Pause or resume `tps` in aiokafka too, not only in Faust's bookkeeping.

        Directly read partitions stay paused in Faust's client for good.

        Faust keeps changelog partitions paused outside recovery but only in its own sets, so
        aiokafka goes on fetching them and holds records nobody takes; while it holds a
        partition's records it defers every fetch from that broker by its prefetch backoff
        (100 ms). Measured here: the changelog of a table this worker writes stalled the
        comments of all partitions for 100 ms, three times in a row, when labelling began.
        """
        consumer = self._thread._consumer
        if consumer is None or not tps:
            return

        def apply() -> None:  # in the consumer's thread, which owns aiokafka's state
            assigned = consumer.assignment()
            mine = [TopicPartition(tp.topic, tp.partition) for tp in tps]
            mine = [tp for tp in mine if tp in assigned]
            (consumer.resume if fetch else consumer.pause)(*mine)

        self._thread.thread_loop.call_soon_threadsafe(apply)

    async def paused_in_client(self) -> set[TP]:
        """The assigned partitions aiokafka does not fetch (read in the consumer's thread)."""
        consumer = self._thread._consumer
        if consumer is None:
            return set()

        async def paused() -> set[TP]:
            return {TP(tp.topic, tp.partition) for tp in consumer.paused()}

        return await self._thread.call_thread(paused)

    async def _deliver(self, bulk: dict[TP, list[Any]], generation: int) -> None:
        """Hand each partition's records to its handler; partitions run concurrently (their
        awaited writes overlap), each partition's fetches strictly in order."""
        groups: dict[tuple[BulkHandler, int], list[TP]] = defaultdict(list)
        for tp in bulk:
            groups[(self.app.bulk_handlers[tp.topic], tp.partition)].append(tp)
        await gathered(
            [
                self._deliver_partition(handler, p, {tp: bulk[tp] for tp in tps}, generation)
                for (handler, p), tps in groups.items()
            ]
        )

    async def _deliver_partition(
        self, handler: BulkHandler, partition: int, bulk: dict[TP, list[Any]], generation: int
    ) -> None:
        if not self.flow_active or self.app.consumer_generation_id != generation:
            return  # a rebalance began: the records come again from the committed offsets
        records = [r for batch in bulk.values() for r in batch]
        last = records[-1]
        message = self._to_message(TP(last.topic, last.partition), last)
        event = self.app.create_event(last.key, last.value, last.headers, message)
        with acting_on(event):
            in_flight = await handler(partition, records)
        if self._last_ack is None:
            self._last_ack = {}
        # A failed one too: the records behind it must not be acked before it.
        earlier = [f for tp in bulk if (f := self._last_ack.get(tp)) and not _succeeded(f)]
        if in_flight is None and not earlier:
            for tp, batch in bulk.items():
                await self._ack_all(tp, batch)
            return
        ack = asyncio.ensure_future(self._ack_after(in_flight, earlier, bulk, generation))
        self._last_ack.update(dict.fromkeys(bulk, ack))

    async def _ack_after(
        self,
        in_flight: Awaitable[Any] | None,
        earlier: list[asyncio.Future],
        bulk: dict[TP, list[Any]],
        generation: int,
    ) -> None:
        """Ack the records once their effects are written and the earlier records of their
        partitions acked (a failure of either is raised: the consumer stops)."""
        if in_flight is not None:
            await in_flight
        for ack in earlier:
            await ack
        if self.app.consumer_generation_id == generation:  # else they come again
            for tp, batch in bulk.items():
                await self._ack_all(tp, batch)

    async def _ack_all(self, tp: TP, records: list[Any]) -> None:
        """Faust's per-message ack bookkeeping for a whole list (gaps included, e.g. left by
        transaction markers), so its commit logic finds the offsets."""
        r_offset = self._read_offset[tp]
        for record in records:
            if r_offset is not None and record.offset - r_offset > 1:
                await self._add_gap(tp, r_offset + 1, record.offset)
            r_offset = record.offset
        self._read_offset[tp] = r_offset
        committed = self._committed_offset[tp]
        with ack_lock:
            index = self._acked_index[tp]
            offsets = [
                r.offset
                for r in records
                if (committed is None or r.offset >= committed) and r.offset not in index
            ]
            index.update(offsets)
            self._acked[tp].extend(offsets)
            self._n_acked += len(offsets)


class App(faust.App):
    """faust.App whose consumer delivers the records of ``bulk_handlers``' topics in bulk."""

    def __init__(self, *args: Any, bulk_client: dict[str, Any] | None = None, **kwargs: Any):
        """`bulk_client`: the connection settings of the bulk topics' consumer (aiokafka's
        names: bootstrap_servers, security)."""
        super().__init__(*args, **kwargs)
        self.bulk_handlers: dict[str, BulkHandler] = {}
        self.bulk_client = bulk_client or {}

    def bulk(self, topic: faust.TopicT) -> Callable[[BulkHandler], BulkHandler]:
        """Decorator: `handler` receives `topic`'s records in bulk (see :class:`BulkConsumer`).

        The topic is subscribed through Faust's conductor, so the assignor co-partitions it with
        the tables as it would an agent's topic.
        """

        def register(handler: BulkHandler) -> BulkHandler:
            self.topics.add(topic)
            self.bulk_handlers.update(dict.fromkeys(topic.topics, handler))
            return handler

        return register

    def table_route(self, table: faust.types.CollectionT, **kwargs: Any) -> Any:
        """Faust's table routing, answering 503 instead of 500 while it cannot route yet.

        In a worker's first seconds Faust's producer has no partition metadata for the table's
        changelog, and its router fails with a TypeError (measured: ~40 answers of 500 in a
        row after the 503s of the assignment phase)."""
        route = super().table_route(table, **kwargs)

        def decorator(fun: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            routed = route(fun)

            @wraps(fun)
            async def get(view: Any, request: Any, *args: Any, **kw: Any) -> Any:
                if not self.knows_partitions(table.changelog_topic.get_topic_name()):
                    raise ServiceUnavailable()
                return await routed(view, request, *args, **kw)

            return get

        return decorator

    def knows_partitions(self, topic: str) -> bool:
        """Whether the producer's metadata has `topic` yet (a route to a partition's owner
        needs it: before, Faust's router raises instead of answering 503)."""
        try:
            producer = self.producer._ensure_producer()
        except NotReady:
            return False
        return producer._metadata.partitions_for_topic(topic) is not None

    async def crash(self, reason: BaseException) -> None:
        """A crashed app ends its process with status 70 (EX_SOFTWARE). Faust's worker otherwise
        stays up with a dead app: never healthy, never restarted by a supervisor. Effects are
        produced before their offsets are committed, so nothing acknowledged is lost."""
        await super().crash(reason)
        message = f"the app crashed ({reason!r}): exiting with 70"
        logging.getLogger(__name__).critical(message)
        logging.shutdown()
        print(message, file=sys.stderr, flush=True)  # whatever the logging configuration
        sys.stdout.flush()
        os._exit(70)

    def _new_consumer(self) -> BulkConsumer:
        consumer = BulkConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.transport.loop,
        )
        topics: dict[BulkHandler, set[str]] = defaultdict(set)
        for topic, handler in self.bulk_handlers.items():
            topics[handler].add(topic)
        consumer.fetchers = tuple(
            DirectFetcher(consumer, frozenset(mine), self.bulk_client) for mine in topics.values()
        )
        return consumer


class BatchProducer:
    """Produces lists of records as whole aiokafka batches (one future per batch, not per record).

    Faust's ``send_soon`` costs ~40 µs per record (a FutureMessage, its buffer, a sensor round); a
    batch append costs a few. `records_per_batch` 1 serves brokers that mishandle multi-record
    batches (the embedded Tansu).
    """

    def __init__(self, records_per_batch: int = 0, **client: Any) -> None:
        self.records_per_batch = records_per_batch
        self.client = client
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    acks="all", linger_ms=0, max_batch_size=512 * 1024, **self.client
                )
                await producer.start()
                self._producer = producer
        return self._producer

    async def send(
        self, topic: str, partition: int, records: list[tuple[bytes | None, bytes]]
    ) -> int:
        """Produce `records` (key, value) to one partition; wait until the broker has them all.
        Returns the offset of the first record of the last batch (a lower bound of the last)."""
        producer = await self._started()
        futures = []
        batch = producer.create_batch()
        for key, value in records:
            full = self.records_per_batch and batch.record_count() >= self.records_per_batch
            if full or batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        results = await gathered(futures)
        return results[-1].offset if results else -1

    async def send_keyed(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        """Produce keyed records to the partitions Kafka's default partitioner gives their keys
        (murmur2, as Faust and kafka-python do), one batch per partition; wait for all of them."""
        await self.send_routed(topic, [(key, value, 0) for key, value in records])

    async def send_routed(self, topic: str, records: list[tuple[bytes | None, bytes, int]]) -> None:
        """Like :meth:`send_keyed`; a record without a key goes to its given partition number
        (modulo the topic's partitions)."""
        if not records:
            return
        producer = await self._started()
        count = len(await producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        for key, value, fallback in records:
            partition = fallback % count if key is None else key_partition(key, count)
            by_partition[partition].append((key, value))
        await gathered([self.send(topic, p, batch) for p, batch in by_partition.items()])

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class Coalescer:
    """Writes that no handler waits for (their records' acks do), merged: the records given
    within `linger` seconds are written together, a batch per target in one produce request
    instead of a request per handler call, and a key given twice is written once with its
    latest value (the targets are compacted changelogs: only a key's latest value counts).

    Why: at 500 comments/s almost every fetch holds one comment, and its row's changelog write
    was a produce request and response of its own on the worker's event loop. Each merged
    write starts after the previous one, so a target's records reach Kafka in call order; a
    failed write fails the futures of its calls (their records are never acked)."""

    def __init__(
        self,
        write: Callable[[Any, list[tuple[bytes, bytes | None]]], Awaitable[None]],
        linger: float,
    ) -> None:
        self._write = write
        self.linger = linger
        self._pending: dict[Any, dict[bytes, bytes | None]] = {}
        self._done: asyncio.Future | None = None
        self._last: asyncio.Future | None = None

    def add(self, target: Any, records: list[tuple[bytes, bytes | None]]) -> asyncio.Future:
        """Queue `records` for `target` (hashable); the future is done once they are written."""
        self._pending.setdefault(target, {}).update(records)
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            loop.call_later(self.linger, self._flush)
        return self._done

    def _flush(self) -> None:
        pending, done, previous = self._pending, self._done, self._last
        self._pending, self._done = {}, None
        assert done is not None
        self._last = written = asyncio.ensure_future(self._write_all(pending, previous))
        written.add_done_callback(lambda task: _settle(done, task))

    async def _write_all(
        self, pending: dict[Any, dict[bytes, bytes | None]], previous: asyncio.Future | None
    ) -> None:
        if previous is not None:  # its failure is its own calls' (the consumer stops on it)
            await asyncio.gather(previous, return_exceptions=True)
        await asyncio.gather(*(self._write(t, list(rows.items())) for t, rows in pending.items()))


def _settle(done: asyncio.Future, task: asyncio.Future) -> None:
    if done.done():
        return
    if task.cancelled():
        done.cancel()
    elif task.exception() is not None:
        done.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        done.set_result(None)


async def gathered(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """asyncio.gather's results, a lone awaitable awaited without gather's task per awaitable:
    at 500 comments/s a fetch mostly holds one partition, one batch, one send."""
    if len(awaitables) == 1:
        return [await awaitables[0]]
    return list(await asyncio.gather(*awaitables))


def _succeeded(future: asyncio.Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def set_producer_backlog(records: int) -> None:
    """Faust pauses its streams while more than this many records wait to be produced (a class
    attribute of its producer buffer: the setting is process-wide)."""
    ProducerBuffer.max_messages = records


def last_read_offset(consumer: Any, tp: TP) -> int | None:
    """The offset of the last record Faust's consumer read from `tp` (None: none yet)."""
    return consumer._read_offset.get(tp)
