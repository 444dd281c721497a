"""The re-clustering's sample and sums (pure logic, no broker): the bottom-k hash sample is
uniform, bounded, deterministic for a seed and independent of how the population is split into
partitions; BN1 from the sums equals BN1 fitted on the values; the helper's reading of users
rows sums every user exactly, refuses what is not a user's row, and orders the sample as the fit
did before sampling."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from scipy import stats

from models.normal import NormalPopulation
from models.sample import BottomK, key_hash, key_hashes

N = 100_000


def ids(n: int) -> list[bytes]:
    return [str(i + 1).encode() for i in range(n)]


def sample_of(keys: list[bytes], size: int, seed: int, parts: int = 1) -> set[bytes]:
    sample = BottomK(size)
    for part in range(parts):
        chunk = keys[part::parts]
        sample.add(key_hashes(chunk, seed), key=np.array(chunk, dtype=object))
    return set(sample.columns["key"].tolist())


def test_hashes_are_uniform() -> None:
    """Chi-square over 64 equal ranges of the 64-bit hash of 100,000 consecutive ids."""
    hashes = key_hashes(ids(N), seed=123456)
    counts = np.bincount((hashes >> np.uint64(58)).astype(int), minlength=64)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert stats.kstest(hashes.astype(float) / 2.0**64, "uniform").pvalue > 1e-3


def test_sample_is_uniform_over_users_and_features() -> None:
    """Which users are drawn does not depend on their ids or their data: the sampled ids fall
    evenly over ten id ranges, and a feature that grows with the id keeps its distribution."""
    keys = ids(N)
    picked = np.array(sorted(int(k) for k in sample_of(keys, 20_000, seed=7)))
    counts = np.bincount((picked - 1) * 10 // N, minlength=10)
    assert stats.chisquare(counts).pvalue > 1e-3
    feature = np.sqrt(np.arange(1, N + 1))  # correlated with the id order on purpose
    assert stats.ks_2samp(feature[picked - 1], feature).pvalue > 1e-3


def test_sample_size_is_bounded_and_exact_whatever_the_parts() -> None:
    keys = ids(5000)
    one = sample_of(keys, 700, seed=3)
    assert len(one) == 700
    assert sample_of(keys, 700, seed=3, parts=8) == one  # partition by partition, same sample
    assert sample_of(list(reversed(keys)), 700, seed=3, parts=3) == one
    assert len(sample_of(keys[:500], 700, seed=3)) == 500  # smaller population: all of it
    # The sample is exactly the 700 smallest hashes.
    smallest = sorted(keys, key=lambda k: key_hash(k, 3))[:700]
    assert one == set(smallest)


def test_sample_is_deterministic_for_a_seed() -> None:
    keys = ids(20_000)
    assert sample_of(keys, 2000, seed=11) == sample_of(keys, 2000, seed=11)
    other = sample_of(keys, 2000, seed=12)
    overlap = len(sample_of(keys, 2000, seed=11) & other)
    assert overlap < 2 * 2000 * 2000 / 20_000  # independent draws share ~ k^2 / N users


def test_threshold_skips_only_rows_that_cannot_enter() -> None:
    sample = BottomK(3)
    assert sample.threshold is None
    sample.add(np.array([50, 10, 40, 30], dtype=np.uint64), v=np.arange(4))
    assert sample.threshold == 40 and sorted(sample.hashes.tolist()) == [10, 30, 40]
    sample.add(np.array([20], dtype=np.uint64), v=np.array([9]))
    assert sorted(sample.columns["v"].tolist()) == [1, 3, 9]


def test_bn1_from_sums_is_bn1_fitted_on_the_values() -> None:
    """The VB posterior of BN1 depends on (n, sum x, sum x^2) only: from the sums it is the
    batch fit's, so the owners' sums can replace the values."""
    x = np.random.default_rng(5).normal(10, 5, 50_000)
    fitted = NormalPopulation().fit(x)
    summed = NormalPopulation.from_statistics(len(x), float(x.sum()), float((x * x).sum()))
    assert summed.mean == pytest.approx(fitted.mean, rel=1e-7)
    assert summed.precision == pytest.approx(fitted.precision, rel=1e-6)
    assert summed.band == pytest.approx(fitted.band, rel=1e-6)
    assert NormalPopulation.from_dict(summed.to_dict()).band == summed.band
    with pytest.raises(ValueError):
        NormalPopulation.from_statistics(1, 1.0, 1.0)


def row(offset: int, key: bytes | None, value: object) -> SimpleNamespace:
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return SimpleNamespace(topic="t-changelog", partition=0, offset=offset, key=key, value=raw)


def test_population_sums_every_user_and_refuses_what_is_not_a_row() -> None:
    from streams.fitting import Population
    from streams.serving import FEATURES

    rng = np.random.default_rng(2)
    users = {
        f"u{i}": {
            "user_id": f"u{i}",
            FEATURES[0]: float(rng.normal(20, 3)),
            FEATURES[1]: float(rng.normal(20, 3)),
            "avg1": None if i % 5 == 0 else float(rng.normal(10, 5)),
            "weight": int(i % 7),
        }
        for i in range(3000)
    }
    records = [row(i, uid.encode(), profile) for i, (uid, profile) in enumerate(users.items())]
    hostile = [
        row(9001, b"x1", b"{not json"),
        row(9002, b"x2", {"user_id": 5}),
        row(9003, b"x3", {"user_id": "x3", FEATURES[0]: "fast"}),
        row(9004, b"x4", {"user_id": "x4", "avg1": True}),
        row(9005, None, {"user_id": "x5"}),
        row(9006, b"x6", {"user_id": "x6", "weight": -1}),
        row(9007, b"x7", b'{"user_id": "x7", "avg1": 1%s}' % (b"0" * 400)),
        row(9008, b"x8", b'{"user_id": "x8", "weight": 1%s}' % (b"0" * 400)),
        row(9009, b"x9", b'{"user_id": "x9", "%s": 1%s}' % (FEATURES[0].encode(), b"0" * 400)),
    ]
    population = Population(BottomK(500), seed=1, metric="avg1", features=FEATURES)
    population.add((r.key, r.value, r) for r in records[:1000] + hostile[:3])  # a partition
    population.add((r.key, r.value, r) for r in records[1000:] + hostile[3:])
    metric = np.array([p["avg1"] for p in users.values() if p["avg1"] is not None])
    assert (population.users, population.n) == (3000, len(metric))
    assert population.weight == sum(p["weight"] for p in users.values())
    assert population.sum_x == pytest.approx(float(metric.sum()), rel=1e-12)
    assert population.sum_x2 == pytest.approx(float((metric * metric).sum()), rel=1e-12)
    assert population.refused_count == len(hostile)
    assert sorted(r["offset"] for r, _ in population.refused) == [r.offset for r in hostile]
    uid, X, values = population.ordered()
    assert len(uid) == 500 and list(uid) == sorted(uid, key=lambda u: (len(u), u))
    for u, x, v in zip(uid, X, values, strict=True):
        assert x.tolist() == [users[u][FEATURES[0]], users[u][FEATURES[1]]]
        assert (math.isnan(v) and users[u]["avg1"] is None) or v == users[u]["avg1"]


def test_local_rows_read_a_database_the_worker_keeps_open(tmp_path) -> None:
    """The helper reads a partition's RocksDB database as a secondary instance while its owner
    (here this process) keeps it open and writes to it: every row, Faust's offset key left out;
    a path that holds no database gives None (the changelog is read instead)."""
    import rocksdict

    from streams.adapter.stores import OFFSET_KEY
    from streams.fitting import local_rows

    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    primary = rocksdict.Rdict(str(tmp_path / "users-0.db"), options=options)
    rows = {f"u{i}".encode(): orjson.dumps({"user_id": f"u{i}"}) for i in range(2500)}
    for key, value in rows.items():
        primary.put(key, value)
    primary.put(OFFSET_KEY, b"41")
    try:
        read = local_rows(str(tmp_path / "users-0.db"), OFFSET_KEY)
        assert read is not None
        assert {key: value for key, value, source in read} == rows
        assert local_rows(str(tmp_path / "nothing-here.db"), OFFSET_KEY) is None
    finally:
        primary.close()


def test_the_partitions_read_in_parallel_give_the_population_read_in_one(tmp_path) -> None:
    """SMARTSTREAM_CLUSTERING_JOBS processes share the worker's partition databases out: their
    merged population has the same users, sums and sample as one process reading them all; a
    database a process cannot open comes back to be read from the changelog."""
    import asyncio
    from dataclasses import replace

    import rocksdict

    from streams.adapter.stores import OFFSET_KEY
    from streams.fitting import Source, read_local, read_population
    from streams.serving import FEATURES
    from streams.settings import Settings

    rng = np.random.default_rng(3)
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    paths, metric = {}, []
    for partition in range(5):
        path = str(tmp_path / f"users-{partition}.db")
        database = rocksdict.Rdict(path, options=options)
        for i in range(partition, 4000, 5):
            value = None if i % 4 == 0 else float(rng.normal(10, 3))
            metric += [] if value is None else [value]
            profile = {"user_id": f"u{i}", FEATURES[0]: float(i), "avg1": value, "weight": 2}
            database.put(f"u{i}".encode(), orjson.dumps(profile))
        database.put(OFFSET_KEY, b"7")
        database.close()
        paths[partition] = path
    source = Source(topic="unused", partitions=5, local=paths, offset_key=OFFSET_KEY)
    read = {
        jobs: asyncio.run(
            read_population(replace(Settings(), clustering_jobs=jobs), source, FEATURES, 900, 5)
        )
        for jobs in (1, 2)
    }
    one, two = read[1], read[2]
    assert (two.users, two.weight, two.n) == (one.users, one.weight, one.n) == (4000, 8000, 3000)
    assert two.sum_x == pytest.approx(sum(metric), rel=1e-12) == one.sum_x
    assert two.sum_x2 == pytest.approx(sum(v * v for v in metric), rel=1e-12)
    assert sorted(two.ordered()[0]) == sorted(one.ordered()[0])
    assert len(two.ordered()[0]) == 900 and (two.ordered()[1] == one.ordered()[1]).all()
    missing = [(0, paths[0]), (9, str(tmp_path / "nothing-here.db"))]
    part, unreadable = read_local(missing, OFFSET_KEY, "avg1", FEATURES, 900, 5)
    assert (part.users, unreadable) == (800, [9])
