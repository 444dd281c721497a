"""Operators' instruments: Prometheus metrics, GET /metrics, GET /health, the event-loop lag
probe and JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from faust.web import Request, Response, View
from mode.utils.logging import level_number
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from streams.adapter.bulk import last_read_offset
from streams.app import app, settings
from streams.auth import Role, configured, granted

EVENTS = Counter("smartstream_events_total", "Records consumed by the agents", ["topic"])
DEAD_LETTERS = Counter(
    "smartstream_dead_letters_total", "Records refused, by source topic", ["topic"]
)
LAST_EVENT = Gauge("smartstream_last_batch_timestamp_seconds", "When the last batch was processed")
MODEL_RUNS = Counter("smartstream_model_runs_total", "Model (re)fits", ["model", "outcome"])
MODEL_RUN_SECONDS = Histogram(
    "smartstream_model_run_seconds",
    "Duration of model fits",
    ["model"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 60, 120, 300),
)
MODEL_VERSION = Gauge("smartstream_model_version", "Current model version", ["model"])
CLASSIFY_SECONDS = Histogram(
    "smartstream_classification_seconds",
    "Comment-to-label latency inside the worker",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)

BATCH_SECONDS = Histogram(
    "smartstream_batch_seconds",
    "Time an agent spends on one batch",
    ["agent"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
)
CONSUMER_LAG = Gauge(
    "smartstream_consumer_lag", "Records not yet read, this worker's partitions", ["topic"]
)

STARTED = time.time()
_state = {"assigned": False}


@app.on_partitions_assigned.connect
async def _on_assigned(sender: object, assigned: object, **kwargs: object) -> None:
    _state["assigned"] = True


def is_ready() -> bool:
    """Processing: the group has assigned this worker once and no rebalance or recovery runs."""
    return bool(_state["assigned"]) and not app.rebalancing and not app.in_recovery


@app.page("/health")
class HealthView(View):
    async def get(self, request: Request) -> Response:
        ready = is_ready()
        paused = await app.consumer.paused_in_client() if ready else set()
        body = {
            "status": "ok" if ready else "starting",
            "uptime_s": round(time.time() - STARTED, 3),
            "assigned_partitions": len(app.consumer.assignment()) if ready else 0,
            # Not fetched by Faust's Kafka client: outside recovery, exactly the tables'
            # changelogs and the bulk topics (read by their own fetchers, streams.adapter.direct).
            "paused_partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in paused),
        }
        return self.json(body, status=200 if ready else 503)


def consumer_lag() -> dict[str, int]:
    """Per topic: high-water mark minus the next offset to read, over this worker's partitions."""
    lag: dict[str, int] = {}
    consumer = app.consumer
    for tp in consumer.assignment():
        if tp.topic.endswith("-changelog"):  # read only during recovery, not streamed
            continue
        try:
            highwater = consumer.highwater(tp)
        except (AssertionError, KeyError, AttributeError):
            continue
        read = last_read_offset(consumer, tp)
        position = 0 if read is None else read + 1
        if highwater is not None:
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, highwater - position)
    return lag


def counter_values(counter: Counter) -> dict[str, float]:
    """{label value: count} of a single-label Prometheus counter."""
    out = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[next(iter(sample.labels.values()))] = sample.value
    return out


@app.page("/metrics")
class MetricsView(View):
    async def get(self, request: Request) -> Response:
        if settings.metrics_require_token and configured() and granted(request) != Role.ADMIN:
            return self.json({"error": "GET /metrics needs the admin token"}, status=401)
        if is_ready():
            for topic, lag in consumer_lag().items():
                CONSUMER_LAG.labels(topic=topic).set(lag)
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


class LoopLagProbe:
    """How late the event loop runs a wake-up scheduled every `interval` seconds. Whatever holds
    the loop (a long batch, a blocking call) delays every task, HTTP answer and heartbeat by as
    much, and nothing else measures it. The gauge reports the worst lateness of the last
    `window` seconds, so a scrape at least that often misses no stall; the histogram keeps every
    measurement for quantiles."""

    def __init__(
        self, interval: float = 0.1, window: float = 15.0, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.interval = interval
        self.window = window
        self.samples: deque[tuple[float, float]] = deque()  # (loop time, lag), oldest first
        self.gauge = Gauge(
            "smartstream_event_loop_lag_seconds",
            f"Worst lateness of the event loop over the last {window:g} s",
            registry=registry,
        )
        self.gauge.set_function(self.worst)
        self.histogram = Histogram(
            "smartstream_event_loop_delay_seconds",
            f"Lateness of each event-loop probe (one every {interval:g} s)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )

    def record(self, lag: float, now: float) -> None:
        self.samples.append((now, lag))
        self.histogram.observe(lag)
        self._expire(now)

    def worst(self) -> float:
        """The largest lag measured within the window (0 when none)."""
        self._expire(time.monotonic())  # asyncio's loop.time() is time.monotonic()
        return max((lag for _, lag in self.samples), default=0.0)

    def _expire(self, now: float) -> None:
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()

    async def run(self) -> None:
        """Wake up every `interval` seconds and record how late each wake-up came; forever."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            now = loop.time()
            self.record(max(0.0, now - due), now)


LOOP_LAG = LoopLagProbe()


@app.task
async def _probe_event_loop() -> None:
    await LOOP_LAG.run()


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, on one line: log shippers parse it without a grok pattern,
    and a message's own newlines (tracebacks, comment texts) cannot split a record."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format string
            message = f"{record.msg!s} {record.args!r}"
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def json_logging_config(level: str) -> dict[str, Any]:
    """A logging.config.dictConfig for JSON lines on stdout at a Faust level name."""
    return {
        "version": 1,
        "disable_existing_loggers": False,  # the modules' loggers exist already
        "formatters": {"json": {"()": JsonLogFormatter}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level_number(level), "handlers": ["json"]},
    }


def use_json_logs(level: str) -> None:
    """Log JSON lines from now on, and after Faust's worker configures logging at its start (it
    applies app.conf.logging_config instead of its coloured text handler)."""
    logging.config.dictConfig(json_logging_config(level))
    logging.captureWarnings(True)  # warnings become records instead of text on stderr
    app.conf.logging_config = json_logging_config(level)  # dictConfig consumes its argument
