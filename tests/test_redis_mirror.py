"""The Redis mirror (streams.users.RedisMirror) against a real Redis: outages, a bounded backlog
with its resync from the table, and no write of a partition this worker lost.

Redis is SMARTSTREAM_REDIS_URL, or a redis-server started here on a free loopback port. The
mirror reaches it through :class:`Link`, a TCP proxy standing for the network: a bandwidth, and
outages (cut or frozen) that leave a shared server untouched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Set
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis
from faust.types import TP

from streams import users
from streams.profiles import new_profile, public_view
from streams.records import dumps_json
from streams.users import RedisMirror
from tests.conftest import free_port, wait_for

# A remote Redis's link: ~320 Mbit/s. A 300,000-key backlog (~170 MB of SETs) takes seconds
# to cross it; 1,000 keys take ~15 ms.
LINK_RATE = 40e6


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """SMARTSTREAM_REDIS_URL, else a redis-server of this module's own (skip without one)."""
    url = os.environ.get("SMARTSTREAM_REDIS_URL")
    if url:
        yield url
        return
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server installed and no SMARTSTREAM_REDIS_URL")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        ["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        wait_for(lambda: proc.poll() is not None or _answers(client), 20, "redis-server PING")
        assert proc.poll() is None, "redis-server exited"
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def direct(redis_url: str) -> Iterator[redis.Redis]:
    """A client beside the mirror's link, to read what was written."""
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture
def prefix(direct: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (a shared server)."""
    name = f"test-mirror-{uuid.uuid4().hex[:8]}:"
    yield name
    batch: list[bytes] = []
    for key in direct.scan_iter(match=f"{name}*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            direct.unlink(*batch)
            batch = []
    if batch:
        direct.unlink(*batch)


class Link:
    """A TCP proxy in front of Redis: paced client-to-server bytes (`rate`, bytes/s) and
    outages. `cut` closes the connections and every new one; `freeze` keeps them open and
    silent; `restore` ends either, dropping the connections (and bytes) of the outage."""

    def __init__(self, url: str, rate: float | None = None) -> None:
        self._parts = urlsplit(url)
        self.rate = rate
        self.accepted = 0
        self._cut = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._epoch = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._next_send = 0.0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; return the URL that reaches Redis through the link."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        auth, at, _ = self._parts.netloc.rpartition("@")
        return urlunsplit(self._parts._replace(netloc=f"{auth}{at}127.0.0.1:{port}"))

    def cut(self) -> None:
        self._cut = True
        self._drop_connections()

    def freeze(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._drop_connections()
        self._cut = False
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_connections()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def _drop_connections(self) -> None:
        self._epoch += 1
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self._parts.hostname, self._parts.port or 6379
            )
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        epoch = self._epoch
        await asyncio.gather(
            self._pipe(reader, up_writer, epoch, paced=True),
            self._pipe(up_reader, writer, epoch, paced=False),
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        epoch: int,
        paced: bool,
    ) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(1 << 16)
                await self._flowing.wait()
                if not data or epoch != self._epoch:
                    break
                if paced and self.rate:
                    await self._pace(len(data))
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _pace(self, size: int) -> None:
        assert self.rate
        now = asyncio.get_running_loop().time()
        self._next_send = max(self._next_send, now) + size / self.rate
        await asyncio.sleep(self._next_send - now)


async def through_link(
    redis_url: str, scenario: Callable[[Link, str], Awaitable[None]], rate: float | None = None
) -> None:
    link = Link(redis_url, rate)
    url = await link.start()
    try:
        await scenario(link, url)
    finally:
        await link.close()


def profile(user_id: str, visits: int = 0) -> dict[str, Any]:
    p = new_profile(user_id)
    p["visits_pages"] = visits
    return p


def mirrored(p: dict[str, Any]) -> bytes:
    return dumps_json(public_view(p))


def read_values(direct: redis.Redis, keys: list[str]) -> list[bytes | None]:
    values: list[bytes | None] = []
    for start in range(0, len(keys), 10_000):
        values.extend(direct.mget(keys[start : start + 10_000]))
    return values


async def flush_until_drained(mirror: RedisMirror, timeout: float) -> None:
    """Flush as the worker's timer does until nothing is pending, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while mirror.pending or mirror.resync_due:
        assert time.monotonic() < deadline, f"{len(mirror.pending)} keys still pending"
        await mirror.flush()


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


class StallMeter:
    """The longest time the event loop did not run a task: what the stream would wait."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task | None = None

    def __enter__(self) -> StallMeter:
        self._task = asyncio.ensure_future(self._beat())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _beat(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - 0.01)
            last = now


def test_large_backlog_drains_after_outage(redis_url: str, direct: redis.Redis, prefix: str):
    """(a) 300,000 keys staged while Redis is unreachable all reach it, each with its latest
    value, once it is back: written in chunks, each under the 2 s socket timeout, with the event
    loop running between them."""
    count = 300_000
    latest = {i: profile(str(i)) for i in range(count)}

    async def scenario(link: Link, url: str) -> None:
        mirror = RedisMirror(url, prefix, max_pending=2 * count)
        link.cut()
        mirror.stage_users(latest.values())
        for i in range(0, count, 7):  # newer values of some users, staged later
            latest[i] = profile(str(i), visits=1)
            mirror.stage_users([latest[i]])
        assert not await mirror.flush()
        assert mirror.failures == 1 and len(mirror.pending) == count
        link.restore()
        with StallMeter() as stalls:
            await flush_until_drained(mirror, timeout=120)
        assert stalls.longest < 1.0, f"event loop blocked {stalls.longest:.2f} s"
        assert mirror.written >= count

    asyncio.run(through_link(redis_url, scenario, rate=LINK_RATE))
    keys = [f"{prefix}user:{i}" for i in range(count)]
    values = read_values(direct, keys)
    wrong = [i for i, value in enumerate(values) if value != mirrored(latest[i])]
    assert not wrong, f"{len(wrong)} keys without their latest value, e.g. user {wrong[0]}"


def test_new_values_win_over_a_failed_flush(redis_url: str, direct: redis.Redis, prefix: str):
    """A value staged while a flush hangs on a frozen Redis is the one written afterwards."""

    async def scenario(link: Link, url: str) -> None:
        mirror = RedisMirror(url, prefix)
        mirror.stage_users([profile("a"), profile("b")], 0)
        link.freeze()
        flush = asyncio.ensure_future(mirror.flush())
        await wait_until(lambda: link.accepted > 0, 10, "the flush to reach Redis")
        mirror.stage_users([profile("a", visits=2)], 0)
        assert not await flush  # the 2 s socket timeout
        link.restore()
        assert await mirror.flush()
        assert not mirror.pending

    asyncio.run(through_link(redis_url, scenario))
    assert direct.get(f"{prefix}user:a") == mirrored(profile("a", visits=2))
    assert direct.get(f"{prefix}user:b") == mirrored(profile("b"))


def partition_of(user_id: str) -> int:
    return int(user_id.removeprefix("u")) % 3


def test_overflow_resyncs_owned_rows_from_table(redis_url: str, direct: redis.Redis, prefix: str):
    """(b) Past max_pending the backlog stops growing; once Redis answers, every row of the
    owned partitions (0 and 1 of 0..2) is written from the table, with its latest value."""
    table = {f"u{i}": profile(f"u{i}") for i in range(3_000)}
    owned = {0, 1}
    walks: list[Set[int] | None] = []

    async def table_rows(partitions: Set[int] | None) -> AsyncIterator[users.Rows]:
        walks.append(partitions)
        ids = list(table)
        for start in range(0, len(ids), 500):
            parts = owned if partitions is None else owned & partitions
            slice_ = [(partition_of(u), table[u]) for u in ids[start : start + 500]]
            yield [(p, row) for p, row in slice_ if p in parts]
            await asyncio.sleep(0)

    async def scenario(link: Link, url: str) -> None:
        mirror = RedisMirror(
            url, prefix, max_pending=1_000, chunk_size=200, resync_source=table_rows
        )
        link.cut()
        for visits in (1, 2):  # the stream updates every owned row twice during the outage
            for start in range(0, len(table), 100):
                for p in owned:
                    batch = [f"u{i}" for i in range(start, start + 100) if i % 3 == p]
                    for u in batch:
                        table[u] = profile(u, visits)
                    mirror.stage_users([table[u] for u in batch], p)
                    assert len(mirror.pending) <= mirror.max_pending
        assert mirror.dropped > 0 and mirror.resync_due
        assert not await mirror.flush()  # Redis does not answer: no resync yet
        assert walks == []
        link.restore()
        await flush_until_drained(mirror, timeout=60)
        assert mirror.resyncs == 1 and walks == [None]

    asyncio.run(through_link(redis_url, scenario))
    ids = list(table)
    values = read_values(direct, [f"{prefix}user:{u}" for u in ids])
    for u, value in zip(ids, values, strict=True):
        assert value == (mirrored(table[u]) if partition_of(u) in owned else None), u


def test_revoked_partition_is_not_written(redis_url: str, direct: redis.Redis, prefix: str):
    """(c) After partition 3 is revoked its pending and late values are not written; partition
    1's are, and so are values of no partition (models)."""

    async def scenario(link: Link, url: str) -> None:
        mirror = RedisMirror(url, prefix)
        mirror.stage_users([profile("p3")], 3)
        mirror.stage_users([profile("p1")], 1)
        mirror.stage("model:m", {"version": 1})
        mirror.revoke({3})
        mirror.stage_users([profile("p3", visits=1)], 3)  # a batch that ended after the revoke
        assert await mirror.flush()
        assert direct.get(f"{prefix}user:p3") is None
        assert direct.get(f"{prefix}user:p1") == mirrored(profile("p1"))
        assert direct.get(f"{prefix}model:m") == b'{"version": 1}'
        assert not mirror.pending and mirror.dropped == 2

    asyncio.run(through_link(redis_url, scenario))


def test_revoke_during_flush_stops_the_partitions_chunks(
    redis_url: str, direct: redis.Redis, prefix: str
):
    """(d) A revoke while a chunked flush is in flight: the chunks not yet sent carry none of
    the revoked partition's values; the other partition's are all written."""
    chunk = 100
    p3 = [f"a{i}" for i in range(1_000)]
    p1 = [f"b{i}" for i in range(1_000)]

    async def scenario(link: Link, url: str) -> None:
        mirror = RedisMirror(url, prefix, chunk_size=chunk)
        for start in range(0, 1_000, 50):  # each chunk holds 50 keys of each partition
            mirror.stage_users([profile(u) for u in p3[start : start + 50]], 3)
            mirror.stage_users([profile(u) for u in p1[start : start + 50]], 1)
        flush = asyncio.ensure_future(mirror.flush())
        await wait_until(lambda: mirror.written > 0, 30, "the first chunk")
        mirror.revoke({3})
        assert await flush
        assert not mirror.pending

    asyncio.run(through_link(redis_url, scenario, rate=2e6))  # ~30 ms per chunk
    written3 = sum(v is not None for v in read_values(direct, [f"{prefix}user:{u}" for u in p3]))
    assert 0 < written3 <= 3 * chunk // 2, f"{written3} keys of the revoked partition written"
    assert all(v is not None for v in read_values(direct, [f"{prefix}user:{u}" for u in p1]))


def test_rebalance_resyncs_gained_and_dropped_partitions(
    redis_url: str, direct: redis.Redis, prefix: str
):
    """assign() resyncs the partitions this worker gains, and those it keeps across a rebalance
    but whose unwritten values (or due resync) the revoke dropped."""
    table = {f"u{i}": profile(f"u{i}", visits=5) for i in range(30)}
    walks: list[Set[int] | None] = []

    async def table_rows(partitions: Set[int] | None) -> AsyncIterator[users.Rows]:
        walks.append(partitions)
        yield [
            (partition_of(u), row)
            for u, row in table.items()
            if partition_of(u) in (partitions or ())
        ]

    async def scenario(link: Link, url: str) -> None:
        mirror = RedisMirror(url, prefix, resync_source=table_rows)
        link.cut()
        mirror.assign({0, 1})
        assert not await mirror.flush()  # Redis down: the resync waits...
        mirror.revoke({0, 1})
        mirror.assign({0, 1})  # ...across a rebalance
        link.restore()
        assert await mirror.flush()
        mirror.stage_users([profile("u1", visits=6)], 1)  # pending when the rebalance starts
        table["u1"] = profile("u1", visits=6)
        mirror.revoke({0, 1})  # an eager rebalance revokes every partition first
        mirror.assign({0, 1})
        assert await mirror.flush()
        mirror.revoke({0, 1})
        mirror.assign({0, 1, 2})
        assert await mirror.flush()

    asyncio.run(through_link(redis_url, scenario))
    assert walks == [{0, 1}, {1}, {2}]
    ids = list(table)
    values = read_values(direct, [f"{prefix}user:{u}" for u in ids])
    assert values == [mirrored(table[u]) for u in ids]


def test_revoke_handler_takes_the_user_topics_partitions(monkeypatch: pytest.MonkeyPatch):
    mirror = RedisMirror("", "x:")
    monkeypatch.setattr(users, "mirror", mirror)
    revoked = {
        TP(users.settings.topic("page-times"), 3),
        TP(users.settings.topic("new-users"), 4),
        TP("another-topic", 5),
    }
    asyncio.run(users.drop_revoked_partitions(None, revoked))
    assert (mirror.owns(3), mirror.owns(4), mirror.owns(5), mirror.owns(None)) == (
        False,
        False,
        True,
        True,
    )


def test_owned_rows_walks_assigned_partitions_in_slices(monkeypatch: pytest.MonkeyPatch):
    store = users.users_table.data
    keys = [f"owned-rows-test-{i}".encode() for i in range(50)]
    monkeypatch.setattr(users, "RESYNC_SLICE", 20)
    monkeypatch.setattr(users, "assigned_user_partitions", lambda: {0, 1, 2})

    async def walk(partitions: Set[int] | None) -> list[users.Rows]:
        return [rows async for rows in users.owned_rows(partitions)]

    try:
        for key in keys:
            store[key] = profile(key.decode())
        slices = asyncio.run(walk({1, 2, 5}))
    finally:
        for key in keys:
            store.pop(key, None)
    assert len(slices) >= 3
    expected = {
        k.decode(): users.row_partition(k) for k in keys if users.row_partition(k) in {1, 2}
    }
    found = {row["user_id"]: p for rows in slices for p, row in rows if row["user_id"] in expected}
    assert found == expected


def test_corrupted_value_reads_as_none(redis_url: str, direct: redis.Redis, prefix: str):
    for user_id, raw in (("a", b"{not json"), ("b", b"\xff\xfe"), ("c", b"[1, 2]")):
        direct.set(f"{prefix}user:{user_id}", raw)
    direct.set(f"{prefix}user:d", b'{"user_id": "d"}')

    async def read(user_ids: list[str]) -> list[dict[str, Any] | None]:
        mirror = RedisMirror(redis_url, prefix)
        return [await mirror.get_user(u) for u in user_ids]

    assert asyncio.run(read(["a", "b", "c", "d", "e"])) == [
        None,
        None,
        None,
        {"user_id": "d"},
        None,
    ]


def test_packed_commands_are_redis_py_s_and_an_error_reply_leaves_no_stale_reply(
    redis_url: str, direct: redis.Redis, prefix: str
):
    """The mirror packs its MSET and DEL itself (users.mset_command, users.del_command): the
    bytes are redis-py's own packing of the same commands, Redis stores what they say, and an
    error reply raises and closes the connection, so the next command on the pool does not read
    the first command's leftover reply as its own."""
    values = [(f"{prefix}k{i}", f"ü{i}".encode() * i) for i in range(5)] + [(f"{prefix}ü", b"")]
    deleted = [f"{prefix}gone", f"{prefix}ü"]
    reference = redis.Connection()
    for packed, args in (
        (users.mset_command(values), ["MSET", *(x for kv in values for x in kv)]),
        (users.del_command(deleted), ["DEL", *deleted]),
    ):
        assert packed == b"".join(reference.pack_command(*args))
    assert users.mset_command([]) == users.del_command([]) == b""
    direct.set(f"{prefix}gone", b"x")

    async def scenario() -> list[Any]:
        client = aioredis.from_url(redis_url)
        await users.send_commands(client, [users.mset_command(values), users.del_command(deleted)])
        unknown = b"*1\r\n$15\r\nNO-SUCH-COMMAND\r\n"
        with pytest.raises(redis.ResponseError):
            await users.send_commands(client, [unknown, users.del_command([f"{prefix}k1"])])
        answers = [await client.get(f"{prefix}k3"), await client.exists(f"{prefix}k1")]
        await client.aclose()
        return answers

    # Redis ran the DEL after the error (pipelined commands are independent); its reply was
    # left unread on a connection that was closed, so GET answers with k3, not DEL's count.
    assert asyncio.run(scenario()) == [values[3][1], 0]
    assert direct.get(f"{prefix}k4") == values[4][1] and direct.exists(f"{prefix}gone") == 0
