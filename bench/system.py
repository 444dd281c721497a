"""The whole system at scale: N users through Kafka into one RocksDB-backed worker, then a
re-clustering, measured from outside the worker.

    SMARTSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092 python bench/system.py --users 100000 1000000
    python bench/system.py --ari 1000000       # sample fit vs full fit, no broker

Per N (a fresh topic prefix each, deleted at the end):
1. one worker, `SMARTSTREAM_STORE=rocksdb://`, the counter off (the request below is the only
   run), the Redis mirror on when SMARTSTREAM_REDIS_URL is set;
2. N users in five generated groups, three events each: a new-user event with `avg1` and two
   page views (page A for `avg_time_pages_a`, page B so that their mean is `avg_time_pages`),
   produced as whole Kafka batches; the ingestion rate is the worker's, first to last event;
3. during the re-clustering: page views of random users at `--rate` per second (each user's
   own average, so the features do not move), and a probe user's page view every 0.5 s, timed
   from its acknowledgement to its visit in GET /users/probe;
4. `smartstream recluster` (the control record it sends), then: the time from the request to an
   assignment with the new version for every user on `cluster-assignments` (the first model
   changes everyone's cluster), the peak RSS of the worker process and of its fit helper (the
   trainer), the event loop's worst lag (the worker's gauge, and the probes over 50 ms from its
   histogram), the events/s the worker processed meanwhile, the probe's delays, and the ARI of
   the assignments against the generated groups.

--ari N: the fit on a hash sample of SMARTSTREAM_CLUSTERING_SAMPLE_SIZE users (what the
trainer does) against the fit on all N (what it did before), ARI of each against the groups
and of one against the other, over all N users.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pipeline import get, rss_mb, worker_env  # noqa: E402
from models.mixture import BayesianGaussianMixture  # noqa: E402
from models.sample import BottomK, key_hashes  # noqa: E402
from producers.population import GROUPS  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import delete_prefixed_topics, ensure_topics  # noqa: E402

# The generator's four groups plus a fifth, as (mean, covariance) of (avg_time_pages_a,
# avg_time_pages).
FIVE_GROUPS = (*GROUPS, ((12.0, 30.0), ((1.0, 0.3), (0.3, 1.0))))
CHUNK = 20_000
LOGS = ROOT / "run" / "bench"  # the worker's log of each N, kept for reading afterwards
PROBE = "probe"


@dataclass(frozen=True)
class Users:
    """N users: features (avg_time_pages, avg_time_pages_a) as the worker will compute them,
    avg1, and the generating group."""

    X: np.ndarray
    avg1: np.ndarray
    truth: np.ndarray

    def ids(self, start: int = 0, stop: int | None = None) -> list[str]:
        return [str(i + 1) for i in range(start, len(self.X) if stop is None else stop)]


def five_groups(n: int, seed: int = 7) -> Users:
    rng = np.random.default_rng(seed)
    truth = rng.permutation(np.arange(n) % len(FIVE_GROUPS))
    xa = np.empty((n, 2))
    for k, (mean, cov) in enumerate(FIVE_GROUPS):
        rows = truth == k
        xa[rows] = rng.multivariate_normal(mean, cov, int(rows.sum()))
    a = np.maximum(xa[:, 0], 0.5)  # page A's seconds: avg_time_pages_a
    b = np.maximum(2 * xa[:, 1] - a, 0.5)  # page B's: the two views average avg_time_pages
    X = np.column_stack([(a + b) / 2, a])
    return Users(X, rng.normal(10, 5, n), truth)


def page_b_seconds(users: Users, i: int) -> float:
    return float(2 * users.X[i, 0] - users.X[i, 1])


async def produce_users(settings: Settings, users: Users) -> float:
    """Every user's three events as whole batches per partition; returns events/s produced."""
    from streams.adapter.bulk import BatchProducer

    producer = BatchProducer(**settings.aiokafka_config())
    start = time.perf_counter()
    try:
        for lo in range(0, len(users.X), CHUNK):
            ids = users.ids(lo, min(lo + CHUNK, len(users.X)))
            joined, views = [], []
            for i, uid in enumerate(ids, lo):
                key = uid.encode()
                new_user = {"user_id": uid, "avg1": float(users.avg1[i]), "age": 30, "sex": "F"}
                joined.append((key, orjson.dumps(new_user)))
                a, b = float(users.X[i, 1]), page_b_seconds(users, i)
                for page, seconds in (("A", a), ("B", b)):
                    view = {"user_id": uid, "page_type": page, "seconds": seconds}
                    views.append((key, orjson.dumps(view)))
            await producer.send_keyed(settings.topic("new-users"), joined)
            await producer.send_keyed(settings.topic("page-times"), views)
    finally:
        await producer.stop()
    return 3 * len(users.X) / (time.perf_counter() - start)


def metrics(port: int) -> dict[str, float]:
    """`name{labels}` -> value of every sample on the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def processed(figures: dict[str, float]) -> float:
    """Events the users pipeline processed (page-times and new-users)."""
    pattern = re.compile(r'smartstream_events_total\{topic=".*(page-times|new-users)"\}')
    return sum(v for k, v in figures.items() if pattern.fullmatch(k))


def delays(figures: dict[str, float]) -> tuple[float, float]:
    """(probes of the event loop, probes later than 50 ms) from the lag histogram."""
    count = figures.get("smartstream_event_loop_delay_seconds_count", 0.0)
    within = figures.get('smartstream_event_loop_delay_seconds_bucket{le="0.05"}', 0.0)
    return count, count - within


def process_tree(pid: int) -> dict[int, bytes]:
    """{pid: command line} of `pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                tree[p] = fh.read()
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return tree


@dataclass
class Watch:
    """What the bench samples while the re-clustering runs (threads, until `stop`)."""

    port: int
    pid: int
    stop: threading.Event = field(default_factory=threading.Event)
    worker_peak: float = 0.0
    helper_peak: float = 0.0
    tree_peak: float = 0.0
    lag_gauge: list[float] = field(default_factory=list)
    probe_delays: list[float] = field(default_factory=list)
    probe_times: list[float] = field(default_factory=list)  # when each probe was sent
    errors: list[str] = field(default_factory=list)

    def sample_rss(self) -> None:
        while not self.stop.is_set():
            tree = process_tree(self.pid)
            sizes = {p: rss_mb(p) for p in tree}
            helpers = [s for p, s in sizes.items() if p != self.pid and _is_helper(tree[p])]
            self.worker_peak = max(self.worker_peak, sizes.get(self.pid, 0.0))
            self.helper_peak = max([self.helper_peak, *helpers])
            self.tree_peak = max(self.tree_peak, sum(sizes.values()))
            time.sleep(0.2)

    def sample_lag(self) -> None:
        while not self.stop.is_set():
            try:
                self.lag_gauge.append(metrics(self.port)["smartstream_event_loop_lag_seconds"])
            except (OSError, KeyError) as exc:
                self.errors.append(f"metrics: {exc!r}")
            time.sleep(1.0)

    def load(self, settings: Settings, users: Users, rate: float) -> None:
        """Page views of random users at `rate`/s with their own averages, and the probe's."""
        from producers.client import SmartStreamProducer

        producer = SmartStreamProducer(settings, linger_ms=5)
        rng = np.random.default_rng(11)
        start, sent, visits, next_probe = time.monotonic(), 0, 1, time.monotonic()
        try:
            while not self.stop.is_set():
                due = int((time.monotonic() - start) * rate)
                for i in rng.integers(0, len(users.X), max(0, due - sent)):
                    seconds = float(users.X[i, 0])
                    producer.page_time(str(i + 1), "C", seconds)
                sent = max(sent, due)
                if time.monotonic() >= next_probe:
                    producer.page_time(PROBE, "A", 10.0).get(timeout=10)
                    visits += 1
                    self.probe_times.append(time.monotonic())
                    self.probe_delays.append(self._visible(visits))
                    next_probe = time.monotonic() + 0.5
                time.sleep(0.01)
        finally:
            producer.close()

    def _visible(self, visits: int) -> float:
        """Seconds from now until GET /users/probe shows `visits` page views."""
        sent = time.monotonic()
        while time.monotonic() - sent < 120:
            try:
                user = get(f"http://127.0.0.1:{self.port}/users/{PROBE}")
                if user.get("visits_pages", 0) >= visits:
                    return time.monotonic() - sent
            except OSError:
                pass
            time.sleep(0.01)
        return float("inf")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (load-independent, unlike durations)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def helper_pids(pid: int) -> list[int]:
    tree = process_tree(pid)
    return [p for p, cmdline in tree.items() if p != pid and _is_helper(cmdline)]


def _is_helper(cmdline: bytes) -> bool:
    return b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline


def read_assignments(settings: Settings, version: int, expected: int, pipe: Connection) -> None:
    """Read `cluster-assignments` from its end until `expected` users have an assignment with
    `version`; send "ready" once positioned, then (when, {user: cluster}). In a process of its
    own, so that decoding a million records does not compete for the GIL with the bench's
    threads that produce the page views and time the probe."""
    asyncio.run(_read_assignments(settings, version, expected, pipe))


async def _read_assignments(
    settings: Settings, version: int, expected: int, pipe: Connection
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = settings.topic("cluster-assignments")
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **settings.aiokafka_config())
    await consumer.start()
    labels: dict[str, str] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        pipe.send("ready")
        while len(labels) < expected and not pipe.poll():
            batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for records in batches.values():
                for r in records:
                    value = orjson.loads(r.value) if r.value else None
                    if value and value["model_version"] == version:
                        labels[value["user_id"]] = value["cluster"]
        pipe.send((time.monotonic() if len(labels) >= expected else None, labels))
    finally:
        await consumer.stop()


class Assignments:
    """The reader process of :func:`read_assignments`."""

    def __init__(self, settings: Settings, version: int, expected: int) -> None:
        self.pipe, child = multiprocessing.Pipe()
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=read_assignments, args=(settings, version, expected, child)
        )
        self.process.start()
        assert self.pipe.poll(60) and self.pipe.recv() == "ready"
        self.done_at: float | None = None
        self.labels: dict[str, str] = {}

    def finished(self) -> bool:
        if self.pipe.poll():
            self.done_at, self.labels = self.pipe.recv()
            return True
        return False

    def close(self) -> None:
        if self.process.is_alive() and not self.labels:
            self.pipe.send("stop")
            if self.pipe.poll(60):
                self.done_at, self.labels = self.pipe.recv()
        self.process.join(60)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            cwd=env["SMARTSTREAM_DATA_DIR"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_processed(port: int, proc: subprocess.Popen, events: int, log: Path) -> float:
    """Wait until the worker processed `events`; its events/s from first to last."""
    first, deadline = None, time.monotonic() + 3600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}: {tail(log)}")
        try:
            total = processed(metrics(port))
        except OSError:
            total = 0.0
        if total and first is None:
            first = (time.monotonic(), total)
        if total >= events:
            assert first is not None
            return (events - first[1]) / max(time.monotonic() - first[0], 1e-9)
        time.sleep(0.2)
    raise RuntimeError(f"the worker did not process {events} events: {tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def changelog_mb(kafka_data: Path, settings: Settings) -> float:
    """Size of the users changelog's partitions in the broker's log directory."""
    name = f"{settings.app_id}-users-changelog-"
    return sum(du_mb(d) for d in kafka_data.glob(f"{name}*"))


def run_system(n: int, rate: float, kafka_data: Path | None) -> dict[str, Any]:
    prefix = f"sys{uuid.uuid4().hex[:6]}-"
    settings = Settings.from_env({**os.environ, "SMARTSTREAM_TOPIC_PREFIX": prefix})
    ensure_topics(settings)
    users = five_groups(n)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env, port = worker_env(prefix, "rocksdb://", tmp)
            log = LOGS / f"system-{n}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            proc = start_worker(env, log)
            try:
                return measure(settings, users, port, proc, log, rate, Path(tmp), kafka_data)
            finally:
                proc.terminate()
                proc.wait(60)
    finally:
        delete_prefixed_topics(settings)


def measure(
    settings: Settings,
    users: Users,
    port: int,
    proc: subprocess.Popen,
    log: Path,
    rate: float,
    data_dir: Path,
    kafka_data: Path | None,
) -> dict[str, Any]:
    n = len(users.X)
    produced = asyncio.run(produce_users(settings, users))
    print(f"  produced {3 * n:,} events at {produced:,.0f}/s", file=sys.stderr, flush=True)
    ingest = wait_processed(port, proc, 3 * n, log)
    print(f"  ingested at {ingest:,.0f} events/s", file=sys.stderr, flush=True)
    from producers.client import SmartStreamProducer

    producer = SmartStreamProducer(settings)
    producer.page_time(PROBE, "A", 10.0).get(timeout=10)
    producer.flush()
    wait_processed(port, proc, 3 * n + 1, log)
    before_rss = rss_mb(proc.pid)
    version = (get(f"http://127.0.0.1:{port}/clusters")["current"] or {}).get("version", 0) + 1
    reader = Assignments(settings, version, n + 1)
    watch = Watch(port, proc.pid)
    threads = [
        threading.Thread(target=watch.sample_rss),
        threading.Thread(target=watch.sample_lag),
        threading.Thread(target=watch.load, args=(settings, users, rate)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(3)  # the background load runs before the request too
    figures = metrics(port)
    cpu_before = cpu_seconds(proc.pid)
    start = time.monotonic()
    request = {"action": "run", "model": "clustering", "reason": "cli"}
    producer.send("control", "clustering", request)
    producer.flush()
    producer.close()
    try:
        while not reader.finished() and time.monotonic() - start < 1800:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}: {tail(log)}")
            time.sleep(0.1)
        end = time.monotonic()
        after = metrics(port)
        worker_cpu = cpu_seconds(proc.pid) - cpu_before
        trainer_cpu = sum(cpu_seconds(p) for p in helper_pids(proc.pid))
    finally:
        watch.stop.set()
        reader.close()
        for thread in threads:
            thread.join(60)
    if reader.done_at is None:
        raise RuntimeError(f"{len(reader.labels)} of {n + 1} users assigned: {tail(log)}")
    clusters = get(f"http://127.0.0.1:{port}/clusters")
    (count0, late0), (count1, late1) = delays(figures), delays(after)
    labels = [reader.labels[u] for u in users.ids()]
    from sklearn.metrics import adjusted_rand_score

    return {
        "users": n,
        "ingest_events_per_s": ingest,
        "to_all_assigned_s": reader.done_at - start,
        "run_s": clusters["trainer"]["history"][-1]["duration_s"],
        "fit_s": clusters["current"]["duration_s"],
        "worker_cpu_s": worker_cpu,
        "trainer_cpu_s": trainer_cpu,
        "worker_rss_before_mb": before_rss,
        "worker_peak_mb": watch.worker_peak,
        "trainer_peak_mb": watch.helper_peak,
        "tree_extra_mb": watch.tree_peak - before_rss,
        "worst_lag_ms": 1000 * max(watch.lag_gauge, default=float("nan")),
        "probes": count1 - count0,
        "probes_over_50ms": late1 - late0,
        "events_per_s_during": (processed(after) - processed(figures)) / (end - start),
        "probe_delay_max_s": max(watch.probe_delays, default=float("nan")),
        "probe_delay_median_s": statistics.median(watch.probe_delays or [float("nan")]),
        "probe_events": len(watch.probe_delays),
        "slowest_probes": sorted(
            (
                (round(d, 3), round(t - start, 1))
                for t, d in zip(watch.probe_times, watch.probe_delays, strict=True)
            ),
            reverse=True,
        )[:5],
        "ari_vs_groups": adjusted_rand_score(users.truth, labels),
        "clusters": len(clusters["current"]["clusters"]),
        "rocksdb_mb": du_mb(data_dir),
        "changelog_mb": changelog_mb(kafka_data, settings) if kafka_data else None,
        "errors": watch.errors[:5],
    }


def ari_report(n: int, size: int, seed: int) -> None:
    """The trainer's fit on a hash sample vs a fit on every user, over all users."""
    from sklearn.metrics import adjusted_rand_score

    users = five_groups(n)
    keys = [u.encode() for u in users.ids()]
    sample = BottomK(size)
    sample.add(key_hashes(keys, seed), row=np.arange(n))
    rows = np.sort(sample.columns["row"])  # natural id order, as the trainer fits
    t = time.perf_counter()
    sampled = BayesianGaussianMixture().fit(users.X[rows])
    sample_s = time.perf_counter() - t
    t = time.perf_counter()
    full = BayesianGaussianMixture().fit(users.X)
    full_s = time.perf_counter() - t
    by_sample, by_full = sampled.predict(users.X), full.predict(users.X)
    print("| users | fit on | seconds | clusters | ARI vs groups | ARI vs the full fit |")
    print("|---|---|---|---|---|---|")
    for name, model, seconds, labels in (
        (f"{len(rows):,} sampled", sampled, sample_s, by_sample),
        (f"all {n:,}", full, full_s, by_full),
    ):
        print(
            f"| {n:,} | {name} | {seconds:.1f} | {len(model.labels_)} | "
            f"{adjusted_rand_score(users.truth, labels):.4f} | "
            f"{adjusted_rand_score(by_full, labels):.4f} |",
            flush=True,
        )


COLUMNS = (
    ("users", "{:,}"),
    ("ingest_events_per_s", "{:,.0f}"),
    ("to_all_assigned_s", "{:.1f}"),
    ("run_s", "{:.1f}"),
    ("fit_s", "{:.1f}"),
    ("worker_cpu_s", "{:.1f}"),
    ("trainer_cpu_s", "{:.1f}"),
    ("worker_rss_before_mb", "{:,.0f}"),
    ("worker_peak_mb", "{:,.0f}"),
    ("trainer_peak_mb", "{:,.0f}"),
    ("tree_extra_mb", "{:,.0f}"),
    ("worst_lag_ms", "{:.0f}"),
    ("probes_over_50ms", "{:.0f}"),
    ("events_per_s_during", "{:,.0f}"),
    ("probe_delay_max_s", "{:.3f}"),
    ("probe_delay_median_s", "{:.3f}"),
    ("ari_vs_groups", "{:.4f}"),
    ("rocksdb_mb", "{:,.0f}"),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--rate", type=float, default=2000.0, help="page views/s during the run")
    parser.add_argument("--kafka-data", type=Path, help="the broker's log.dirs (topic sizes)")
    parser.add_argument("--ari", type=int, help="compare the sample and full fits on N users")
    args = parser.parse_args()
    base = Settings.from_env()
    if args.ari:
        ari_report(args.ari, base.clustering_sample_size, base.clustering_seed)
        return
    print("| " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    for n in args.users:
        print(f"{n:,} users on {base.kafka_bootstrap}", file=sys.stderr, flush=True)
        result = run_system(n, args.rate, args.kafka_data)
        print("| " + " | ".join(fmt.format(result[name]) for name, fmt in COLUMNS) + " |")
        print(json.dumps(result), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
