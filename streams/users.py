"""Users: the per-user table, its Redis mirror and GET /users/{user_id}.

Redis key layout (prefix = SMARTSTREAM_TOPIC_PREFIX + "smartstream:"):
  ``{prefix}user:{user_id}``  -> JSON of the GET /users/{id} record (one GET per page view)
  ``{prefix}model:{name}``    -> JSON of the model's current version (see streams.clustering)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Set
from typing import Any

import orjson
import redis.asyncio as aioredis
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import Gauge
from redis.exceptions import RedisError

from streams import topics as t
from streams.adapter import stores
from streams.app import app, settings, write_rows
from streams.auth import Role, requires
from streams.erasure import erase_view
from streams.profiles import encode_row, public_view
from streams.records import dumps_json

log = logging.getLogger(__name__)

users_table = app.Table(
    "users",
    default=None,
    partitions=settings.partitions,
    key_type=bytes,  # raw user-id keys, as on the source topics; JSON values
    help="Per-user profile: running averages and visits overall and per page type A..J.",
)

# The user-keyed topics: a partition of theirs is the partition of its users' rows.
USER_TOPICS = frozenset({settings.topic(t.PAGE_TIMES), settings.topic(t.NEW_USERS)})
RESYNC_SLICE = 2_000

# (partition, profile) rows of the users table; see owned_rows.
Rows = list[tuple[int, dict[str, Any]]]
# Called with the partitions to walk (None: all this worker owns); yields slices of rows.
ResyncSource = Callable[[Set[int] | None], AsyncIterator[Rows]]
# A pending value (None: delete the key) and the partition it belongs to (None: not a user's,
# always written).
Entry = tuple[int | None, bytes | None]


def mset_command(values: list[tuple[str, bytes]]) -> bytes:
    """MSET of `values` in the Redis protocol (empty: none). Packed here in one join: redis-py's
    asyncio client packs each argument in Python, 3.0 us of the worker's CPU per value against
    1.0 us here (200,000 values of 380 bytes, MSETs of 1,000, docs/benchmarks.md)."""
    if not values:
        return b""
    parts = [b"*%d\r\n$4\r\nMSET\r\n" % (2 * len(values) + 1)]
    for key, value in values:
        k = key.encode()
        parts.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(value), value))
    return b"".join(parts)


def del_command(keys: list[str]) -> bytes:
    """DEL of `keys` in the Redis protocol (empty: none)."""
    if not keys:
        return b""
    encoded = [k.encode() for k in keys]
    parts = [b"*%d\r\n$3\r\nDEL\r\n" % (len(keys) + 1)]
    parts.extend(b"$%d\r\n%s\r\n" % (len(k), k) for k in encoded)
    return b"".join(parts)


async def send_commands(client: aioredis.Redis, commands: list[bytes]) -> None:
    """Send packed commands on one pooled connection and read their replies (an error reply
    raises). On any failure the connection is closed: replies left unread on it would answer
    the next command."""
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(b"".join(commands))
        for _ in commands:
            await connection.read_response()
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


class RedisMirror:
    """Writes the latest value of each key to Redis, in pipelined chunks, in the background.

    Processing never waits for Redis. When it does not answer, the latest values wait (one entry
    per key) up to `max_pending` keys; beyond that the users' values are dropped and, once Redis
    answers again, every row this worker owns is re-read from the table (`resync_source`), so
    memory stays bounded and Redis still ends with the latest values. Values of partitions this
    worker lost are never written: the partition's new owner writes newer ones.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        max_pending: int = 200_000,
        chunk_size: int = 1_000,
        resync_source: ResyncSource | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.prefix = prefix
        options = {"socket_timeout": 2, "socket_connect_timeout": 2, **(client_options or {})}
        self.client = aioredis.from_url(url, **options) if url else None
        self.max_pending = max_pending
        self.chunk_size = chunk_size
        self.resync_source = resync_source
        self.pending: dict[str, Entry] = {}
        self.written = 0
        self.failures = 0
        self.resyncs = 0
        self.dropped = 0
        self._revoked: set[int] = set()  # revoked and not assigned again: never written
        self._assigned: set[int] = set()
        self._lost: set[int] = set()  # partitions whose values were dropped unwritten
        self._resync_all = False
        self._resync_parts: set[int] = set()
        self._resyncing = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Future | None = None

    @property
    def enabled(self) -> bool:
        return self.client is not None

    @property
    def resync_due(self) -> bool:
        return self._resync_all or bool(self._resync_parts)

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def owns(self, partition: int | None) -> bool:
        return partition is None or partition not in self._revoked

    def stage_users(
        self,
        profiles: Iterable[dict[str, Any]],
        partition: int | None = None,
        values: Iterable[bytes] | None = None,
    ) -> None:
        """Stage the users' records (`values`: their public views' JSON when the caller has
        encoded them, see streams.profiles.encode_row); `partition` (their rows' partition)
        guards against writing them after the partition moved to another worker."""
        if self.client is None:
            return
        if partition is not None and partition in self._revoked:
            self._lost.add(partition)  # resynced if the partition comes back
            self.dropped += sum(1 for _ in profiles)
            return
        if self._resync_all or partition in self._resync_parts:
            self.dropped += sum(1 for _ in profiles)  # the resync reads them from the table
            return
        if values is None:
            self._put_rows((partition, p) for p in profiles)
        else:
            pending, key = self.pending, self.user_key
            for profile, value in zip(profiles, values, strict=True):
                pending[key(profile["user_id"])] = (partition, value)
        if len(self.pending) > self.max_pending:
            self._overflow()

    def stage(self, key: str, value: Any) -> None:
        """Stage a value of no partition (a model's): always written."""
        if self.client is not None:
            self.pending[f"{self.prefix}{key}"] = (None, json.dumps(value).encode())

    def stage_delete(self, key: str, partition: int | None = None) -> None:
        """Stage the deletion of `key` (an erased user's): it replaces any pending value."""
        if self.client is not None:
            self.pending[key] = (partition, None)

    def _put_rows(self, rows: Iterable[tuple[int | None, dict[str, Any]]]) -> None:
        pending = self.pending
        for partition, profile in rows:
            value = dumps_json(public_view(profile))
            pending[self.user_key(profile["user_id"])] = (partition, value)

    def _overflow(self) -> None:
        """Drop the users' pending values: the table holds them, and a resync re-reads it."""
        users = self.user_key("")
        dropped = [key for key in self.pending if key.startswith(users)]
        for key in dropped:
            del self.pending[key]
        self.dropped += len(dropped)
        if self.resync_source is not None:
            self._resync_all, self._resync_parts = True, set()
        log.error(
            "Redis backlog over %d keys: %d users' values dropped, %s",
            self.max_pending,
            len(dropped),
            "resync from the table when Redis answers" if self.resync_source else "no resync",
        )

    def revoke(self, partitions: Iterable[int]) -> None:
        """Stop writing these partitions' values: another worker may own them now and write
        newer ones, which a late write here would overwrite."""
        revoked = set(partitions)
        if not revoked:
            return
        self._revoked |= revoked
        if self._resyncing:  # the running walk skips them from now on
            self._lost |= revoked
        self._lost |= self._resync_parts & revoked  # due: resynced if they come back
        self._resync_parts -= revoked
        gone = [(key, p) for key, (p, _) in self.pending.items() if p is not None and p in revoked]
        for key, partition in gone:
            del self.pending[key]
            self._lost.add(partition)
        self.dropped += len(gone)

    def assign(self, partitions: Iterable[int]) -> None:
        """This worker owns `partitions` (their table rows recovered). Resync those it did not
        own before (their previous owner may have dropped unwritten values) and those whose
        values it dropped itself."""
        assigned = set(partitions)
        due = (assigned - self._assigned) | (assigned & self._lost)
        self._revoked = (self._revoked | self._assigned) - assigned
        self._assigned, self._lost = assigned, set()
        if due and self.resync_source is not None and not self._resync_all:
            self._resync_parts |= due

    def flush_soon(self) -> None:
        """Start a flush in the background unless one is running: a slow or frozen Redis never
        holds up the stream (what fails stays pending for the next flush)."""
        idle = self._task is None or self._task.done()
        if self.client is not None and (self.pending or self.resync_due) and idle:
            self._task = asyncio.ensure_future(self.flush())

    async def flush(self) -> bool:
        """Resync if due, then write what is pending; what fails stays for the next flush."""
        if self.client is None or not (self.pending or self.resync_due):
            return True
        async with self._lock:
            try:
                if self.resync_due:
                    await self._resync()
                await self._drain()
                return True
            except (RedisError, OSError) as exc:
                self.failures += 1
                log.warning("Redis unavailable (%s); %d keys wait", exc, len(self.pending))
                return False
            except Exception:  # the mirror must not stop the worker: log, retry next flush
                self.failures += 1
                log.exception("Redis mirror flush failed; %d keys wait", len(self.pending))
                return False

    async def _drain(self) -> None:
        """Write the pending values in chunks, one round trip each: any backlog drains under the
        socket timeout, and the event loop runs between chunks. Raises on the first failure;
        the chunks written are not redone."""
        keys = list(self.pending)
        for start in range(0, len(keys), self.chunk_size):
            chunk = self._take(keys[start : start + self.chunk_size])
            if chunk:
                await self._write(chunk)

    def _take(self, keys: list[str]) -> list[tuple[str, Entry]]:
        """The current entries of `keys`, checked for ownership right before their write."""
        chunk = []
        for key in keys:
            entry = self.pending.get(key)
            if entry is None:
                continue
            partition = entry[0]
            if partition is None or partition not in self._revoked:
                chunk.append((key, entry))
            else:  # defensive: revoke() already dropped the partition's pending values
                del self.pending[key]
                self._lost.add(partition)
                self.dropped += 1
        return chunk

    async def _write(self, chunk: list[tuple[str, Entry]]) -> None:
        """One MSET for the chunk's values and one DEL for its deletions, in one round trip."""
        assert self.client is not None
        values = [(key, value) for key, (_, value) in chunk if value is not None]
        deleted = [key for key, (_, value) in chunk if value is None]
        commands = [c for c in (mset_command(values), del_command(deleted)) if c]
        await send_commands(self.client, commands)
        for key, entry in chunk:
            if self.pending.get(key) is entry:  # else a newer value was staged meanwhile
                del self.pending[key]
        self.written += len(chunk)

    async def _resync(self) -> None:
        """Re-stage the table's rows of the due partitions, slice by slice, writing as it goes
        (the backlog stays small); due again if Redis fails before the end."""
        assert self.client is not None and self.resync_source is not None
        await self.client.ping()  # only once Redis answers
        partitions = None if self._resync_all else frozenset(self._resync_parts)
        self._resync_all, self._resync_parts = False, set()
        self._resyncing = True
        try:
            async for rows in self.resync_source(partitions):
                self._put_rows((p, row) for p, row in rows if self.owns(p))
                await self._drain()
        except BaseException:
            if partitions is None:
                self._resync_all = True
            else:
                self._resync_parts |= partitions - self._revoked
            raise
        finally:
            self._resyncing = False
        self.resyncs += 1
        done = "all" if partitions is None else sorted(partitions)
        log.warning("Redis resync done: partitions %s", done)

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The mirrored record; None when absent or unreadable (a corrupted value is logged,
        never raised to the caller)."""
        if self.client is None:
            return None
        key = self.user_key(user_id)
        raw = await self.client.get(key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            log.error("unreadable Redis value at %s: %s", key, exc)
            return None
        return value if isinstance(value, dict) else None


def row_partition(key: bytes) -> int:
    """The partition of a key's row (users and comments alike): the producers' default
    (murmur2) partitioner, as Faust and kafka-python use it."""
    return t.key_partition(key, settings.partitions)


def assigned_user_partitions() -> set[int]:
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in USER_TOPICS}


async def owned_rows(partitions: Set[int] | None = None) -> AsyncIterator[Rows]:
    """The resync source: the users table's rows of this worker's partitions (of `partitions`
    only, if given), in slices with the event loop run between them so the stream never stalls.
    Ownership is re-read per slice: a rebalance during the walk stops the partitions it takes."""
    store = users_table.data
    keys = list(store.keys())  # a snapshot: the stream adds rows during the walk
    for start in range(0, len(keys), RESYNC_SLICE):
        owned = assigned_user_partitions()
        if partitions is not None:
            owned &= partitions
        rows: Rows = []
        for key in keys[start : start + RESYNC_SLICE]:
            partition = row_partition(key)
            profile = store.get(key) if partition in owned else None
            if profile is not None:
                rows.append((partition, profile))
        yield rows
        await asyncio.sleep(0)


mirror = RedisMirror(
    settings.redis_url,
    settings.redis_prefix,
    resync_source=owned_rows,
    client_options=settings.redis_options(),  # the CA of a rediss:// server
)
REDIS_BACKLOG = Gauge("smartstream_redis_backlog", "Values waiting to be written to Redis")
REDIS_BACKLOG.set_function(lambda: len(mirror.pending))


def load_row(key: bytes, partition: int) -> dict[str, Any] | None:
    """The user's stored row. RocksDB: read from the partition's database and decoded by orjson;
    Faust's store path (its codec's stdlib decoder and model lookup) was a sixth of the worker's
    CPU with that store (py-spy)."""
    store = users_table.data
    if not stores.is_rocksdb(store):
        return store.get(key)
    raw = stores.get_raw(store, partition, key)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # what only the stdlib reads (NaN), as Faust's codec would
        return json.loads(raw)


async def write_users(
    partition: int, rows: list[tuple[bytes, dict[str, Any]]], erased: list[tuple[bytes, None]]
) -> None:
    """Write one partition's users (store, changelog), delete the erased rows, then stage the
    users' Redis records: each row encoded once for both (streams.profiles.encode_row)."""
    encoded = [encode_row(profile) for _, profile in rows]
    values: list[bytes | None] = [row for row, _ in encoded]
    await write_rows(users_table, partition, [*rows, *erased], values + [None] * len(erased))
    mirror.stage_users([p for _, p in rows], partition, [public for _, public in encoded])


@app.on_partitions_revoked.connect
async def drop_revoked_partitions(sender: object, revoked: Set[TP], **kwargs: object) -> None:
    """Drop the unwritten values of the user partitions this worker loses (see revoke)."""
    mirror.revoke(tp.partition for tp in revoked if tp.topic in USER_TOPICS)


@users_table.on_recover
async def resync_assigned_partitions() -> None:
    """After each rebalance's recovery (the table is current): own the assigned partitions."""
    mirror.assign(assigned_user_partitions())


@app.timer(interval=1.0)
async def flush_mirror() -> None:
    """Retry the Redis backlog (and a due resync) even when no events arrive."""
    await mirror.flush()


@app.page("/users/{user_id}")
class UserView(View):
    """The user's record, from the worker that owns the user's partition (faust routes it)."""

    @requires(Role.SERVER)
    @app.table_route(table=users_table, match_info="user_id")
    async def get(self, request: Request, user_id: str) -> Response:
        profile = users_table.get(user_id.encode())
        if profile is None:
            return self.json({"error": f"unknown user {user_id!r}"}, status=404)
        return self.json(public_view(profile))

    @requires(Role.ADMIN)
    async def delete(self, request: Request, user_id: str) -> Response:
        """Erase the user (streams.erasure): 202 once the commands are durable."""
        return await erase_view(self, request, user_id)
