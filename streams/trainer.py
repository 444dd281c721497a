"""Model runs off the hot path, shared by clustering and moderation.

* The `control` topic has one partition, so exactly one worker owns it: that worker is the
  trainer. A request starts a run of the named model; requests arriving during a run are coalesced
  into one follow-up run.
* Fits run in one spawned helper process with single-threaded BLAS: the worker's event loop only
  awaits, its heartbeats and streams never stall.
* Every worker follows the compacted `models` topic with its own group-less consumer and hands
  each model document to the loader registered for its key (hot swap).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics as t
from streams.app import app, control_topic, models_ready, settings
from streams.metrics import send_dead_letter
from streams.monitoring import MODEL_RUN_SECONDS, MODEL_RUNS

log = logging.getLogger(__name__)


@dataclass
class Trainer:
    """Runs `run(reason)` for one model, one run at a time, coalescing requests."""

    model: str
    run: Callable[[str], Awaitable[None]]
    running: bool = False
    pending: bool = False
    runs: int = 0
    failures: int = 0
    last: float | None = None
    last_error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def request(self, reason: str) -> None:
        if self.running:
            self.pending = True
        else:
            self.running = True
            app.add_future(self._loop(reason))

    async def _loop(self, reason: str) -> None:
        try:
            while True:
                self.pending = False
                start = time.perf_counter()
                try:
                    await self.run(reason)
                    self.runs += 1
                    MODEL_RUNS.labels(model=self.model, outcome="ok").inc()
                except Exception as exc:  # a failed run leaves the previous version serving
                    self.failures += 1
                    self.last_error = repr(exc)
                    MODEL_RUNS.labels(model=self.model, outcome="error").inc()
                    log.exception("%s run failed; the previous version keeps serving", self.model)
                duration = time.perf_counter() - start
                MODEL_RUN_SECONDS.labels(model=self.model).observe(duration)
                self.last = time.time()
                self.history = [
                    *self.history[-19:],
                    {"reason": reason, "at": self.last, "duration_s": duration},
                ]
                if not self.pending:
                    return
                reason = "coalesced"
        finally:
            self.running = False

    def state(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "pending": self.pending,
            "runs": self.runs,
            "failures": self.failures,
            "last": self.last,
            "last_error": self.last_error,
            "history": self.history,
        }


trainers: dict[str, Trainer] = {}
model_loaders: dict[str, Callable[[dict[str, Any]], Any]] = {}


def register(
    model: str, run: Callable[[str], Awaitable[None]], loader: Callable[[dict[str, Any]], Any]
) -> Trainer:
    trainers[model] = Trainer(model, run)
    model_loaders[model] = loader
    return trainers[model]


@app.agent(control_topic)
async def control_agent(stream: Any) -> None:
    async for event in stream.events():
        try:
            request = json.loads(event.message.value)
            trainer = trainers[str(request["model"])]
        except (ValueError, KeyError, TypeError) as exc:
            send_dead_letter(event.message, f"bad control request: {exc!r}")
            continue
        trainer.request(str(request.get("reason", "request")))


_pool: ProcessPoolExecutor | None = None


def _init_helper() -> None:
    """A fit uses one core: BLAS threads on every core would starve the worker's event loop.
    The helper dies with its worker: a SIGKILLed worker otherwise leaves it behind, idle, holding
    its memory (found after the fault tests)."""
    import ctypes
    import signal

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1  # prctl(2): the signal this process gets when its parent dies
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


async def in_helper_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in the spawned helper process (arguments and result must pickle: they
    are numpy arrays and plain dicts between our own processes, never bytes from Kafka)."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_helper,
        )
    try:
        return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)
    except BrokenProcessPool:
        _pool = None  # the helper died (killed, out of memory): the next run starts a new one
        raise


def group_less_consumer() -> AIOKafkaConsumer:
    """A consumer outside any group: it reads whole partitions it assigns itself."""
    return AIOKafkaConsumer(
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        **settings.aiokafka_config(),
    )


async def read_latest(topic: str, partitions: int) -> dict[bytes, Any]:
    """The latest JSON value of every key of a (compacted) topic, read from the start to the end
    offsets of all its partitions; deleted keys (tombstones) are left out."""
    consumer = group_less_consumer()
    await consumer.start()
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
                    latest[r.key] = None if r.value is None else json.loads(r.value)
        return {k: v for k, v in latest.items() if v is not None}
    finally:
        await consumer.stop()


@app.task
async def follow_models() -> None:
    """Every worker: hot-swap the latest version of each model from the `models` topic."""
    topic = TopicPartition(settings.topic(t.MODELS), 0)
    consumer = group_less_consumer()
    await consumer.start()
    try:
        consumer.assign([topic])
        await consumer.seek_to_beginning(topic)
        end = (await consumer.end_offsets([topic]))[topic]
        while True:
            if not models_ready.is_set() and await consumer.position(topic) >= end:
                models_ready.set()
            batches = await consumer.getmany(timeout_ms=1000)
            loaded = [load_model(r) for records in batches.values() for r in records]
            if any(loaded):
                settle_heap()
    finally:
        await consumer.stop()


def load_model(record: Any) -> bool:
    """Hand one `models` record to its loader; True when a model was loaded."""
    loader = model_loaders.get((record.key or b"").decode())
    if loader is None or record.value is None:
        return False
    try:
        loader(json.loads(record.value))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("ignoring unreadable model at offset %d: %s", record.offset, exc)
        return False
    return True


def settle_heap() -> None:
    """Collect once, then freeze what is alive (the new models included) out of the cyclic
    collector's sight. Otherwise every full collection walks the models' vocabularies again:
    50-120 ms pauses of the event loop, measured as the comment labels' p99 latency."""
    gc.unfreeze()  # the replaced models become collectable
    gc.collect()
    gc.freeze()
