"""Direct fetching (streams/adapter/direct.py) with in-memory fakes, no broker: which partitions
it reads, from which offset, and which fetched records it delivers or reads again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streams.adapter.direct import DirectFetcher

C, R, OTHER = "smartstream-comments", "smartstream-comment-reviews", "smartstream-page-times"


class Owner:
    """What the fetcher asks of the bulk consumer: flow, generation, committed offsets."""

    def __init__(self, committed: dict[TP, int] | None = None) -> None:
        self.flow_active = True
        self.committed = committed or {}
        conf = SimpleNamespace(consumer_auto_offset_reset="earliest", broker_max_poll_records=10)
        self.app = SimpleNamespace(consumer_generation_id=1, conf=conf)

    async def committed_offset(self, tp: TP) -> int | None:
        return self.committed.get(tp)


class Client:
    """aiokafka's consumer as far as the fetcher moves it."""

    def __init__(self) -> None:
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, Any] = {}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned, self.positions = sorted(tps), {}  # aiokafka forgets every position

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp] = "beginning"

    async def seek_to_end(self, tp: TopicPartition) -> None:
        self.positions[tp] = "end"


def records(topic: str, partition: int, *offsets: int) -> list[ConsumerRecord]:
    return [ConsumerRecord(topic, partition, o, 0, 0, b"k", b"{}", None, 1, 2, ()) for o in offsets]


def fetcher(owner: Owner) -> DirectFetcher:
    f = DirectFetcher(owner, frozenset({C, R}), {})  # type: ignore[arg-type]
    f._task = asyncio.Future  # type: ignore[assignment]  # not started: the tests take its steps
    return f


def follow(f: DirectFetcher, client: Client) -> dict[TopicPartition, Any]:
    f._changed.clear()
    asyncio.run(f._follow(client))  # type: ignore[arg-type]
    return client.positions


def test_it_reads_only_its_topics_partitions_that_faust_has_active() -> None:
    f = fetcher(Owner())
    f.live |= f.mine([TP(C, 0), TP(R, 0), TP(OTHER, 0)])
    assert f.live == {TP(C, 0), TP(R, 0)}
    f.pause([TP(C, 0), TP(OTHER, 1)])
    assert f.live == {TP(R, 0)} and f._changed.is_set()


def test_a_new_partition_starts_at_the_committed_offset_else_the_reset_policy() -> None:
    owner = Owner(committed={TP(C, 0): 40})
    f, client = fetcher(owner), Client()
    f.live |= {TP(C, 0), TP(C, 1)}
    assert follow(f, client) == {TopicPartition(C, 0): 40, TopicPartition(C, 1): "beginning"}
    owner.app.conf.consumer_auto_offset_reset = "latest"
    assert follow(fetcher(owner), Client()) == {}  # nothing live
    g = fetcher(owner)
    g.live.add(TP(C, 1))
    assert follow(g, client) == {TopicPartition(C, 1): "end"}


def test_delivered_records_move_the_next_offset_and_a_resumed_partition_starts_there() -> None:
    owner = Owner(committed={TP(C, 0): 40, TP(C, 1): 7})
    f, client = fetcher(owner), Client()
    f.live |= {TP(C, 0), TP(C, 1)}
    follow(f, client)
    fetched = {TopicPartition(C, 0): records(C, 0, 40, 41, 43)}
    bulk = f._deliverable(fetched, generation=1)
    assert [r.offset for r in bulk[TP(C, 0)]] == [40, 41, 43]
    assert f.next == {TP(C, 0): 44} and not f._changed.is_set()
    f.pause([TP(C, 0), TP(C, 1)])
    f.resume([TP(C, 0), TP(C, 1)])
    # assign() forgot the positions: the delivered partition goes on after its last record,
    # the other starts at the committed offset (the group's, not an older position of the client)
    assert follow(f, client) == {TopicPartition(C, 0): 44, TopicPartition(C, 1): 7}


def test_records_of_a_paused_partition_are_read_again_once_resumed() -> None:
    owner = Owner(committed={TP(C, 0): 10})
    f, client = fetcher(owner), Client()
    f.live |= {TP(C, 0), TP(C, 1)}
    follow(f, client)
    f.next[TP(C, 1)] = 5
    f.live.discard(TP(C, 1))  # paused while the fetch was under way
    fetched = {TopicPartition(C, 0): records(C, 0, 10), TopicPartition(C, 1): records(C, 1, 5, 6)}
    bulk = f._deliverable(fetched, generation=1)
    assert list(bulk) == [TP(C, 0)]
    assert f.next[TP(C, 1)] == 5 and f._changed.is_set()  # the client moved past 5 and 6
    f.live.add(TP(C, 1))
    assert follow(f, client)[TopicPartition(C, 1)] == 5


def test_nothing_is_delivered_once_the_flow_stopped_or_the_generation_changed() -> None:
    owner = Owner()
    f = fetcher(owner)
    f.live.add(TP(C, 0))
    fetched = {TopicPartition(C, 0): records(C, 0, 3)}
    owner.app.consumer_generation_id = 2
    assert f._deliverable(fetched, generation=1) == {} and f._changed.is_set()
    owner.flow_active = False
    assert f._deliverable(fetched, generation=2) == {}
    assert TP(C, 0) not in f.next  # read again from the committed offset


def test_a_revoked_partition_forgets_where_it_stopped() -> None:
    owner = Owner(committed={TP(C, 0): 100})
    f, client = fetcher(owner), Client()
    f.live.add(TP(C, 0))
    f.next[TP(C, 0)] = 60  # delivered here; the partition's next owner committed up to 100
    f.revoke([TP(C, 0)])
    assert f.live == set() and f.next == {}
    f.live.add(TP(C, 0))
    assert follow(f, client) == {TopicPartition(C, 0): 100}


class Fetching(Client):
    """A client whose fetches are handed in by the test; `taken` counts the records taken."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches: asyncio.Queue[dict] = asyncio.Queue()
        self.taken = 0
        self.asked: list[int | None] = []  # max_records of each call

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> dict:
        self.asked.append(max_records)
        if timeout_ms == 0 and self.fetches.empty():
            return {}
        fetched = await self.fetches.get()
        self.taken += sum(map(len, fetched.values()))
        return fetched


class Delivering(Owner):
    """An owner whose deliveries are held until the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[list[int]] = []
        self.release = asyncio.Event()

    async def _deliver(self, bulk: dict[TP, list[Any]], generation: int) -> None:
        await self.release.wait()
        self.release.clear()
        self.delivered.append([r.offset for rs in bulk.values() for r in rs])

    def reap_acks(self) -> None:
        pass


def test_the_next_fetch_is_taken_during_a_delivery_and_the_next_delivery_waits() -> None:
    """Records that come while a delivery runs are fetched at once (aiokafka asks the broker
    for more only once they are taken), delivered after it, together with what came later."""

    async def scenario() -> None:
        owner, client = Delivering(), Fetching()
        f = fetcher(owner)
        f.live.add(TP(C, 0))
        f._assigned = frozenset(f.live)
        loop = asyncio.ensure_future(f._loop(client))  # type: ignore[arg-type]
        client.fetches.put_nowait({TopicPartition(C, 0): records(C, 0, 0)})
        for _ in range(10):
            await asyncio.sleep(0)
        client.fetches.put_nowait({TopicPartition(C, 0): records(C, 0, 1)})  # came meanwhile
        for _ in range(10):
            await asyncio.sleep(0)
        assert (client.taken, owner.delivered) == (2, [])  # the second taken, not delivered
        client.fetches.put_nowait({TopicPartition(C, 0): records(C, 0, 2)})
        owner.release.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert owner.delivered == [[0]] and f.next[TP(C, 0)] == 3
        owner.release.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert owner.delivered == [[0], [1, 2]]  # one delivery: each costs a round trip
        assert 9 in client.asked  # a delivery holds at most a fetch's records (10, conf)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_the_high_water_mark_of_a_partition_is_the_one_its_reader_saw() -> None:
    """Faust's client never fetches the bulk partitions, so its high-water marks of them stay
    unknown: the consumer lag (/metrics, the dashboard) takes the fetcher's."""

    class Seen(Client):
        def highwater(self, tp: TopicPartition) -> int:
            return {TopicPartition(C, 0): 120}[tp]

    f = fetcher(Owner())
    assert f.highwater(TP(C, 0)) is None  # not started
    f._consumer = Seen()  # type: ignore[assignment]
    f._assigned = frozenset({TP(C, 0)})
    assert (f.highwater(TP(C, 0)), f.highwater(TP(C, 1))) == (120, None)
