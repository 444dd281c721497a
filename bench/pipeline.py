"""End-to-end throughput of the metrics pipeline vs a raw aiokafka consumer, on one broker.

    SMARTSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092 python bench/pipeline.py --events 200000 --memory

1. Produces N page-time events (U users, all page types) to a fresh topic prefix.
2. Raw baseline: an aiokafka consumer reads them all and decodes the JSON (events/s).
3. SmartStream: a worker starts on the backlog; events/s from its first to its last processed
   event (the counter total reaching N), and the worker's peak RSS.
4. Naive Faust agent (--naive, bench/naive_app.py): group_by + one table write per event; and
   the ceiling of Faust's per-message path: an agent that does nothing with its events.
5. Memory per 100k users (--memory): RSS growth of a worker holding U users, memory vs rocksdb.
6. Peers (--peers, needs `pip install '.[bench]'`): a raw librdkafka consumer (confluent-kafka)
   + orjson, and the same job written with Quix Streams (bench/quix_job.py) with its memory and
   its RocksDB store, beside SmartStream with each store (Redis mirror on when
   SMARTSTREAM_REDIS_URL is set; Quix writes no Redis), best of --rounds, printing the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from producers.client import SmartStreamProducer  # noqa: E402
from producers.demo import free_port  # noqa: E402
from streams.records import PAGE_TYPES  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import delete_prefixed_topics, ensure_topics  # noqa: E402


def produce(settings: Settings, events: int, users: int, seed: int = 1) -> float:
    producer = SmartStreamProducer(settings, linger_ms=20, batch_size=256 * 1024)
    rng = random.Random(seed)
    start = time.perf_counter()
    for _ in range(events):
        uid = str(rng.randrange(users))
        value = {"user_id": uid, "page_type": rng.choice(PAGE_TYPES), "seconds": rng.uniform(1, 60)}
        producer.send("page-times", uid, json.dumps(value).encode())
    producer.flush()
    producer.close()
    return events / (time.perf_counter() - start)


async def raw_consumer_rate(settings: Settings, events: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic("page-times"),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen, start = 0, None
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for records in batches.values():
                if start is None:
                    start = time.perf_counter()
                for r in records:
                    json.loads(r.value)
                seen += len(records)
    finally:
        await consumer.stop()
    return events / (time.perf_counter() - start)  # type: ignore[operator]


def librdkafka_consumer_rate(settings: Settings, events: int) -> float:
    """The raw librdkafka floor: confluent-kafka's batch consume + orjson, from offset 0."""
    import orjson
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": ",".join(settings.bootstrap_servers),
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic("page-times")])
    seen, start = 0, None
    try:
        while seen < events:
            for message in consumer.consume(num_messages=10000, timeout=1.0):
                if message.error():
                    continue
                if start is None:
                    start = time.perf_counter()
                orjson.loads(message.value())
                seen += 1
    finally:
        consumer.close()
    return events / (time.perf_counter() - start)  # type: ignore[operator]


def quix_rate(settings: Settings, events: int, store: str) -> float:
    """The Quix Streams job (bench/quix_job.py) on the backlog with `store` (memory|rocksdb)."""
    group = f"{settings.topic_prefix}quix-{store}-{uuid.uuid4().hex[:4]}"
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, str(ROOT / "bench" / "quix_job.py")]
        command += [",".join(settings.bootstrap_servers), settings.topic("page-times")]
        command += [str(events), store, tmp, group]
        try:
            out = subprocess.run(
                command, capture_output=True, text=True, timeout=900, check=True
            ).stdout
        finally:
            delete_prefixed_topics(replace(settings, topic_prefix=f"changelog__{group}"))
    return float(json.loads(out.strip().splitlines()[-1])["events_per_s"])


def smartstream_rate(events: int, users: int, store: str) -> float:
    """A worker on the same backlog (same seed) in a fresh prefix: the prefix names the
    worker's consumer group and changelogs, so each run starts from offset 0 with no state."""
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    settings = Settings.from_env({**os.environ, "SMARTSTREAM_TOPIC_PREFIX": prefix})
    ensure_topics(settings)
    try:
        produce(settings, events, users)
        with tempfile.TemporaryDirectory() as tmp:
            env, port = worker_env(prefix, store, tmp)
            return run_worker(env, port, events)["events_per_s"]
    finally:
        delete_prefixed_topics(settings)


def run_peers(settings: Settings, events: int, users: int, rounds: int) -> None:
    """Every consumer on the same backlog, best of `rounds`, with the ratios the issue asks."""
    best: dict[str, float] = defaultdict(float)
    for _ in range(rounds):
        best["raw aiokafka + json.loads"] = max(
            best["raw aiokafka + json.loads"], asyncio.run(raw_consumer_rate(settings, events))
        )
        best["raw librdkafka + orjson"] = max(
            best["raw librdkafka + orjson"], librdkafka_consumer_rate(settings, events)
        )
        for store in ("memory", "rocksdb"):
            name = f"Quix Streams {store}"
            best[name] = max(best[name], quix_rate(settings, events, store))
            rate = smartstream_rate(events, users, f"{store}://")
            best[f"SmartStream {store}"] = max(best[f"SmartStream {store}"], rate)
        print("  ".join(f"{k}: {v:,.0f}" for k, v in best.items()), flush=True)
    mirror = "on" if os.environ.get("SMARTSTREAM_REDIS_URL") else "off"
    raw = best["raw aiokafka + json.loads"]
    print(f"best of {rounds} (SmartStream Redis mirror {mirror}; Quix writes no Redis):")
    for name, rate in best.items():
        print(f"  {name:28} {rate:>9,.0f} events/s  {rate / raw:.3f} of raw aiokafka")
    for store in ("memory", "rocksdb"):
        ratio = best[f"SmartStream {store}"] / best[f"Quix Streams {store}"]
        print(f"  SmartStream / Quix Streams, {store} store: {ratio:.2f}x", flush=True)


def processed(port: int) -> int:
    """Events the users agent has processed (its Prometheus counter, updated every batch)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("smartstream_events_total{") and "page-times" in line
        )
    )


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def run_worker(env: dict, port: int, events: int, command: list[str] | None = None) -> dict:
    """Start a worker on the backlog and time it from its first to its last processed event
    (read from its /metrics, which the naive app imitates)."""
    proc = subprocess.Popen(
        command or [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        cwd=env["SMARTSTREAM_DATA_DIR"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = None
    peak = 0.0
    try:
        deadline = time.monotonic() + 900
        total = 0
        while time.monotonic() < deadline:
            try:
                total = processed(port)
            except (OSError, KeyError, ValueError):
                total = 0
            now = time.perf_counter()
            if total and first is None:
                first = (now, total)
            peak = max(peak, rss_mb(proc.pid))
            if total >= events:
                break
            time.sleep(0.05)
        end = time.perf_counter()
        assert total >= events, f"worker processed {total} of {events}"
        rate = (events - first[1]) / max(end - first[0], 1e-9)  # type: ignore[index]
        return {"events_per_s": rate, "peak_rss_mb": peak, "rss_mb": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(30)


def worker_env(prefix: str, store: str, tmp: str, **extra: str) -> tuple[dict, int]:
    port = free_port()
    env = {
        **os.environ,
        "SMARTSTREAM_TOPIC_PREFIX": prefix,
        "SMARTSTREAM_WEB_PORT": str(port),
        "SMARTSTREAM_STORE": store,
        "SMARTSTREAM_DATA_DIR": tmp,
        "SMARTSTREAM_LOG_LEVEL": "warn",
        "SMARTSTREAM_REDIS_URL": os.environ.get("SMARTSTREAM_REDIS_URL", ""),
        "SMARTSTREAM_CLUSTERING_THRESHOLD": "0",
        **extra,
    }
    return env, port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--memory", action="store_true", help="also measure RSS per 100k users")
    parser.add_argument("--naive", action="store_true", help="also run the naive Faust agent")
    parser.add_argument(
        "--peers", action="store_true", help="raw librdkafka and Quix Streams beside SmartStream"
    )
    parser.add_argument("--rounds", type=int, default=2, help="best of (with --peers)")
    args = parser.parse_args()
    base = Settings.from_env()
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    settings = Settings.from_env({**os.environ, "SMARTSTREAM_TOPIC_PREFIX": prefix})
    ensure_topics(settings)
    print(
        f"broker {base.kafka_bootstrap}; {args.events} events, {args.users} users, "
        f"{settings.partitions} partitions",
        flush=True,
    )
    try:
        rate = produce(settings, args.events, args.users)
        print(f"produced at {rate:,.0f} events/s (kafka-python)", flush=True)
        if args.peers:
            run_peers(settings, args.events, args.users, args.rounds)
            return
        raw = asyncio.run(raw_consumer_rate(settings, args.events))
        print(f"raw aiokafka consumer + json.loads: {raw:,.0f} events/s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            env, port = worker_env(prefix, args.store, tmp)
            res = run_worker(env, port, args.events)
        ours = res["events_per_s"]
        print(
            f"SmartStream worker ({args.store}): {ours:,.0f} events/s, "
            f"ratio to raw {ours / raw:.3f}, peak RSS {res['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        if args.naive:
            rate = run_naive(prefix, args.events)
            print(
                f"naive Faust agent (group_by, one table write per event): {rate:,.0f} events/s, "
                f"ratio to raw {rate / raw:.3f}; SmartStream / naive = {ours / rate:.1f}",
                flush=True,
            )
            rate = run_naive(prefix, args.events, NAIVE_EMPTY="1")
            print(
                f"Faust agent doing nothing (take_events, raw bytes): {rate:,.0f} events/s, "
                f"ratio to raw {rate / raw:.3f}",
                flush=True,
            )
        if args.memory:
            for store in ("memory://", "rocksdb://"):
                empty = rss_holding(store, 1)
                full = rss_holding(store, args.users)
                per_100k = (full - empty) * 100_000 / args.users
                print(
                    f"{store}: RSS {empty:.0f} MB with 1 user, {full:.0f} MB with {args.users:,}: "
                    f"{per_100k:.0f} MB per 100k users",
                    flush=True,
                )
    finally:
        delete_prefixed_topics(settings)


def run_naive(prefix: str, events: int, **extra: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env, port = worker_env(prefix, "memory://", tmp, **extra)
        naive = [sys.executable, str(ROOT / "bench" / "naive_app.py"), "worker"]
        naive += ["-l", "info", "--web-port", str(port)]
        return run_worker(env, port, events, naive)["events_per_s"]


def rss_holding(store: str, users: int) -> float:
    """RSS of a worker once it holds `users` users (one page view each)."""
    prefix = f"mem{uuid.uuid4().hex[:6]}-"
    settings = Settings.from_env({**os.environ, "SMARTSTREAM_TOPIC_PREFIX": prefix})
    ensure_topics(settings)
    producer = SmartStreamProducer(settings, linger_ms=20)
    for uid in range(users):
        value = {"user_id": str(uid), "page_type": "A", "seconds": 10.0}
        producer.send("page-times", str(uid), json.dumps(value).encode())
    producer.flush()
    producer.close()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env, port = worker_env(prefix, store, tmp)
            return run_worker(env, port, users)["rss_mb"]
    finally:
        delete_prefixed_topics(settings)


if __name__ == "__main__":
    main()
