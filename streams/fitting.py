"""What the trainer's helper process runs (streams.trainer.in_helper_process): a re-clustering's
read and fit, a spam filter's fit. A spawned helper unpickles these functions by module name, so
this module imports models/ and the contract's plain modules only, never the Faust app or a
worker module (tests/test_wiring.py checks it).

A re-clustering reads the users itself, with its own consumer, one partition after the other,
keeping the latest row of each user of that partition only. From every user it adds BN1's exact
sums (n, sum x, sum x², models.normal) and the counter weight; into the fit goes a uniform sample
of at most SMARTSTREAM_CLUSTERING_SAMPLE_SIZE users (the smallest keyed hashes of their ids,
models.sample), in natural id order. Memory is the sample plus one partition, and the fit's time
is the sample's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.mixture import BayesianGaussianMixture
from models.normal import NormalPopulation
from models.processes import die_with_parent, spawn_pool
from models.sample import BottomK, key_hash
from models.spam import SpamFilter, SpamFilterConfig
from streams import topics as t
from streams.records import Rejected, count_or_none, finite_or_none, loads_object
from streams.settings import Settings

log = logging.getLogger(__name__)
COLD_EVERY = 10
COLD_GROWTH = 1.5
# The BLAS libraries' thread counts, set to 1 for the helper's spawned processes (init_helper).
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Refused rows a run reports (dead-letters) at most: a corrupted changelog must not make the
# helper's answer grow with it.
MAX_REFUSED = 1000
RECORD_FIELDS = ("topic", "partition", "offset", "key", "value")  # what a dead letter needs
# A users row: key, JSON value, and the changelog record it came from (None: a local database).
Row = tuple[bytes | None, bytes, Any]


@dataclass(frozen=True)
class Source:
    """Where the helper reads the users: the changelog `topic` of `partitions` partitions, and
    the worker's own RocksDB database of each partition it owns (`local`: partition -> path),
    whose rows are all but Faust's `offset_key`."""

    topic: str
    partitions: int
    local: dict[int, str]
    offset_key: bytes


def warm_start_ok(current: dict[str, Any] | None, weight: int) -> bool:
    """Warm-start from the serving model unless it is missing, COLD_EVERY warm runs have passed,
    or the data grew by half since the last cold fit (counter weight over all users): a warm
    run cannot create clusters, so a model fitted on early, partial data must not be kept."""
    if current is None:
        return False
    if current.get("warm_runs", 0) + 1 >= COLD_EVERY:
        return False
    return weight < COLD_GROWTH * max(current.get("cold_weight", 0), 1)


@dataclass
class Population:
    """What the helper keeps of the users' rows: counts and sums over every user, and the
    sample (columns `uid`, `X` (features), `metric` (NaN when unknown))."""

    sample: BottomK
    seed: int
    metric: str
    features: tuple[str, ...]
    users: int = 0
    weight: int = 0
    n: int = 0  # users with a metric value, and its sums (BN1's sufficient statistics)
    sum_x: float = 0.0
    sum_x2: float = 0.0
    refused: list[tuple[Any, str]] = field(default_factory=list)
    refused_count: int = 0

    def add(self, rows: Iterable[Row]) -> None:
        """One partition's latest rows (distinct keys)."""
        threshold = self.sample.threshold
        hashes: list[int] = []
        ids: list[str] = []
        points: list[list[float]] = []
        metrics: list[float] = []
        for key, raw, source in rows:
            try:
                user_id, features, value, weight = parse_row(key, raw, self.metric, self.features)
            except Rejected as exc:
                self.refuse(source, str(exc))
                continue
            self.users += 1
            self.weight += weight
            if value is not None:
                self.n += 1
                self.sum_x += value
                self.sum_x2 += value * value
            h = key_hash(key, self.seed)  # type: ignore[arg-type]  # parse_row checked it
            if threshold is None or h < threshold:
                hashes.append(h)
                ids.append(user_id)
                points.append(features)
                metrics.append(math.nan if value is None else value)
        self.sample.add(
            np.array(hashes, dtype=np.uint64),
            uid=np.array(ids, dtype=object),
            X=np.array(points, dtype=float).reshape(-1, len(self.features)),
            metric=np.array(metrics, dtype=float),
        )

    def merge(self, other: Population) -> None:
        """Add another part's users (read by another process from other partitions)."""
        self.users += other.users
        self.weight += other.weight
        self.n += other.n
        self.sum_x += other.sum_x
        self.sum_x2 += other.sum_x2
        self.refused.extend(other.refused[: max(0, MAX_REFUSED - len(self.refused))])
        self.refused_count += other.refused_count
        if len(other.sample):
            self.sample.add(other.sample.hashes, **other.sample.columns)

    def refuse(self, record: Any, reason: str) -> None:
        """Count a row that is not a user's; a changelog record's is dead-lettered later (a
        local database row has no offset to report: its changelog record is refused when a
        run reads that partition from Kafka)."""
        self.refused_count += 1
        if record is not None and len(self.refused) < MAX_REFUSED:
            self.refused.append(({f: getattr(record, f) for f in RECORD_FIELDS}, reason))

    def ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sample's ids, features and metric values in natural id order ("2" before "10"):
        a fit independent of how the partitions interleave, and with every user sampled (up to
        the sample size) the very data and order of the fit before sampling existed."""
        uid = self.sample.columns.get("uid", np.empty(0, dtype=object))
        order = sorted(range(len(uid)), key=lambda i: (len(uid[i]), uid[i]))
        columns = self.sample.columns
        if not order:
            return uid, np.empty((0, len(self.features))), np.empty(0)
        return uid[order], columns["X"][order], columns["metric"][order]


def parse_row(
    key: bytes | None, raw: bytes, metric: str, names: tuple[str, ...]
) -> tuple[str, list[float], float | None, int]:
    """(user id, features, metric value or None, counter weight) of a users row."""
    if key is None:
        raise Rejected("a users row needs a key")
    obj = loads_object(raw, t.MODEL_MAX_BYTES)
    user_id = obj.get("user_id")
    if not isinstance(user_id, str):
        raise Rejected("a users row needs a string user_id")
    try:
        features = [float(obj.get(f) or 0.0) for f in names]
    except (TypeError, ValueError, OverflowError):
        raise Rejected(f"a users row needs numbers for {list(names)}") from None
    raw_value, raw_weight = obj.get(metric), obj.get("weight", 0)
    value, weight = finite_or_none(raw_value), count_or_none(raw_weight)
    if not all(math.isfinite(x) for x in features) or (value is None and raw_value is not None):
        raise Rejected(f"a users row needs finite {list(names)} and {metric}")
    if weight is None:
        raise Rejected("a users row's weight must be a count")
    return user_id, features, value, weight


async def read_population(
    s: Settings, source: Source, features: tuple[str, ...], size: int, seed: int
) -> Population:
    """Every user's latest row, partition by partition (memory: one partition's rows per
    process): from the worker's own RocksDB database where it has one (`local`: partition ->
    path), shared out over SMARTSTREAM_CLUSTERING_JOBS processes, else from the users
    changelog."""
    population = Population(BottomK(size), seed, s.atypical_metric, features)
    remote = [p for p in range(source.partitions) if p not in source.local]
    local = sorted(source.local.items())
    jobs = max(1, min(s.clustering_jobs, len(local)))
    shares = [local[i::jobs] for i in range(jobs)]
    common = (source.offset_key, s.atypical_metric, features, size, seed)
    if jobs > 1:
        with spawn_pool(jobs) as pool:
            parts = list(pool.map(read_local, shares, *([x] * jobs for x in common)))
    else:
        parts = [read_local(local, *common)]
    for part, unreadable in parts:
        population.merge(part)
        remote.extend(unreadable)
    if not remote:
        return population
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, max_partition_fetch_bytes=16 * 1024 * 1024, **s.aiokafka_config()
    )
    await consumer.start()
    try:
        for partition in sorted(remote):
            latest = await latest_rows(consumer, TopicPartition(source.topic, partition))
            population.add((r.key, r.value, r) for r in latest.values())
    finally:
        await consumer.stop()
    return population


def read_local(
    databases: list[tuple[int, str]],
    offset_key: bytes,
    metric: str,
    features: tuple[str, ...],
    size: int,
    seed: int,
) -> tuple[Population, list[int]]:
    """One process's share of the worker's partition databases, as a population of its own (the
    caller merges the shares), and the partitions it could not open (read from the changelog)."""
    population = Population(BottomK(size), seed, metric, features)
    unreadable = []
    for partition, path in databases:
        rows = local_rows(path, offset_key)
        if rows is None:
            unreadable.append(partition)
        else:
            population.add(rows)
    return population, unreadable


def init_helper() -> None:
    """The trainer's helper process (streams.trainer.in_helper_process): one BLAS thread per
    process, in the helper and in the processes it spawns (they read the variables when numpy
    loads): BLAS threads on every core in every process would starve the worker's event loop.
    It lives here so that the spawned helper, which unpickles it by name, never imports the
    worker. It dies with its worker."""
    from threadpoolctl import threadpool_limits

    for name in BLAS_THREADS:
        os.environ[name] = "1"
    threadpool_limits(1)
    die_with_parent()


def local_rows(path: str, offset_key: bytes) -> Iterator[Row] | None:
    """The rows of a partition's RocksDB database, which the worker keeps open: RocksDB lets
    another process open it as a secondary instance that catches up with the worker's log and
    reads it (~1 us a row, where the changelog costs ~7 us a record, several records a user).
    None when it cannot be opened: the changelog is read instead."""
    scratch = tempfile.mkdtemp(prefix="smartstream-secondary-")
    try:
        options, access = rocksdict.Options(raw_mode=True), rocksdict.AccessType.secondary(scratch)
        database = rocksdict.Rdict(path, options=options, access_type=access)
        database.try_catch_up_with_primary()
    except Exception as exc:  # rocksdict reports every failure as a plain Exception
        log.warning("partition database %s unreadable (%s): reading the changelog", path, exc)
        shutil.rmtree(scratch, ignore_errors=True)
        return None
    return _database_rows(database, scratch, offset_key)


def _database_rows(database: Any, scratch: str, offset_key: bytes) -> Iterator[Row]:
    scan = rocksdict.ReadOptions()
    scan.fill_cache(False)  # each row is read once
    try:
        for key, value in database.items(read_opt=scan):
            if key != offset_key:  # Faust's offset of the partition, not a row
                yield key, value, None
    finally:
        database.close()
        shutil.rmtree(scratch, ignore_errors=True)


async def latest_rows(consumer: AIOKafkaConsumer, tp: TopicPartition) -> dict[bytes, Any]:
    """The latest record of each key of one partition, tombstoned keys left out. Positions, not
    record offsets, tell the end: compaction and transaction markers leave offsets no record
    carries."""
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    latest: dict[bytes, Any] = {}
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=50_000)
        for record in batch.get(tp, ()):
            if record.value is None:
                latest.pop(record.key, None)
            else:
                latest[record.key] = record
    return latest


def recluster(
    s: Settings,
    source: Source,
    params: dict[str, Any],
    previous: dict[str, Any] | None,
    current: dict[str, Any] | None,
) -> dict[str, Any]:
    """Runs in the helper process: read the population, decide warm or cold, fit the mixture on
    the sample and BN1 on the sums, and draw the dashboard's snapshot."""
    start = time.perf_counter()
    population = asyncio.run(
        read_population(s, source, params["features"], s.clustering_sample_size, s.clustering_seed)
    )
    out: dict[str, Any] = {
        "users": population.users,
        "refused": population.refused,
        "refused_count": population.refused_count,
        "read_s": time.perf_counter() - start,
    }
    if population.users < 2:
        return out
    ids, X, metric = population.ordered()
    warm = warm_start_ok(current, population.weight)
    model = BayesianGaussianMixture(
        n_components=params["components"],
        n_restarts=params["restarts"],
        seed=params["seed"],
        features=params["features"],
        n_jobs=s.clustering_jobs,
    )
    prev = BayesianGaussianMixture.from_dict(previous) if previous else None
    fit_start = time.perf_counter()
    model.fit(X, previous=prev, warm_start=warm)
    mixture = {
        **model.to_dict(),
        "duration_s": time.perf_counter() - fit_start,
        "trained_at": time.time(),
    }
    pop = NormalPopulation()
    if population.n >= 2:  # BN1 from the exact sums over every user
        pop = NormalPopulation.from_statistics(population.n, population.sum_x, population.sum_x2)
    out.update(
        fitted={"mixture": mixture, "population": pop.to_dict()},
        fit_users=len(ids),
        weight=population.weight,
        warm=warm,
        sample=snapshot(ids, X, metric, model, pop, population.users, s.atypical_metric),
        fit_s=time.perf_counter() - start - out["read_s"],
    )
    return out


def snapshot(
    ids: np.ndarray,
    X: np.ndarray,
    metric: np.ndarray,
    mixture: BayesianGaussianMixture,
    population: NormalPopulation,
    users: int,
    metric_name: str,
    size: int = 1500,
) -> dict[str, Any]:
    """What the dashboard draws: up to `size` sampled users in feature space with their new
    labels, and the sampled users BN1 flags as atypical (at most 100). Their count is exact
    when every user is in the sample, else the sample's share scaled to all users."""
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(ids), min(size, len(ids)), replace=False))
    labels = mixture.predict(X[picked])
    known = ~np.isnan(metric)
    flags = np.zeros(len(ids), dtype=bool)
    if population.n and known.any():
        flags[known] = population.predict(metric[known])
    flagged = np.flatnonzero(flags)
    count = len(flagged) if users == len(ids) else round(len(flagged) * users / len(ids))
    return {
        "users": [str(ids[i]) for i in picked],
        "points": X[picked].round(3).tolist(),
        "labels": [str(x) for x in labels],
        "atypical": [
            {"user_id": str(ids[i]), metric_name: float(metric[i])} for i in flagged[:100]
        ],
        "atypical_count": int(count),
    }


def train_filter(
    texts: list[str], labels: list[bool], config: dict, name: str, version: int
) -> dict:
    """A spam filter's fit + cross-validation + calibration, as the `model` object of its
    document: the estimator's state stamped with the filter's name, version and times."""
    start = time.perf_counter()
    model = SpamFilter(SpamFilterConfig(**config)).fit(texts, labels)
    return {
        **model.to_dict(),
        "name": name,
        "version": version,
        "duration_s": time.perf_counter() - start,
        "trained_at": time.time(),
    }
