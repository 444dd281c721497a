"""The model-kind protocol (pure, no broker): a kind registered with one call is loaded from
`models`, summarised in the history, renumbered and validated for a rollback, and shown with its
own drift, with no other module knowing it (what a third kind of model would rely on)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

from models.spam import PRESETS
from streams.cli import load_worker_modules
from streams.monitoring import MODEL_RUNS, MODEL_VERSION
from streams.records import Rejected, dumps_json

load_worker_modules()

from streams import lifecycle, trainer  # noqa: E402  (after the worker's modules registered)


class Threshold:
    """A toy serving object: one threshold, validated on load."""

    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None

    @property
    def version(self) -> int:
        return self.document["version"] if self.document else 0

    def load(self, document: dict[str, Any]) -> bool:
        state = document.get("state")
        if not isinstance(state, dict) or not isinstance(state.get("threshold"), float):
            raise Rejected("state.threshold must be a float")
        if document["version"] <= self.version:
            return False
        self.document = document
        return True


def threshold_gauge(serving: Threshold) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily("smartstream_toy_threshold", "The serving toy's threshold")
    if serving.document:
        gauge.add_metric([], serving.document["state"]["threshold"])
    return gauge


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Threshold]:
    monkeypatch.setattr(trainer, "kinds", dict(trainer.kinds))
    monkeypatch.setattr(trainer, "trainers", dict(trainer.trainers))
    monkeypatch.setattr(lifecycle, "kinds", trainer.kinds)
    serving = Threshold()
    served: list[int] = []

    async def serve(document: dict[str, Any]) -> None:
        served.append(document["version"])

    async def run(reason: str) -> None: ...

    trainer.register(
        trainer.ModelKind(
            name="toy",
            state="state",
            run=run,
            load=serving.load,
            version=lambda: serving.version,
            fresh=Threshold,
            serve=serve,
            figures=lambda d: {"threshold": d["state"]["threshold"]},
            drift=lambda: {"alert": False, "threshold": serving.document and 1.0},
            gauges=lambda: [threshold_gauge(serving)],
        )
    )
    serving.served = served  # type: ignore[attr-defined]
    yield serving
    for outcome in ("ok", "error"):  # the process's registry as it was
        MODEL_RUNS.remove("toy", outcome)
    with contextlib.suppress(KeyError):
        MODEL_VERSION.remove("toy")


def record(key: str, document: dict[str, Any], offset: int = 7) -> SimpleNamespace:
    value = dumps_json(document)
    return SimpleNamespace(
        topic="models", partition=0, offset=offset, key=key.encode(), value=value,
        timestamp=1_700_000_000_000,
    )  # fmt: skip


DOC = {"name": "toy", "version": 1, "reason": "test", "state": {"threshold": 0.5, "version": 1}}


def test_a_registered_kind_loads_from_models_and_refuses_a_bad_document(toy: Threshold) -> None:
    refused: list = []
    assert trainer.load_model(record("toy", DOC), refused) is True
    assert (toy.version, refused) == (1, [])
    bad = {**DOC, "version": 2, "state": {"threshold": "high"}}
    assert trainer.load_model(record("toy", bad, 8), refused) is False
    assert toy.version == 1
    assert [reason for _, reason in refused] == [
        "invalid model document: Rejected: state.threshold must be a float"
    ]


def test_history_rollback_and_drift_go_through_the_kind(toy: Threshold) -> None:
    toy.load(DOC)
    summary = lifecycle.summarise("toy", 1, record("toy@1", DOC))
    assert (summary["version"], summary["threshold"], summary["reason"]) == (1, 0.5, "test")
    assert lifecycle.serving_version("toy") == 1
    renumbered = lifecycle.as_new_version("toy", DOC, target=1, version=3)
    assert renumbered["state"] == {"threshold": 0.5, "version": 3}
    assert (renumbered["version"], renumbered["rollback_of"]) == (3, 1)
    probe = lifecycle.dry_load("toy", renumbered)
    assert probe.version == 3 and toy.version == 1  # validated on a fresh object, not served
    with pytest.raises(Rejected):
        lifecycle.dry_load("toy", {**renumbered, "state": {}})
    assert lifecycle.drift("toy") == {"alert": False, "threshold": 1.0}
    asyncio.run(trainer.kinds["toy"].serve(renumbered))
    assert toy.served == [3]  # type: ignore[attr-defined]


def test_every_new_version_is_numbered_in_one_place(toy: Threshold, monkeypatch) -> None:
    """Runs and rollbacks take the next number from trainer.next_version, once the history is
    read: above the serving version and every version in the history (a version published but
    refused by the workers keeps its number), for any kind."""

    async def numbers() -> list[int]:
        read = asyncio.Event()
        monkeypatch.setattr(trainer, "_history_read", read)
        waiting = asyncio.ensure_future(trainer.next_version("toy"))
        for _ in range(3):  # let it run up to its wait
            await asyncio.sleep(0)
        assert not waiting.done()  # the history is not read yet
        read.set()
        first = await waiting
        toy.load(DOC)
        second = await trainer.next_version("toy")
        monkeypatch.setitem(lifecycle.history, "toy", {1: {}, 4: {}})
        return [first, second, await trainer.next_version("toy")]

    assert asyncio.run(numbers()) == [1, 2, 5]


def test_a_kind_brings_its_own_gauges_to_metrics(toy: Threshold) -> None:
    """What /metrics shows of the kinds: each kind's own families (the toy's, the clustering's
    label-change share), the score-window gauges only of the kinds without their own drift."""
    toy.load(DOC)
    families = {f.name: f for f in lifecycle.DriftCollector().collect()}
    assert [s.value for s in families["smartstream_toy_threshold"].samples] == [0.5]
    assert "smartstream_cluster_label_change_share" in families
    spam = {s.labels["filter"] for s in families["smartstream_spam_labels_recent"].samples}
    assert spam == {n.removeprefix("spam:") for n in trainer.kinds if n.startswith("spam:")}


def test_history_figures_of_hostile_numbers_show_as_null() -> None:
    """A version whose figures hold a 400-digit integer, NaN or a string is summarised with
    those figures null (its loader validates the whole document before it can serve)."""
    huge = 10**400
    posterior = {"lower_bound": "x"}
    mixture = {"trained_at": huge, "label_change_share": math.nan, "posterior": posterior}
    document = {"name": "clustering", "version": 4, "users": huge, "mixture": mixture}
    raw = json.dumps(document)  # the stdlib writes both; orjson refuses to read them
    record = SimpleNamespace(
        topic="model-versions", partition=0, offset=3, key=b"clustering@4",
        value=raw.encode(), timestamp=1_700_000_000_000,
    )  # fmt: skip
    summary = lifecycle.summarise("clustering", 4, record)
    figures = ("trained_at", "users", "label_change_share", "lower_bound")
    assert [summary[f] for f in figures] == [None, None, None, None]


def test_a_filter_serves_its_version_name_and_times_from_the_document() -> None:
    """A spam filter's estimator holds no name, version or times: the trainer stamps them into
    the document's `model` (streams.fitting.train_filter) and the serving filter takes them from
    there, refusing a model of another filter or version."""
    from streams.fitting import train_filter
    from streams.moderation import ServingFilter

    config = {**asdict(PRESETS["example"]), "cv_folds": 2}
    model = train_filter(["buy pills now", "nice song", "cheap pills", "love it"] * 3,
                         [True, False] * 6, config, "comments", 2)  # fmt: skip
    assert (model["name"], model["version"]) == ("comments", 2)
    assert model["trained_at"] > 1.7e9 and model["duration_s"] > 0
    document = {"name": "spam:comments", "version": 2, "reason": "test", "model": model}
    for bad, reason in [
        ({"name": "other"}, "model name 'other' is not 'comments'"),
        ({"version": 1}, "model version 1 is not the document's 2"),
        ({"trained_at": math.inf}, "trained_at must be a non-negative number"),
    ]:
        serving = ServingFilter("comments", "example")
        with pytest.raises(Rejected, match=reason):
            serving.load({**document, "model": {**model, **bad}})
        assert serving.version == 0 and serving.model is None
    serving = ServingFilter("comments", "example")
    assert serving.load(document) and serving.version == 2
    assert serving.inference is not None
    assert serving.inference["trained_at"] == model["trained_at"]
    assert serving.inference["duration_s"] == model["duration_s"]
    assert serving.inference["reason"] == "test"
    newer = {**document, "version": 3, "model": {**model, "version": 3}}
    assert serving.load(newer) and not serving.load(document)  # versions only move forward
    assert [serving.previous["version"], serving.document["version"]] == [2, 3]
    assert "model" not in serving.document  # the loaded filter holds it
    assert [serving.previous_inference["version"], serving.inference["version"]] == [2, 3]
    gauge = REGISTRY.get_sample_value("smartstream_model_version", {"model": "spam:comments"})
    assert gauge == 3


def test_both_kinds_serve_through_one_hot_swap() -> None:
    """ServingModel and ServingFilter share streams.served.Served: versions only move forward,
    the previous document is kept, and the kind's version gauge follows the swap."""
    from streams.moderation import ServingFilter
    from streams.served import Served
    from streams.serving import ServingModel

    for serving in (ServingModel(), ServingFilter("comments", "example")):
        assert isinstance(serving, Served) and serving.version == 0
        assert type(serving).load is Served.load, type(serving).__name__
