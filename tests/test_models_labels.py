"""One decision per comment: a spam filter's label is its calibrated score against 1/2, so no
comment is labelled against its score, and a filter pretrained as the demo does labels every one
of the simulator's comment templates as its class (the old sign-of-decision label called the
example preset's ham templates spam with a score of 0.00)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from models.corpora import load_youtube
from models.spam import PRESETS, SpamFilter
from producers.demo import pretrain_from_templates
from producers.traffic import HAM, SPAM
from streams.sender import Sender
from streams.topics import PRETRAINING, SPECS


class Recorder(Sender):
    """A producer without Kafka that keeps what it is sent, encoded by the topic's codec."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def send(self, topic: str, key: Any, value: Any, partition: int | None = None) -> None:
        self.sent.append((topic, key, json.loads(SPECS[topic].encode(value))))

    def flush(self) -> None:
        pass


def demo_corpus(preset: str) -> tuple[list[str], list[bool]]:
    """What the demo pretrains a filter of `preset` on: its pretraining records, latest per key
    (a compacted topic), one label per text (as moderation's training_data reads them)."""
    producer = Recorder()
    pretrain_from_templates(producer, SimpleNamespace(spam_filter_presets={"comments": preset}))
    latest = {key: value for topic, key, value in producer.sent if topic == PRETRAINING}
    by_text = {v["text"]: bool(v["is_spam"]) for v in latest.values()}
    return list(by_text), list(by_text.values())


def fresh_templates() -> tuple[list[str], list[bool]]:
    """Every template with placeholder values the demo's draw may not have used."""
    values = itertools.product([0, 7, 999, 123456], [2019, 2026, 2031], [0, 3], [0, 59])
    texts, labels = [], []
    for n, year, minute, second in values:
        for template, spam in [*((t, False) for t in HAM), *((t, True) for t in SPAM)]:
            texts.append(template.format(n=n, year=year, minute=minute, second=second))
            labels.append(spam)
    return texts, labels


def assert_one_decision(model: SpamFilter, texts: list[str]) -> None:
    labels, scores = model.predict_with_scores(texts)
    assert ((scores >= 0.5) == labels).all()
    assert (model.predict(texts) == labels).all()


@pytest.mark.parametrize("preset", ["example", "best"])
def test_a_filter_pretrained_as_the_demo_labels_its_templates_as_their_class(preset):
    texts, labels = demo_corpus(preset)
    assert 100 < len(texts) < 300 and 0 < sum(labels) < len(labels)
    model = SpamFilter(PRESETS[preset]).fit(texts, labels)
    fresh, fresh_labels = fresh_templates()
    for probe, expected in [(texts, labels), (fresh, fresh_labels)]:
        predicted, scores = model.predict_with_scores(probe)
        wrong = [
            (t, round(float(s), 2))
            for t, s, p, e in zip(probe, scores, predicted, expected, strict=True)
            if p != e
        ]
        assert not wrong, wrong[:5]
        assert_one_decision(model, probe)


def test_labels_agree_with_scores_on_the_youtube_collection(youtube_dir: Path):
    """Leave the last video out: on it and on the training comments, label == score >= 1/2;
    the held-out accuracy stays at the level of the leave-one-video-out figures."""
    files = sorted(youtube_dir.glob("*.csv"))
    train = [item for f in files[:-1] for item in load_youtube(f)]
    test = load_youtube(files[-1])
    for preset in ("example", "best"):
        model = SpamFilter(PRESETS[preset]).fit([i.text for i in train], [i.is_spam for i in train])
        assert_one_decision(model, [i.text for i in train])
        assert_one_decision(model, [i.text for i in test])
        accuracy = np.mean(model.predict([i.text for i in test]) == [i.is_spam for i in test])
        assert accuracy > 0.88, (preset, accuracy)
