"""Spam filtering: quality on the YouTube Spam Collection, training + CV time, and the worker's
comment-to-label latency at a sustained rate.

    python bench/moderation.py --youtube PATH            # quality and training time
    SMARTSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092 python bench/moderation.py --youtube PATH \\
        --latency --rate 500 --seconds 30                # plus latency through a real worker

PATH is the UCI zip, a folder of its CSVs or one CSV. Quality: stratified 10-fold (shuffled,
vectoriser inside the folds) accuracy, F1 and average precision of the example preset and of the
best settings, and leave-one-video-out accuracy; the published anchor (TF-IDF + LinearSVC,
stratified 10-fold) is accuracy 95.3 %, F1 95.3 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.corpora import load_youtube
from models.spam import PRESETS, SpamFilter


def quality(texts: list[str], labels: np.ndarray, sources: list[str]) -> None:
    header = "| settings | accuracy | F1 | average precision | leave-one-video-out accuracy |"
    print(header + " train+CV s |")
    print("|---|---|---|---|---|---|")
    for name in ("example", "best"):
        config = PRESETS[name]
        splitter = StratifiedKFold(10, shuffle=True, random_state=0)
        acc, f1, ap = [], [], []
        for train, test in splitter.split(texts, labels):
            model = SpamFilter(replace(config, cv_folds=0)).fit(
                [texts[i] for i in train], labels[train]
            )
            pred = model.predict([texts[i] for i in test])
            score = model.decision_function([texts[i] for i in test])
            acc.append(accuracy_score(labels[test], pred))
            f1.append(f1_score(labels[test], pred))
            ap.append(average_precision_score(labels[test], score))
        lovo = []
        for video in sorted(set(sources)):
            train = [i for i, s in enumerate(sources) if s != video]
            test = [i for i, s in enumerate(sources) if s == video]
            model = SpamFilter(replace(config, cv_folds=0)).fit(
                [texts[i] for i in train], labels[train]
            )
            lovo.append(accuracy_score(labels[test], model.predict([texts[i] for i in test])))
        t = time.perf_counter()
        SpamFilter(config).fit(texts, labels)
        seconds = time.perf_counter() - t
        print(
            f"| {name} | {np.mean(acc):.3f} ± {2 * np.std(acc):.3f} | {np.mean(f1):.3f} | "
            f"{np.mean(ap):.3f} | {np.mean(lovo):.3f} (min {min(lovo):.3f}) | {seconds:.2f} |",
            flush=True,
        )
    print("| published anchor (TF-IDF + LinearSVC) | 0.953 | 0.953 | - | - | - |")


async def generate(
    settings: Any, texts: list[str], rate: float, seconds: float, ids: str = "b"
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Produce comments at `rate`/s while reading `comment-labels` live. Returns each comment's
    send time and its label's (decision ts, receive time).

    aiokafka on one event loop: kafka-python's sender thread took a third of a core at 500/s,
    and this load generator shares the machine's 2 cores with the broker and the worker."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from streams.records import Comment
    from streams.topics import COMMENTS, SPECS

    labels_topic = settings.topic("comment-labels")
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **settings.aiokafka_config())
    producer = AIOKafkaProducer(linger_ms=0, acks="all", **settings.aiokafka_config())
    await consumer.start()
    await producer.start()
    # From the labels' end as this run starts (resolved before the first comment is sent, so no
    # label of the run is missed): reading the earlier runs' labels again made every run slower
    # than the one before (run 3 of a series re-read 45,000 labels while it measured).
    partitions = [
        TopicPartition(labels_topic, p) for p in await producer.partitions_for(labels_topic)
    ]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    sent: dict[str, float] = {}
    labelled: dict[str, tuple[float, float]] = {}
    n = int(rate * seconds)
    try:

        async def read_labels() -> None:
            async for msg in consumer:
                key = msg.key.decode()
                if key in sent and key not in labelled:
                    labelled[key] = (json.loads(msg.value)["ts"], time.time())
                    if len(labelled) == n:
                        return

        reader = asyncio.ensure_future(read_labels())
        # Metadata first: the generator's own start-up is not the worker's latency.
        await producer.partitions_for(settings.topic("comments"))
        loop = asyncio.get_running_loop()
        start = loop.time()
        futures = []
        gc.disable()  # this process's own collections (~100 ms) would count as latency
        for i in range(n):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            cid = f"{ids}{i}"
            comment = Comment(comment_id=cid, text=texts[i % len(texts)], ts=time.time())
            value = SPECS[COMMENTS].encode(comment)
            sent[cid] = time.time()
            futures.append(await producer.send(settings.topic("comments"), value, cid.encode()))
        await asyncio.gather(*futures)
        with contextlib.suppress(TimeoutError):  # the count of labels read is reported
            await asyncio.wait_for(reader, 60)
    finally:
        gc.enable()
        await producer.stop()
        await consumer.stop()
    return sent, labelled


def report(name: str, rate: float, seconds: float, sent: dict, labelled: dict) -> None:
    decision = np.array([ts - sent[k] for k, (ts, _) in labelled.items()]) * 1000
    end_to_end = np.array([got - sent[k] for k, (_, got) in labelled.items()]) * 1000
    print(
        f"{name} at {rate:.0f} comments/s for {seconds:.0f} s: "
        f"{len(labelled)} of {len(sent)} labelled",
        flush=True,
    )
    for what, lat in (("decision (label ts)", decision), ("end to end (label read)", end_to_end)):
        print(
            f"  {what}: p50 {np.percentile(lat, 50):.1f} ms, "
            f"p99 {np.percentile(lat, 99):.1f} ms, max {lat.max():.1f} ms",
            flush=True,
        )
    # When the slow ones were: the end-to-end p99 of each 5 s of the run.
    at = np.array([sent[k] for k in labelled])
    window = ((at - at.min()) // 5).astype(int)
    windows = [end_to_end[window == w] for w in range(window.max() + 1)]
    shown = (f"{np.percentile(x, 99):.0f}" if x.size else "-" for x in windows)  # "-": none sent
    print("  end-to-end p99 per 5 s: " + " ".join(shown), flush=True)


def wait_for_filter(port: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/spam-filters/comments") as r:
                if json.load(r)["version"] >= 1:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the worker's filter was not trained within 300 s")


def series(name: str, settings: Any, texts: list[str], args: argparse.Namespace) -> None:
    """A warm-up run, then `runs` measured runs, each with fresh comment ids."""
    for run in range(args.runs + 1):
        seconds = args.warmup if run == 0 else args.seconds
        sent, labelled = asyncio.run(
            generate(settings, texts, args.rate, seconds, f"{name[:3]}{run}-")
        )
        report(
            f"{name} {'warm-up' if run == 0 else f'run {run}'}", args.rate, seconds, sent, labelled
        )


def latency(path: str, args: argparse.Namespace) -> None:
    """Comments produced at `rate`/s into a worker with a pretrained filter: the decision
    latency (the label's ts minus the send time) and the end-to-end latency (the label read back
    from `comment-labels` by a live consumer, minus the send time); a warm-up run, then `runs`
    runs. With --raw, the same runs against a raw aiokafka consume-label-produce loop with the
    same model on the same broker (the worker stopped), the floor to compare with."""
    from streams.settings import Settings
    from streams.topics import delete_prefixed_topics, ensure_topics

    prefix = f"modbench{uuid.uuid4().hex[:6]}-"
    env = {
        **os.environ,
        "SMARTSTREAM_TOPIC_PREFIX": prefix,
        "SMARTSTREAM_LOG_LEVEL": "warn",
        "SMARTSTREAM_WEB_PORT": "6099",
        "SMARTSTREAM_MODERATION_REVIEW_THRESHOLD": "0",
    }
    settings = Settings.from_env(env)
    ensure_topics(settings)
    tmp = tempfile.mkdtemp()
    env["SMARTSTREAM_DATA_DIR"] = tmp
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    raw = None
    try:
        subprocess.run(
            [sys.executable, "-m", "streams.cli", "pretrain", "--filter", "comments", path],
            env=env,
            check=True,
            capture_output=True,
        )
        wait_for_filter(6099)
        texts = [item.text for item in load_youtube(path)]
        preset = settings.spam_filter_presets["comments"]
        series(f"SmartStream worker ({preset} filter)", settings, texts, args)
        if args.raw:
            worker.terminate()
            worker.wait(30)
            raw = subprocess.Popen([sys.executable, __file__, "--raw-loop"], env=env)
            time.sleep(3)  # the raw loop's start-up (its model read), not measured
            series(f"raw aiokafka loop ({preset} filter)", settings, texts, args)
    finally:
        for proc in (worker, raw):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        delete_prefixed_topics(settings)


async def raw_loop() -> None:
    """The floor: consume `comments` from their end, label each fetch with one vectorised call
    of the same published model, produce the labels (acks=all), nothing else."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from streams.records import unstamp
    from streams.settings import Settings

    settings = Settings.from_env()
    reader = AIOKafkaConsumer(enable_auto_commit=False, **settings.aiokafka_config())
    await reader.start()
    models = TopicPartition(settings.topic("models"), 0)
    reader.assign([models])
    await reader.seek_to_beginning(models)
    end = (await reader.end_offsets([models]))[models]
    document = None
    while await reader.position(models) < end:
        for records in (await reader.getmany(timeout_ms=1000)).values():
            for r in records:
                if r.key == b"spam:comments" and r.value:
                    document = json.loads(r.value)
    state, _ = unstamp(document["model"], "model", document["version"], name="comments")
    model = SpamFilter.from_dict(state)
    comments = settings.topic("comments")
    tps = [TopicPartition(comments, p) for p in range(settings.partitions)]
    reader.assign(tps)
    await reader.seek_to_end(*tps)
    producer = AIOKafkaProducer(linger_ms=0, acks="all", **settings.aiokafka_config())
    await producer.start()
    labels = settings.topic("comment-labels")
    while True:
        for records in (await reader.getmany(timeout_ms=100)).values():
            values = [json.loads(r.value) for r in records]
            is_spam, scores = model.predict_with_scores([v["text"] for v in values])
            now = time.time()
            sends = [
                await producer.send(
                    labels,
                    json.dumps(
                        {
                            "comment_id": v["comment_id"],
                            "is_spam": bool(spam),
                            "score": float(score),
                            "ts": now,
                        }
                    ).encode(),
                    r.key,
                )
                for r, v, spam, score in zip(records, values, is_spam, scores, strict=True)
            ]
            await asyncio.gather(*sends)


def main() -> None:
    """Quality and training time; with --latency also the worker's comment-to-label latency."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--youtube", required=True)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--runs", type=int, default=3, help="measured runs after the warm-up")
    parser.add_argument("--warmup", type=float, default=30, help="seconds of the warm-up run")
    parser.add_argument("--raw", action="store_true", help="also the raw aiokafka loop")
    parser.add_argument("--raw-loop", action="store_true", help=argparse.SUPPRESS)
    if "--raw-loop" in sys.argv:
        asyncio.run(raw_loop())
        return
    args = parser.parse_args()
    items = load_youtube(args.youtube)
    texts = [i.text for i in items]
    labels = np.array([i.is_spam for i in items], dtype=int)
    print(f"{len(items)} comments, {labels.sum()} spam, {len(set(i.source for i in items))} videos")
    if not args.skip_quality:
        quality(texts, labels, [i.source for i in items])
    if args.latency:
        latency(args.youtube, args)


if __name__ == "__main__":
    main()
