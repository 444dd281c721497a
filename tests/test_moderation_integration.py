"""Comment moderation through the real broker: unknown labels before the first model, pretraining
from the CLI, one label per comment and model version, reviews that trigger retraining, confusion
figures, and labelling that goes on during a retrain."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import pytest

from tests.conftest import Stack, wait_for
from tests.spamdata import corpus, write_youtube_csv

pytestmark = pytest.mark.integration
THRESHOLD = 15


def spam_filter(worker) -> dict:
    status, body = worker.get("/spam-filters/comments")
    return body if status == 200 else {}


def test_pretrain_label_review_retrain(stack: Stack, tmp_path) -> None:
    stack.env["SMARTSTREAM_MODERATION_REVIEW_THRESHOLD"] = str(THRESHOLD)
    worker = stack.start_worker()
    producer = stack.producer()

    # Before any model: an explicit "unknown" label, never silence.
    for i in range(3):
        producer.comment(f"early{i}", f"free money {i}")
    producer.flush()
    early = wait_for(
        lambda: (lb := stack.labels_by_comment()) and len(lb) == 3 and lb, 60, "unknown labels"
    )
    assert all(v[0]["state"] == "unknown" and v[0]["model_version"] == 0 for v in early.values())

    # Pretraining from the CLI, on a corpus the test writes as a YouTube-style CSV.
    path = write_youtube_csv(tmp_path / "Youtube99-Test.csv", *corpus(400, seed=1))
    cli = stack.pretrain(path)
    assert "400 labelled texts" in cli.stdout
    first = wait_for(
        lambda: spam_filter(worker).get("version") == 1 and spam_filter(worker),
        120,
        "the pretrained model",
    )
    assert first["current"]["training_size"] == 400
    assert first["current"]["cross_validation"].startswith("Average Precision metric (10 folds)")

    # Stream comments while moderators review some of them; reviews trigger retraining.
    stream_texts, truth = corpus(300, seed=2)

    def stream() -> None:
        p = stack.producer()
        for i, text in enumerate(stream_texts):
            p.comment(f"c{i}", text, user_id=str(i % 7))
            if i % 5 == 0:
                p.flush()
                time.sleep(0.15)  # pacing: comments keep arriving during the retrains
        p.flush()
        p.close()

    feeder = threading.Thread(target=stream)
    feeder.start()
    reviewed = {}

    def row(cid: str) -> dict:
        status, body = worker.get(f"/comments/{cid}")
        return body if status == 200 else {}

    reviewed_ids = [f"c{i}" for i in range(2 * THRESHOLD)]
    published = wait_for(
        lambda: (
            all(row(c).get("model_version") for c in reviewed_ids)
            and {c: row(c) for c in reviewed_ids}
        ),
        120,
        "the first comments labelled",
    )
    assert feeder.is_alive(), "the stream should still be running when the reviews arrive"
    for i in range(2 * THRESHOLD):
        cid = f"c{i}"
        verdict = truth[i] if i % 5 else not published[cid]["label"]  # every 5th contradicts
        reviewed[cid] = verdict
        producer.review(cid, verdict, reviewer="mod")
    producer.flush()
    feeder.join()
    total = 3 + len(stream_texts)
    state = wait_for(
        lambda: (
            (f := spam_filter(worker))
            and f["version"] >= 3
            and not f["trainer"]["running"]
            and f["reviews"]["reviews"] == 2 * THRESHOLD
            and f
        ),
        180,
        "two retrainings triggered by the reviews",
    )
    assert state["counter"]["requests"] == 2
    assert state["current"]["reviewed_size"] == 2 * THRESHOLD
    assert state["previous"]["version"] == state["version"] - 1
    expected_mis = sum(reviewed[c] != published[c]["label"] for c in reviewed)
    assert state["reviews"]["misclassified"] == expected_mis >= 2 * THRESHOLD // 5
    confusion = state["reviews"]
    assert confusion["tp"] + confusion["fp"] + confusion["tn"] + confusion["fn"] == 2 * THRESHOLD

    # Every comment: labelled, exactly once per model version that processed it.
    labels_seen = wait_for(
        lambda: (lb := stack.labels_by_comment()) and len(lb) == total and lb,
        60,
        "a label for every comment",
    )
    for cid, values in labels_seen.items():
        per_version = Counter(v["model_version"] for v in values)
        assert max(per_version.values()) == 1, (cid, values)
    streamed = [labels_seen[f"c{i}"][-1] for i in range(len(stream_texts))]
    assert all(v["state"] == "labelled" and v["model_version"] >= 1 for v in streamed)
    label_times = sorted(v["ts"] for v in streamed)
    versions = [v["model_version"] for v in sorted(streamed, key=lambda v: v["ts"])]
    assert versions == sorted(versions), "a later comment was labelled by an older version"
    gaps = [b - a for a, b in itertools.pairwise(label_times)]
    print(f"\nlabels by version {Counter(versions)}; longest labelling gap {max(gaps):.3f} s")
    assert len(set(versions)) >= 2, "the stream should span a retraining"
    assert max(gaps) < 2.0
    first_row = row("c0")
    assert first_row["review"] == reviewed["c0"] and first_row["filter"] == "comments"

    # After the retrains, new comments are labelled by the newest version.
    for i in range(10):
        producer.comment(f"late{i}", stream_texts[i])
    producer.flush()
    producer.close()
    late = wait_for(
        lambda: (
            (lb := stack.labels_by_comment()) and all(f"late{i}" in lb for i in range(10)) and lb
        ),
        60,
        "labels of the late comments",
    )
    assert {late[f"late{i}"][0]["model_version"] for i in range(10)} == {state["version"]}
