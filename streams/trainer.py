"""Model runs off the hot path, shared by clustering and moderation.

* The `control` topic has one partition, so exactly one worker owns it: that worker is the
  trainer. A request starts a run of the named model; requests arriving during a run are coalesced
  into one follow-up run.
* Fits run in one spawned helper process with single-threaded BLAS: the worker's event loop only
  awaits, its heartbeats and streams never stall.
* Every worker follows the compacted `models` topic with its own group-less consumer and hands
  each model document to the loader registered for its key (hot swap).
* Each document is also archived under `NAME@VERSION` on `model-versions`, the history that
  streams.lifecycle shows and rolls back to; a rollback is a job of the model's trainer.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics as t
from streams.adapter.pools import kill_pool
from streams.app import (
    app,
    batch_producer,
    control_topic,
    models_ready,
    models_topic,
    raw_topic,
    settings,
)
from streams.deadletters import letter, send_dead_letter, send_letters
from streams.fitting import init_helper
from streams.monitoring import MODEL_RUN_SECONDS, MODEL_RUNS
from streams.records import Rejected, RollbackRequest, dumps_json, loads_object

log = logging.getLogger(__name__)
Job = Callable[[], Awaitable[None]]


@dataclass
class Trainer:
    """Runs `run(reason)` for one model, one run at a time, coalescing requests; one-off jobs
    (rollbacks) queue behind the run in progress, so versions are numbered in order."""

    model: str
    run: Callable[[str], Awaitable[None]]
    running: bool = False
    pending: bool = False
    runs: int = 0
    failures: int = 0
    last: float | None = None
    last_error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # Erasure requests not yet served by a run (streams.moderation forgets the history then).
    erasures: int = 0
    jobs: deque[tuple[str, Job]] = field(default_factory=deque)

    def request(self, reason: str) -> None:
        if reason == "erasure":  # the run must also forget what the erased user gave it
            self.erasures += 1
        if self.running:
            self.pending = True
        else:
            self.running = True
            app.add_future(self._loop(reason))

    def submit(self, reason: str, job: Job) -> None:
        """Queue a one-off job; it runs after the run in progress, never beside it."""
        self.jobs.append((reason, job))
        if not self.running:
            self.running = True
            app.add_future(self._loop(None))

    async def _loop(self, reason: str | None) -> None:
        try:
            while True:
                if reason is not None:
                    self.pending = False
                    await self._timed(reason, functools.partial(self.run, reason))
                while self.jobs:
                    await self._timed(*self.jobs.popleft())
                if not self.pending:
                    return
                reason = "coalesced"
        finally:
            self.running = False

    async def _timed(self, reason: str, job: Job) -> None:
        start = time.perf_counter()
        try:
            await job()
            self.runs += 1
            MODEL_RUNS.labels(model=self.model, outcome="ok").inc()
        except Exception as exc:  # a failed run leaves the previous version serving
            self.failures += 1
            self.last_error = repr(exc)
            MODEL_RUNS.labels(model=self.model, outcome="error").inc()
            log.exception("%s %s failed; the previous version keeps serving", self.model, reason)
        duration = time.perf_counter() - start
        MODEL_RUN_SECONDS.labels(model=self.model).observe(duration)
        self.last = time.time()
        self.history = [
            *self.history[-19:],
            {"reason": reason, "at": self.last, "duration_s": duration},
        ]

    def state(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "pending": self.pending,
            "runs": self.runs,
            "failures": self.failures,
            "last": self.last,
            "last_error": self.last_error,
            "history": self.history,
            "queued": [reason for reason, _ in self.jobs],
        }


@dataclass(frozen=True)
class ModelKind:
    """What one model provides to be trained off the loop, published, validated, served,
    versioned, rolled back and shown. Its module builds one and registers it: a new kind of
    model touches its own module and that one call (streams.clustering, streams.moderation)."""

    name: str  # its key on `models` (and NAME@VERSION on `model-versions`)
    state: str  # the document's object that holds the fitted state, with its own version
    run: Callable[[str], Awaitable[None]]  # a run: fit off the loop, publish, serve
    load: Callable[[dict[str, Any]], bool]  # validate and hot-swap a document; raises if wrong
    version: Callable[[], int]  # the version serving on this worker (0: none yet)
    fresh: Callable[[], Any]  # a new serving object: its .load validates without serving
    serve: Callable[[dict[str, Any]], Awaitable[None]]  # serve a published version
    figures: Callable[[dict[str, Any]], dict[str, Any]]  # a version's figures (GET /models)
    drift: Callable[[], dict[str, Any]] | None = None  # None: the labels' score-window drift
    # Its own Prometheus gauge families, collected at each scrape (streams.lifecycle); a kind
    # without its own drift has the score-window gauges instead.
    gauges: Callable[[], Iterable[Any]] | None = None
    # A rollback's last word on the renumbered document, given the serving object it was
    # validated on (clustering: the label-change share against the serving version).
    before_rollback: Callable[[dict[str, Any], Any], None] | None = None
    # The weighted count at which the counters (streams.counters) request a run; 0: never.
    threshold: Callable[[], int] = lambda: 0


kinds: dict[str, ModelKind] = {}
trainers: dict[str, Trainer] = {}
# Set by streams.lifecycle, which keeps the model history: rollback(name, version, control
# record) republishes that version of any kind (None: rollback requests are refused),
# published(name) gives the version numbers of `name` in the history, once `history_read` is set.
Rollback = Callable[[str, int, Any], Awaitable[None]]
_rollback: Rollback | None = None
_history_read: asyncio.Event | None = None


def _published(name: str) -> Iterable[int]:
    return ()


def set_lifecycle(
    rollback: Rollback, published: Callable[[str], Iterable[int]], history_read: asyncio.Event
) -> None:
    global _rollback, _published, _history_read
    _rollback, _published, _history_read = rollback, published, history_read


async def next_version(name: str) -> int:
    """The version number of `name`'s next document, for runs and rollbacks alike (the one
    place versions are given): above the serving one and every one in the history (read to
    its end first), so no number is given twice, not even one a worker refused to serve."""
    if _history_read is not None:
        await _history_read.wait()
    return max([kinds[name].version(), *_published(name)]) + 1


def register(kind: ModelKind) -> Trainer:
    kinds[kind.name] = kind
    trainers[kind.name] = Trainer(kind.name, kind.run)
    for outcome in ("ok", "error"):  # series from 0, so a first failure is an increase
        MODEL_RUNS.labels(model=kind.name, outcome=outcome)
    return trainers[kind.name]


@app.agent(control_topic)
async def control_agent(stream: Any) -> None:
    async for event in stream.events():
        try:
            request = t.SPECS[t.CONTROL].decode(event.message.value, settings.max_payload_bytes)
            trainer = trainers.get(request.model)
            if trainer is None:
                raise Rejected(f"unknown model {request.model[:40]!r}")
            if isinstance(request, RollbackRequest) and _rollback is None:
                raise Rejected(f"model {request.model[:40]!r} has no rollback")
        except Rejected as exc:
            await send_dead_letter(event.message, f"bad control request: {exc}")
            continue
        if isinstance(request, RollbackRequest):
            job = functools.partial(_rollback, request.model, request.version, event.message)
            trainer.submit(f"rollback to v{request.version}", job)
        else:
            trainer.request(request.reason)


versions_topic = raw_topic(t.MODEL_VERSIONS)
# Versions kept per model on `model-versions`: publishing version V deletes V - HISTORY_VERSIONS
# (a tombstone), so the history's disk and memory stay bounded.
HISTORY_VERSIONS = 50


async def publish_model(document: dict[str, Any]) -> None:
    """Produce a model document under `NAME@VERSION` on `model-versions` (the history), then on
    `models`, and wait until the broker acknowledged both: only then may the trainer serve it
    and send commands that name its version. Archived first, so whatever version served can be
    rolled back to."""
    name, version = document["name"], document["version"]
    for topic, key, doc in (
        (versions_topic, f"{name}@{version}", archived(document)),
        (models_topic, name, document),
    ):
        value = dumps_json(doc, strict=True)
        await (await topic.send(key=key.encode(), value=value, force=True))
    if version > HISTORY_VERSIONS:
        expired = f"{name}@{version - HISTORY_VERSIONS}".encode()
        await batch_producer.send(versions_topic.get_topic_name(), 0, [(expired, None)])


def archived(document: dict[str, Any]) -> dict[str, Any]:
    """A document as the history keeps it: without the dashboard's sample, which names users
    (it stays on `models` only, where the next version replaces it, so an erased user does not
    live on in old versions)."""
    return {**document, "sample": None} if document.get("sample") else document


async def forget_history(name: str, version: int) -> None:
    """Delete (tombstone) the archived versions of `name` before `version`: after an erasure
    they hold what the erased user wrote, and no rollback may bring it back."""
    old = range(max(1, version - HISTORY_VERSIONS), version)
    tombstones = [(f"{name}@{v}".encode(), None) for v in old]
    await batch_producer.send(versions_topic.get_topic_name(), 0, tombstones)
    log.warning("%s: versions before v%d deleted from the history (erasure)", name, version)


_pool: ProcessPoolExecutor | None = None


async def in_helper_process(
    fn: Callable[..., Any], *args: Any, timeout: float | None = None
) -> Any:
    """Run `fn(*args)` in the spawned helper process (arguments and result must pickle: they
    are pickled by our own processes, never read from Kafka as a pickle). After `timeout`
    seconds the helper is killed and TimeoutError raised: a run that never ends would otherwise
    hold the trainer, and the next requests with it, forever."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_helper,
        )
    pool = _pool
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
    except BrokenProcessPool:
        _pool = None  # the helper died (killed, out of memory): the next run starts a new one
        raise
    except TimeoutError:
        _pool = None
        kill_pool(pool)
        name = getattr(fn, "__name__", "the job")
        raise TimeoutError(f"{name} ran longer than {timeout:g} s: its helper was killed") from None


def group_less_consumer() -> AIOKafkaConsumer:
    """A consumer outside any group: it reads whole partitions it assigns itself."""
    return AIOKafkaConsumer(
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        **settings.aiokafka_config(),
    )


# (topic, partition, offset) of the records this process dead-lettered already: the trainer and
# the model follower read compacted topics again and again, a refused record is reported once.
_refused: set[tuple[str, int, int]] = set()


async def refuse(records: list[tuple[Any, str]]) -> None:
    """Dead-letter records (with their reasons) read from a compacted topic, once per process."""
    fresh = [(r, e) for r, e in records if (r.topic, r.partition, r.offset) not in _refused]
    if fresh:
        await send_letters([letter(r, e) for r, e in fresh])
        _refused.update((r.topic, r.partition, r.offset) for r, _ in fresh)


async def read_latest(
    topic: str, partitions: int, parse: Callable[[dict[str, Any]], Any] | None = None
) -> dict[bytes, Any]:
    """The latest valid value of every key of a (compacted) topic, read from the start to the
    end offsets of all its partitions, each JSON object passed through `parse`; deleted keys
    (tombstones) are left out, refused records dead-lettered (and their keys left out)."""
    consumer = group_less_consumer()
    await consumer.start()
    refused: list[tuple[Any, str]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        latest: dict[bytes, Any] = {}
        # Positions, not record offsets, tell the end: compaction and transaction markers leave
        # offsets no record carries.
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for records in batches.values():
                for r in records:
                    latest[r.key] = _parsed(r, parse, refused)
        return {k: v for k, v in latest.items() if v is not None}
    finally:
        await consumer.stop()
        await refuse(refused)


def _parsed(record: Any, parse: Callable[[dict[str, Any]], Any] | None, refused: list) -> Any:
    """`parse` of the record's JSON object; None for a tombstone or a refused record."""
    if record.value is None:
        return None
    try:
        obj = loads_object(record.value, t.MODEL_MAX_BYTES)
        return obj if parse is None else parse(obj)
    except Rejected as exc:
        refused.append((record, str(exc)))
        return None


async def follow_compacted(
    topic: str,
    ready: asyncio.Event,
    apply: Callable[[Any, list[tuple[Any, str]]], Any],
    after: Callable[[list[Any]], None] | None = None,
) -> None:
    """Every worker: `apply(record, refused)` each record of a single-partition compacted topic,
    from its start and then as it grows, forever; `ready` is set once the records up to the end
    at start are applied; `after` gets each fetch's results; refused records are dead-lettered
    (once per process). The followers of `models`, `model-versions` and `moderation-queue`."""
    tp = TopicPartition(topic, 0)
    consumer = group_less_consumer()
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while True:
            if not ready.is_set() and await consumer.position(tp) >= end:
                ready.set()
            batches = await consumer.getmany(timeout_ms=1000)
            refused: list[tuple[Any, str]] = []
            results = [apply(r, refused) for records in batches.values() for r in records]
            await refuse(refused)
            if after is not None:
                after(results)
    finally:
        await consumer.stop()


@app.task
async def follow_models() -> None:
    """Every worker: hot-swap the latest version of each model from the `models` topic."""
    await follow_compacted(settings.topic(t.MODELS), models_ready, load_model, settle_after_load)


def settle_after_load(loaded: list[bool]) -> None:
    if any(loaded):
        settle_heap()


def load_model(record: Any, refused: list[tuple[Any, str]]) -> bool:
    """Hand one `models` record to its loader; True when a model was loaded. A document that
    fails validation (or its probe prediction) is refused: the previous version keeps serving.
    Whatever a document holds, no exception leaves here: workers re-read `models` from the
    start, so one that escaped would crash every worker again at every restart."""
    key = (record.key or b"").decode("utf-8", errors="replace")
    kind = kinds.get(key)
    if record.value is None:
        return False
    if kind is None:
        refused.append((record, f"unknown model {key[:40]!r}"))
        return False
    try:
        document = loads_object(record.value, t.MODEL_MAX_BYTES)
        if document.get("name") != key:
            raise Rejected(f"document name {str(document.get('name'))[:40]!r} is not its key")
        return bool(kind.load(document))
    except Exception as exc:  # the boundary: any failure refuses the document
        log.error("refused the model document at offset %d: %r", record.offset, exc)
        refused.append((record, f"invalid model document: {type(exc).__name__}: {exc}"[:500]))
        return False


def settle_heap() -> None:
    """Collect once, then freeze what is alive (the new models included) out of the cyclic
    collector's sight. Otherwise every full collection walks the models' vocabularies again:
    50-120 ms pauses of the event loop, measured as the comment labels' p99 latency."""
    gc.unfreeze()  # the replaced models become collectable
    gc.collect()
    gc.freeze()
