"""The bulk topics read by a consumer on the worker's event loop, beside Faust's threaded one.

Why: Faust's consumer runs aiokafka in a thread of its own, and each fetch crosses to the event
loop and back through Faust's fetch loop. aiokafka sends a partition's next fetch only once its
buffered records were taken, which happened once per turn of that loop (~4.5 ms with the users
pipeline idle), so a comment waited one to two turns before its handler saw it: 8-10 ms at the
median and 20-30 ms at p99 at 500 comments/s, where a consume-label-produce loop on one event
loop took 1 ms and 5-10 ms on the same broker (``bench/moderation.py --raw``). The users
pipeline did 43,000-45,000 events/s through that path and 61,000-71,000 read here
(``bench/pipeline.py``, alternating runs on one broker).

:class:`DirectFetcher` reads the partitions of one bulk handler's topics that Faust's group gave
this worker with an aiokafka consumer of no group, manually assigned, and hands each fetch to
the handler (:meth:`BulkConsumer._deliver`). Faust keeps the group, the assignment
(co-partitioning with the tables), recovery, flow control and the offset commits of these
partitions, fed by the same acks; its own client holds them paused. A partition is read only
while Faust has it active (assigned, recovered, flowing): from the group's committed offset
when it is newly assigned, else from where this fetcher stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

if TYPE_CHECKING:
    from streams.adapter.bulk import BulkConsumer

log = logging.getLogger(__name__)

# How long one fetch waits for records before the fetcher looks at its assignment again.
POLL_MS = 100


class DirectFetcher:
    """The event loop's consumer of one bulk handler's topics (see module doc)."""

    def __init__(self, owner: BulkConsumer, topics: frozenset[str], client: dict[str, Any]) -> None:
        self.owner = owner
        self.topics = topics
        self.client = client
        self.live: set[TP] = set()  # active in Faust: read and delivered
        self.next: dict[TP, int] = {}  # the next offset to deliver; absent: the committed one
        self._assigned: frozenset[TP] = frozenset()
        self._changed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Future | None = None
        self._delivery: asyncio.Future | None = None

    def mine(self, tps: Iterable[TP]) -> set[TP]:
        return {tp for tp in tps if tp.topic in self.topics}

    def resume(self, tps: Iterable[TP]) -> None:
        """Faust resumed these partitions: read them (from the event loop's next turn)."""
        resumed = self.mine(tps) - self.live
        if resumed:
            self.live |= resumed
            self._changed.set()
            if self._task is None:
                self._task = asyncio.ensure_future(self._run())

    def pause(self, tps: Iterable[TP]) -> None:
        """Faust paused these partitions (a rebalance, a recovery): deliver none of theirs."""
        paused = self.mine(tps) & self.live
        if paused:
            self.live -= paused
            self._changed.set()

    def revoke(self, tps: Iterable[TP]) -> None:
        """These partitions left this worker: their next owner reads from the committed offset,
        and so does this worker if they come back."""
        revoked = self.mine(tps)
        self.pause(revoked)
        for tp in revoked:
            self.next.pop(tp, None)

    def highwater(self, tp: TP) -> int | None:
        """The partition's high-water mark in the last fetch response (None: not read here)."""
        if self._consumer is None or tp not in self._assigned:
            return None
        return self._consumer.highwater(TopicPartition(tp.topic, tp.partition))

    async def settled(self) -> None:
        """The delivery in hand handled (its acks then follow the bulk consumer's effects)."""
        delivery = self._delivery
        if delivery is not None:
            await asyncio.shield(delivery)

    async def stop(self) -> None:
        """Stop fetching; the delivery in hand is finished first."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._delivery is not None:
            await asyncio.gather(self._delivery, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset=self.owner.app.conf.consumer_auto_offset_reset,
            max_poll_records=self.owner.app.conf.broker_max_poll_records,
            **self.client,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            await self._loop(consumer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a handler's error stops the worker, as Faust's path does
            log.exception("direct fetcher failed")
            await self.owner.app.crash(exc)

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        """Fetch and deliver, one delivery at a time. The next fetch is taken while a delivery
        runs: aiokafka asks the broker for a partition's next records only once the buffered
        ones are taken, so records that came during a delivery would otherwise wait for it to
        end before even being fetched."""
        fetch: tuple[asyncio.Future, int] | None = None
        while True:
            if self._changed.is_set():
                await _cancel(fetch)
                fetch = None
                self._changed.clear()
                await self._follow(consumer)  # what the cancelled fetch took is read again
            if not self.live:
                await self._changed.wait()
                continue
            if not self.owner.flow_active:  # a rebalance began: its revocation follows
                await asyncio.sleep(POLL_MS / 1000)
                continue
            if fetch is None:
                fetch = self._fetch(consumer)
            future, generation = fetch
            fetched = await future
            fetch = None
            room = self.owner.app.conf.broker_max_poll_records - sum(map(len, fetched.values()))
            if fetched and room > 0:  # and what came since, in one delivery (each costs a round
                # trip) of at most a fetch's records (its memory is the worker's high-water mark)
                for tp, records in (await consumer.getmany(timeout_ms=0, max_records=room)).items():
                    fetched.setdefault(tp, []).extend(records)
            bulk = self._deliverable(fetched, generation)
            if bulk:
                fetch = self._fetch(consumer)
                self._delivery = asyncio.ensure_future(self.owner._deliver(bulk, generation))
                # Shielded: a stopping worker finishes the delivery (wait_empty) and commits it.
                await asyncio.shield(self._delivery)
                self.owner.reap_acks()

    def _fetch(self, consumer: AIOKafkaConsumer) -> tuple[asyncio.Future, int]:
        generation = self.owner.app.consumer_generation_id
        return asyncio.ensure_future(consumer.getmany(timeout_ms=POLL_MS)), generation

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        """Read the live partitions, each from the next offset to deliver: where this fetcher
        stopped, else the group's committed offset, else where the reset policy says."""
        live = frozenset(self.live)
        if live != self._assigned:
            consumer.assign([TopicPartition(tp.topic, tp.partition) for tp in live])
            self._assigned = live
        for tp in live:
            atp = TopicPartition(tp.topic, tp.partition)
            offset = self.next.get(tp)
            if offset is None:
                offset = await self.owner.committed_offset(tp)
            if offset is not None:
                consumer.seek(atp, offset)
            elif self._reset_earliest:
                await consumer.seek_to_beginning(atp)
            else:
                await consumer.seek_to_end(atp)

    @property
    def _reset_earliest(self) -> bool:
        return self.owner.app.conf.consumer_auto_offset_reset == "earliest"

    def _deliverable(self, fetched: dict[Any, list[Any]], generation: int) -> dict[TP, list[Any]]:
        """The fetched records to deliver now. Those of a partition paused meanwhile, or all of
        them when the flow stopped, are not delivered: the partitions are read again from their
        next offset to deliver (this fetcher's position has moved past them)."""
        flowing = self.owner.flow_active and self.owner.app.consumer_generation_id == generation
        bulk: dict[TP, list[Any]] = {}
        for atp, records in fetched.items():
            tp = TP(atp.topic, atp.partition)
            if not records:
                continue
            if flowing and tp in self.live:
                bulk[tp] = records
                self.next[tp] = records[-1].offset + 1
            else:
                self._changed.set()
        return bulk


async def _cancel(fetch: tuple[asyncio.Future, int] | None) -> None:
    if fetch is not None:
        fetch[0].cancel()
        await asyncio.gather(fetch[0], return_exceptions=True)
