"""The clustering model version a worker serves, and assignment with it (SPEC §6.6): online, of
the users a batch touches, and by the re-assignment pass of each partition's owner.

Kept apart from the trainer so the users agent (the only writer of a user's row and of the user's
`cluster-assignments` records) can assign without depending on the trainer.

The re-assignment pass: once a version serves, the owner of each partition walks the partition's
rows in slices of SLICE rows (from its own RocksDB database in key order, no key hashed; the
memory store's rows by a cached partition of each key), assigns each slice in one vectorised
predict, produces the changed users' assignments and awaits them, then writes their rows, and
lets the event loop run before the next slice. A slice is read and assigned under the
partition's lock, which the users agent takes for each batch, and its changed rows stay "in
flight" until written: the agent waits for them before it touches one, so the two never write
a row over each other. A pass runs when a
re-assign command names a version newer than the partition's last complete pass, and whenever
this worker gains a partition (after recovery): whatever pass a crashed or departed owner left
unfinished is done again (rows already assigned produce nothing), and such a check costs less
than the partition's recovery itself. A newer version during a pass restarts it: the latest wins.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Set
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Any

import numpy as np
import rocksdict
from faust.types import TP

from models.mixture import BayesianGaussianMixture
from models.normal import NormalPopulation
from streams import topics as t
from streams.adapter import stores
from streams.app import app, batch_producer, models_ready, settings
from streams.records import (
    MAX_COUNT,
    ClusterAssignment,
    Rejected,
    document_version,
    dumps_json,
    loads_object,
    unstamp,
)
from streams.served import Served
from streams.users import (
    USER_TOPICS,
    assigned_user_partitions,
    mirror,
    row_partition,
    users_table,
    write_users,
)

log = logging.getLogger(__name__)

CLUSTERING = "clustering"
# How long a re-assign command waits for the model version it names to arrive on `models`.
MODEL_WAIT_SECONDS = 30.0
FEATURES = tuple(f.strip() for f in settings.clustering_features.split(",") if f.strip())


@dataclass
class ServingModel(Served):
    """The version every worker assigns with, and the one before it (for GET /clusters)."""

    mixture: BayesianGaussianMixture | None = None
    population: NormalPopulation | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def model_name(self) -> str:
        return CLUSTERING

    async def wait_version(self, version: int, timeout: float = MODEL_WAIT_SECONDS) -> bool:
        """Wait until `version` (or a newer one) serves; False after `timeout` seconds (its
        document was refused, or never came)."""
        try:
            async with asyncio.timeout(timeout):
                while self.version < version:
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    def build(
        self, document: dict[str, Any], version: int
    ) -> tuple[BayesianGaussianMixture, NormalPopulation]:
        mixture, population, _ = clustering_models(document)
        if tuple(mixture.features) != FEATURES:
            raise Rejected(f"features {list(mixture.features)[:4]} are not {list(FEATURES)}")
        check_sample(document.get("sample"))
        return mixture, population

    def adopt(
        self, built: tuple[BayesianGaussianMixture, NormalPopulation], document: dict[str, Any]
    ) -> None:
        self.mixture, self.population = built
        self.changed.set()
        self.changed = asyncio.Event()


def clustering_models(
    document: dict[str, Any],
) -> tuple[BayesianGaussianMixture, NormalPopulation, dict[str, Any]]:
    """A clustering document's two estimators and the mixture's deployment fields (version,
    times). The population's version may be older: a rollback renumbers the mixture only."""
    version = document_version(document)
    mixture, stamps = unstamp(document.get("mixture"), "mixture", version)
    population, _ = unstamp(document.get("population"), "population", version, exact=False)
    return (
        BayesianGaussianMixture.from_dict(mixture),
        NormalPopulation.from_dict(population),
        stamps,
    )


SAMPLE_MAX = 5000


def check_sample(sample: Any) -> None:
    """The dashboard's snapshot (streams.clustering.snapshot): bounded lists of the right types,
    so a document cannot break the page or blow up its payload."""
    if sample is None:
        return
    if not isinstance(sample, dict):
        raise Rejected("sample must be an object")
    users, points, labels = sample.get("users"), sample.get("points"), sample.get("labels")
    if not all(isinstance(x, list) and len(x) <= SAMPLE_MAX for x in (users, points, labels)):
        raise Rejected(f"sample users, points and labels must be lists of at most {SAMPLE_MAX}")
    if not len(users) == len(points) == len(labels):  # type: ignore[arg-type]
        raise Rejected("sample users, points and labels differ in length")
    if not all(isinstance(u, str) for u in users + labels):  # type: ignore[operator]
        raise Rejected("sample users and labels must be strings")
    for point in points:  # type: ignore[union-attr]
        if (
            not isinstance(point, list)
            or len(point) != len(FEATURES)
            or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in point
            )
        ):
            raise Rejected("sample points must be finite feature vectors")
    atypical = sample.get("atypical", [])
    if not isinstance(atypical, list) or len(atypical) > 100:
        raise Rejected("sample atypical must be a list of at most 100 users")
    if not all(isinstance(a, dict) and isinstance(a.get("user_id"), str) for a in atypical):
        raise Rejected("sample atypical entries need a user_id")
    count = sample.get("atypical_count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < MAX_COUNT:
        raise Rejected("sample atypical_count must be a count")


serving = ServingModel()


def observe_metric(values: list[float]) -> None:
    """New users' metric values move the atypical band between batch fits: BN1's exact online
    update of the same posterior (models.normal)."""
    if values and serving.population is not None and serving.population.n:
        serving.population.partial_fit(np.asarray(values, dtype=float))


def features_of(profiles: list[dict[str, Any]]) -> np.ndarray:
    """The features of each profile (missing ones 0), a column at a time: numpy converts a
    column's list in C (a Python float() per value was a sixth of a re-assignment pass)."""
    X = np.empty((len(profiles), len(FEATURES)))
    for j, name in enumerate(FEATURES):
        X[:, j] = [p.get(name) or 0.0 for p in profiles]
    return X


def assign(profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Label and atypical flag of each profile under the serving model (one vectorised predict).

    Only profiles whose label or flag changes are updated (their `model_version` is the version
    that last changed them); their `cluster-assignments` records are returned.
    """
    if serving.mixture is None or serving.population is None or not profiles:
        return []
    labels = serving.mixture.predict(features_of(profiles))
    metric = [p.get(settings.atypical_metric) for p in profiles]
    known = np.array([m is not None for m in metric])
    flags = np.zeros(len(profiles), dtype=bool)
    if known.any():
        flags[known] = serving.population.predict(np.array([m for m in metric if m is not None]))
    changed = []
    now, version = time.time(), serving.version
    for profile, label, flag, has in zip(profiles, labels, flags.tolist(), known, strict=True):
        atypical = flag if has else None
        if profile.get("cluster") == label and profile.get("atypical") == atypical:
            continue
        profile.update(cluster=label, atypical=atypical, model_version=version)
        # The record's fields by name (dataclasses.asdict was three quarters of this loop).
        values = (profile["user_id"], label, version, atypical, now)
        changed.append(dict(zip(ASSIGNMENT_FIELDS, values, strict=True)))
    return changed


ASSIGNMENT_FIELDS = tuple(f.name for f in fields(ClusterAssignment))


# ---------------------------------------------------------------------------------------------
# The owners' re-assignment pass (see the module docstring)

ASSIGNMENTS = settings.topic(t.CLUSTER_ASSIGNMENTS)
# Rows per slice: each step of a slice (read and assign, write, mirror) holds the event loop for
# ~5-15 ms on this machine (~6 us per row to read, ~3 to assign, ~10 to write), so even twice as
# slow under contention for the cores it stays under the 50 ms stall bound.
SLICE = 1_000
# Slices whose assignments and rows may be on their way to the broker at once: their round trips
# overlap instead of adding up (one at a time made a million users' pass 52 s instead of 28).
# The partition's lock is free while a write is on its way: the users agent goes on meanwhile.
IN_FLIGHT = 4
# Redis values staged beyond which a slice waits (up to MIRROR_WAIT_SECONDS) for the mirror to
# write them: a pass changing a million users must not overflow the mirror's backlog (which
# drops the values and re-reads the whole table), unless Redis stops answering.
MIRROR_BACKLOG = 20_000
MIRROR_WAIT_SECONDS = 1.0
Rows = list[tuple[bytes, dict[str, Any]]]


class Reassigner:
    """Which of this worker's partitions need a pass, and the task that runs them, one partition
    at a time. A slice is read and assigned under the partition's lock (which the users agent
    holds for a batch), then its changed rows are in flight until written: the agent waits for
    them (`settle`) before it touches one, so neither ever writes a row over the other's."""

    def __init__(self) -> None:
        self.locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.in_flight: dict[int, dict[bytes, asyncio.Future]] = defaultdict(dict)
        self.done: dict[int, int] = {}  # partition -> version of its last complete pass here
        self.due: set[int] = set()  # owned partitions waiting for (or in) a pass
        self.wake = asyncio.Event()
        self.passes = 0
        self._partition_of: dict[bytes, int] = {}  # memory store: each key hashed once

    def lock(self, partition: int) -> asyncio.Lock:
        return self.locks[partition]

    def state(self) -> dict[str, Any]:
        """This worker's partitions: those waiting for (or in) a pass, and the version of each
        one's last complete pass (GET /clusters)."""
        done = {str(p): v for p, v in sorted(self.done.items())}
        return {"due": sorted(self.due), "done": done, "passes": self.passes}

    async def settle(self, partition: int, keys: Set[bytes | None] | None) -> None:
        """Wait until no slice in flight holds a row of `keys` (None: any row of the partition).
        The users agent calls it under the lock before it reads rows: it then reads what the
        slice wrote, and its own assignments follow the slice's."""
        flights = self.in_flight.get(partition)
        if not flights:
            return
        if keys is None or None in keys:
            pending = set(flights.values())
        else:
            pending = {flights[k] for k in keys if k in flights}
        if pending:
            await asyncio.wait(pending)

    def request(self, partition: int, version: int) -> None:
        """A re-assign command: pass unless a complete pass used `version` or a newer one."""
        if self.done.get(partition, 0) < version:
            self.due.add(partition)
            self.wake.set()

    def gain(self, partitions: Set[int]) -> None:
        """Partitions this worker now owns: pass over those it has not passed itself (their
        previous owner may have stopped in the middle of a pass)."""
        fresh = set(partitions) - set(self.done)
        self.due |= fresh
        if fresh:
            self.wake.set()

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions given away: forget them, and wait for their slices in flight to be
        written, so that no write of this worker lands after the next owner recovered them."""
        for partition in partitions:
            self.done.pop(partition, None)
            self.due.discard(partition)
            async with self.lock(partition):
                await self.settle(partition, None)

    async def run(self) -> None:
        """Forever: pass over the due partitions, lowest first, once the models are loaded."""
        await models_ready.wait()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.due:
                await self.pass_partition(min(self.due))

    async def pass_partition(self, partition: int) -> None:
        """Assign every row of `partition` with the serving version, slice by slice, until a
        walk ends with the version it started with."""
        start, checked, changed = time.perf_counter(), 0, 0
        version, cursor = serving.version, None
        writes: deque[asyncio.Future] = deque()
        while True:
            async with self.lock(partition):
                if partition not in self.due:  # revoked: revoke() waits for the writes
                    return
                if serving.mixture is None:
                    break
                if serving.version != version:  # a newer version: walk again with it
                    version, cursor, checked, changed = serving.version, None, 0, 0
                rows, cursor = self.slice(partition, cursor)
                checked += len(rows)
                written = assign_rows(rows)
                if written:
                    changed += len(written[0])
                    writes.append(self.launch(partition, *written))
                if cursor is END:
                    if serving.version == version:
                        break
                    cursor = None
            while len(writes) >= IN_FLIGHT:
                await writes.popleft()
            await asyncio.sleep(0)
            await mirror_drained()
        for write in writes:
            await write
        self.due.discard(partition)
        self.done[partition] = version
        self.passes += 1
        log.info(
            "partition %d re-assigned with v%d: %d users checked, %d changed, %.2f s",
            partition,
            version,
            checked,
            changed,
            time.perf_counter() - start,
        )

    def launch(self, partition: int, rows: Rows, assignments: list[tuple[bytes, bytes]]) -> Any:
        """Mark a slice's changed rows in flight and start writing them."""
        done = asyncio.get_running_loop().create_future()
        self.in_flight[partition].update(dict.fromkeys((key for key, _ in rows), done))
        return asyncio.ensure_future(self.write(partition, rows, assignments, done))

    async def write(
        self, partition: int, rows: Rows, assignments: list[tuple[bytes, bytes]], done: Any
    ) -> None:
        """Produce the slice's assignments and await them, then write its rows (effects before
        rows) and mirror them. A failure stops the worker, as a failed batch of the users agent
        does: the rows are recovered from the changelog and the next owner passes again."""
        try:
            # The assignments topic is partitioned like the rows: no key is hashed.
            await batch_producer.send(ASSIGNMENTS, partition, assignments)
            await write_users(partition, rows, [])
            mirror.flush_soon()
        except Exception as exc:
            log.exception("the re-assignment of partition %d failed", partition)
            await app.crash(exc)
        finally:
            flights = self.in_flight[partition]
            for key, _ in rows:
                if flights.get(key) is done:
                    del flights[key]
            done.set_result(None)

    def slice(self, partition: int, cursor: Any) -> tuple[Rows, Any]:
        """The next rows of the partition after `cursor` (None: from the start), and the cursor
        after them (END after the last). Rows are copies: assigning one never touches the
        stored row before its write."""
        store = users_table.data
        if stores.is_rocksdb(store):
            database = stores.partition_databases(store).get(partition)
            return _rocksdb_slice(database, stores.OFFSET_KEY, cursor)
        return self._memory_slice(store.data, partition, cursor)

    def _memory_slice(self, data: dict, partition: int, cursor: Any) -> tuple[Rows, Any]:
        """Memory store: a snapshot of the keys when the pass starts, walked SLICE keys of any
        partition at a time (a key's partition is hashed once per process)."""
        keys, index = cursor if cursor is not None else (list(data), 0)
        rows: Rows = []
        partition_of = self._partition_of
        for key in keys[index : index + SLICE]:
            p = partition_of.get(key)
            if p is None:
                p = partition_of[key] = row_partition(key)
            profile = data.get(key) if p == partition else None
            if isinstance(profile, dict) and isinstance(profile.get("user_id"), str):
                rows.append((key, dict(profile)))
        index += SLICE
        return rows, ((keys, index) if index < len(keys) else END)


END = object()  # the cursor after a partition's last row
# A full scan must not fill the block cache with every row it reads once (measured: +0.8 GB of
# RSS for a million users).
_SCAN = rocksdict.ReadOptions()
_SCAN.fill_cache(False)


def _rocksdb_slice(database: Any, offset_key: bytes, cursor: bytes | None) -> tuple[Rows, Any]:
    """RocksDB: up to SLICE rows of the partition's own database after `cursor` (a key), in key
    order; an iterator per slice, so none outlives a revoked partition's database."""
    if database is None:
        return [], END
    rows: Rows = []
    last = None
    for key, value in islice(database.items(from_key=cursor, read_opt=_SCAN), SLICE + 1):
        if key == cursor:
            continue
        last = key
        if key != offset_key and (profile := _decoded(value)) is not None:
            rows.append((key, profile))
    return rows, END if last is None else last


def _decoded(value: bytes | None) -> dict[str, Any] | None:
    """A stored row, or None for one that is not a user's (never written by a worker)."""
    try:
        profile = loads_object(value, t.MODEL_MAX_BYTES) if value is not None else None
    except Rejected:
        return None
    return profile if profile is not None and isinstance(profile.get("user_id"), str) else None


def assign_rows(rows: Rows) -> tuple[Rows, list[tuple[bytes, bytes]]] | None:
    """A slice's changed rows and their assignment records (key, JSON); None when none
    changed."""
    changed = assign([profile for _, profile in rows])
    if not changed:
        return None
    ids = {a["user_id"] for a in changed}
    written = [(key, profile) for key, profile in rows if profile["user_id"] in ids]
    return written, [(a["user_id"].encode(), dumps_json(a)) for a in changed]


async def mirror_drained() -> None:
    """Wait (at most MIRROR_WAIT_SECONDS) while the Redis backlog is above MIRROR_BACKLOG."""
    if not mirror.enabled:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MIRROR_WAIT_SECONDS
    while len(mirror.pending) > MIRROR_BACKLOG and loop.time() < deadline:
        mirror.flush_soon()
        await asyncio.sleep(0.01)


reassigner = Reassigner()


@app.task
async def reassign_partitions() -> None:
    await reassigner.run()


@users_table.on_recover
async def reassign_gained_partitions() -> None:
    """After each rebalance's recovery: pass over the partitions this worker gained."""
    reassigner.gain(assigned_user_partitions())


@app.on_partitions_revoked.connect
async def forget_revoked_partitions(sender: object, revoked: Set[TP], **kwargs: object) -> None:
    await reassigner.revoke({tp.partition for tp in revoked if tp.topic in USER_TOPICS})
