"""Operators' instruments: Prometheus metrics, GET /metrics and GET /health."""

from __future__ import annotations

import time

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

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
            # Not fetched by the Kafka client: outside recovery, exactly the tables' changelogs.
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
        read = consumer._read_offset.get(tp)  # faust keeps the last offset it read per partition
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
