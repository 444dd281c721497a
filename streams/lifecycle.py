"""Model lifecycle: every model's version history, rollbacks, and drift signals.

* History. streams.trainer.publish_model archives each document under `NAME@VERSION` on the
  compacted `model-versions` topic before it produces it to `models`. Compaction keeps one value
  per key, so every version survives there, while `models` keeps only the latest per model. A
  topic of its own rather than per-version keys on `models`: every worker reads `models` from
  the start before it serves (streams.trainer.follow_models), and per-version keys there would
  make each start read every version's full document; consumers of the contract's `models`
  topic would also meet keys that are not model names. Every worker follows `model-versions`
  and keeps a summary of each version (a few hundred bytes: figures and the record's offset, at
  most HISTORY_VERSIONS per model), never the documents: `GET /models` answers from it.
* Rollback (`smartstream models rollback NAME VERSION`, `POST /models/{name}/rollback`): a
  `control` request the trainer runs as a job of the model's trainer, after any run in progress.
  It reads version N's document back from `model-versions` at the summary's offset, gives it the
  next version number (workers only hot-swap to newer versions) and `reason` "rollback to vN",
  validates it with the loader's own code, publishes it, and serves it (for clustering: the
  re-assign commands too). The model state is version N's.
* Drift. Each worker keeps the scores of its last DRIFT_WINDOW labels per spam filter; a
  Prometheus collector turns them, the training data's spam share and the clustering's
  label-change share into gauges at scrape time (thresholds in the README).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any

import numpy as np
from aiokafka import TopicPartition
from faust.web import Request, Response, View
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

from streams import topics as t
from streams.app import app, control_topic, models_ready, produce_acknowledged, settings
from streams.auth import Role, json_body, requires
from streams.deadletters import send_dead_letter
from streams.ingest import read_json_body
from streams.moderation import label_observers
from streams.monitoring import MODEL_VERSION
from streams.records import (
    MAX_COUNT,
    Rejected,
    RollbackRequest,
    count_or_none,
    dumps_json,
    loads_object,
)
from streams.trainer import (
    HISTORY_VERSIONS,
    archived,
    follow_compacted,
    group_less_consumer,
    kinds,
    next_version,
    publish_model,
    read_latest,
    set_lifecycle,
    versions_topic,
)

log = logging.getLogger(__name__)
VERSIONS = settings.topic(t.MODEL_VERSIONS)
# Drift: the labels each worker remembers per filter, and the thresholds the README documents.
DRIFT_WINDOW = 1000
MIN_LABELS = 200  # below this many labels in the window, a share says little
SPAM_SHARE_SHIFT = 0.2
QUANTILES = (0.1, 0.5, 0.9)

# model name -> version -> summary (what GET /models shows, plus the record's offset)
history: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
history_ready = asyncio.Event()


def serving_version(name: str) -> int:
    """The version this worker serves (0: none yet)."""
    return kinds[name].version()


# ---------------------------------------------------------------------------------------------
# History


def split_key(key: bytes | None) -> tuple[str, int]:
    """(model name, version) of a `model-versions` key `NAME@VERSION` of a known model."""
    name, sep, number = (key or b"").decode("utf-8", errors="replace").rpartition("@")
    if not sep or name not in kinds:
        raise Rejected(f"key {str(key)[:60]} is not NAME@VERSION of a known model")
    if not number.isdigit() or len(number) > 16 or not 0 < int(number) < MAX_COUNT:
        raise Rejected(f"version {number[:20]!r} is not a positive integer")
    return name, int(number)


def summarise(name: str, version: int, record: Any) -> dict[str, Any]:
    """A version's history entry from its `model-versions` record. The document must be a JSON
    object whose name and version are its key's; figures of the wrong type show as null (the
    whole document is validated by its loader before a rollback publishes it)."""
    document = loads_object(record.value, t.MODEL_MAX_BYTES)
    if document.get("name") != name or document.get("version") != version:
        raise Rejected(f"document name and version are not its key's ({name}@{version})")
    reason = document.get("reason")
    summary = {
        "version": version,
        "reason": reason[:100] if isinstance(reason, str) else None,
        "published_at": record.timestamp / 1000,  # Kafka's milliseconds
        "bytes": len(record.value),
        "rollback_of": count_or_none(document.get("rollback_of")),
        "offset": record.offset,
    }
    return {**summary, **kinds[name].figures(document)}


def apply_version(record: Any, refused: list[tuple[Any, str]]) -> None:
    """Add (or, for a tombstone, drop) one version's summary; refuse what is not a version."""
    try:
        name, version = split_key(record.key)
        if record.value is None:
            history[name].pop(version, None)
            return
        summary = summarise(name, version, record)
    except Exception as exc:  # the boundary: whatever a record holds, it is refused
        refused.append((record, f"invalid model version: {type(exc).__name__}: {exc}"[:500]))
        return
    versions = history[name]
    versions[version] = summary
    while len(versions) > HISTORY_VERSIONS:
        del versions[min(versions)]


@app.task
async def follow_versions() -> None:
    """Every worker: keep the summaries of `model-versions` (from the start, then as it grows)."""
    await follow_compacted(VERSIONS, history_ready, apply_version)


@app.task
async def archive_serving_versions() -> None:
    """Documents published before `model-versions` existed are only on `models`: archive each
    serving version the history lacks, once, at start (every worker may: same key, same
    document), so it can be rolled back to."""
    await models_ready.wait()
    await history_ready.wait()
    missing = [n for n in kinds if serving_version(n) not in (0, *history[n])]
    if not missing:
        return
    latest = await read_latest(settings.topic(t.MODELS), 1)
    for name in missing:
        document = latest.get(name.encode())
        if document and document.get("version") == serving_version(name):
            key = f"{name}@{document['version']}".encode()
            value = dumps_json(archived(document), strict=True)
            await (await versions_topic.send(key=key, value=value, force=True))
            log.warning("archived %s v%d in the model history", name, document["version"])


def models_view() -> dict[str, Any]:
    """GET /models: per model, the versions in the history (oldest first) and the serving one."""
    out = {}
    for name in sorted(kinds):
        current = serving_version(name)
        versions = [
            {**{k: v for k, v in s.items() if k != "offset"}, "serving": s["version"] == current}
            for _, s in sorted(history[name].items())
        ]
        out[name] = {"serving_version": current, "versions": versions, "drift": drift(name)}
    return out


# ---------------------------------------------------------------------------------------------
# Rollback


async def read_record(offset: int) -> Any:
    """The `model-versions` record at `offset`, or None when compaction removed it."""
    topic = TopicPartition(VERSIONS, 0)
    consumer = group_less_consumer()
    await consumer.start()
    try:
        consumer.assign([topic])
        consumer.seek(topic, offset)
        async with asyncio.timeout(30):
            while True:
                batch = await consumer.getmany(topic, timeout_ms=1000, max_records=1)
                for record in batch.get(topic, []):
                    return record if record.offset == offset else None
    finally:
        await consumer.stop()


async def wanted_document(name: str, version: int) -> dict[str, Any]:
    """Version `version` of `name`, read back from `model-versions` (Rejected if it is not in
    the history)."""
    async with asyncio.timeout(60):
        await history_ready.wait()
    entry = history[name].get(version)
    if entry is None:
        raise Rejected(f"version {version} of {name} is not in the history {sorted(history[name])}")
    record = await read_record(entry["offset"])
    if record is None or record.key != f"{name}@{version}".encode() or record.value is None:
        raise Rejected(f"version {version} of {name} is no longer on {VERSIONS}")
    return loads_object(record.value, t.MODEL_MAX_BYTES)


def as_new_version(name: str, document: dict[str, Any], target: int, version: int) -> dict:
    """Version `target`'s document renumbered as `version` (document and model state agree on
    their version number; nothing else of the state changes)."""
    inner = kinds[name].state
    if not isinstance(document.get(inner), dict):
        raise Rejected(f"the document has no {inner} object")
    return {
        **document,
        "version": version,
        "reason": f"rollback to v{target}",
        "rollback_of": target,
        inner: {**document[inner], "version": version},
    }


def dry_load(name: str, document: dict[str, Any]) -> Any:
    """Validate `document` with its loader's own code on a fresh serving object (the loader
    sets the version gauge: it is put back, the document serves only once published)."""
    probe = kinds[name].fresh()
    try:
        probe.load(document)
    finally:
        MODEL_VERSION.labels(model=name).set(serving_version(name))
    return probe


async def rollback(name: str, target: int, message: Any) -> None:
    """The trainer's rollback job: republish version `target` of `name` as a new version. A
    request that cannot be carried out is dead-lettered with its reason (and the job fails)."""
    try:
        document = await wanted_document(name, target)
        version = await next_version(name)
        document = as_new_version(name, document, target, version)
        probe = dry_load(name, document)
    except Exception as exc:
        await send_dead_letter(message, f"bad rollback request: {type(exc).__name__}: {exc}")
        raise
    kind = kinds[name]
    if kind.before_rollback is not None:
        kind.before_rollback(document, probe)
    await publish_model(document)
    await kind.serve(document)
    log.warning("%s v%d: rollback to v%d", name, version, target)


set_lifecycle(rollback, lambda name: history[name], history_ready)


@app.page("/models")
class ModelsView(View):
    @requires(Role.SERVER)
    async def get(self, request: Request) -> Response:
        return self.json({"models": models_view(), "history_versions": HISTORY_VERSIONS})


@app.page("/models/{name}/rollback")
class RollbackView(View):
    """Ask the trainer to roll `name` back to the body's `version` (202 once `control` has the
    request; the trainer publishes the new version shortly after)."""

    @requires(Role.ADMIN)
    @json_body
    async def post(self, request: Request, name: str) -> Response:
        if name not in kinds:
            return self.json({"error": f"unknown model {name[:60]!r}"}, status=404)
        try:
            obj = await read_json_body(request)
            version = obj.get("version")
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise Rejected("version must be a positive integer")
        except Rejected as exc:
            return self.json({"error": str(exc)}, status=400)
        if version not in history[name]:
            known = sorted(history[name])
            error = f"version {version} of {name} is not in the history {known}"
            return self.json({"error": error}, status=404)
        command = RollbackRequest(model=name, version=version).dumps()
        failure = await produce_acknowledged(control_topic, name.encode(), command)
        if failure is not None:
            return self.json({"error": failure}, status=503)
        return self.json({"model": name, "rollback_to": version, "requested": True}, status=202)


# ---------------------------------------------------------------------------------------------
# Drift

scores: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=DRIFT_WINDOW))


def observe(name: str, batch: list[float | None]) -> None:
    """A filter's scores of one fetch (moderation.classify calls this on the hot path)."""
    scores[name].extend(s for s in batch if s is not None)


label_observers.append(observe)


def drift(name: str) -> dict[str, Any]:
    """The drift figures of a model on this worker (None where nothing is known yet): the
    kind's own, else those of the scores its labels carried (a filter's)."""
    own = kinds[name].drift
    if own is not None:
        return own()
    window = np.fromiter(scores[name.removeprefix("spam:")], dtype=float)
    entry = history[name].get(serving_version(name), {})
    training = entry.get("training_spam_share")
    out: dict[str, Any] = {"recent_labels": len(window), "training_spam_share": training}
    if len(window):
        out["spam_share"] = float((window >= 0.5).mean())
        out["score_mean"] = float(window.mean())
        out["score_quantiles"] = dict(
            zip(map(str, QUANTILES), np.quantile(window, QUANTILES).tolist(), strict=True)
        )
        shifted = training is not None and abs(out["spam_share"] - training) > SPAM_SHARE_SHIFT
        out["alert"] = shifted and len(window) >= MIN_LABELS
    return out


class DriftCollector:
    """Prometheus gauges computed at scrape time (nothing is recomputed per label): the
    score-window gauges of every kind without its own drift (the spam filters), and each kind's
    own gauges (the clustering's label-change share)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        share = GaugeMetricFamily(
            "smartstream_spam_share_recent",
            f"Share of spam among this worker's last {DRIFT_WINDOW} labels of a filter",
            labels=["filter"],
        )
        count = GaugeMetricFamily(
            "smartstream_spam_labels_recent",
            "Labels in the drift window of a filter on this worker",
            labels=["filter"],
        )
        training = GaugeMetricFamily(
            "smartstream_spam_share_training",
            "Share of spam in the serving version's training data",
            labels=["filter"],
        )
        mean = GaugeMetricFamily(
            "smartstream_spam_score_recent_mean",
            "Mean spam score over the drift window",
            labels=["filter"],
        )
        quantile = GaugeMetricFamily(
            "smartstream_spam_score_recent",
            "Quantiles of the spam scores over the drift window",
            labels=["filter", "quantile"],
        )
        own = []
        for model, kind in kinds.items():
            if kind.gauges is not None:
                own.extend(kind.gauges())
            if kind.drift is not None:
                continue
            name = model.removeprefix("spam:")
            figures = drift(model)
            count.add_metric([name], figures["recent_labels"])
            if figures["training_spam_share"] is not None:
                training.add_metric([name], figures["training_spam_share"])
            if figures["recent_labels"]:
                share.add_metric([name], figures["spam_share"])
                mean.add_metric([name], figures["score_mean"])
                for q, value in figures["score_quantiles"].items():
                    quantile.add_metric([name, q], value)
        yield from (share, count, training, mean, quantile, *own)


REGISTRY.register(DriftCollector())
