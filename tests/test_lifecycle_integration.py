"""Model lifecycle through the real broker: every version of a spam filter and of the clustering
kept on `model-versions`, GET /models and `smartstream models list`, rollbacks (CLI and HTTP) that
republish an old version's state as a new version which every label and assignment then carries,
refused rollbacks, and the drift gauges on /metrics. Expected values are computed here from the
archived documents and the data the test sent, not taken from the worker."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from models.mixture import BayesianGaussianMixture
from models.spam import SpamFilter
from tests.conftest import Stack, estimator, wait_for
from tests.spamdata import corpus, write_youtube_csv

SPAM = "spam:comments"


def models(worker) -> dict:
    status, body = worker.get("/models")
    return body["models"] if status == 200 else {}


def serving(worker, name: str) -> int:
    return models(worker).get(name, {}).get("serving_version", -1)


def archived(stack: Stack, count: int) -> dict[str, bytes]:
    """The `model-versions` records (key -> value bytes), once `count` keys are there."""
    records = stack.consume_all("model-versions", count)
    return {r.key.decode(): r.value for r in records if r.value is not None}


def metrics(worker) -> dict[str, float]:
    """`name{labels}` -> value of every sample on /metrics."""
    _, text = worker.get("/metrics")
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def labelled(stack: Stack, ids: list[str], version: int) -> list[dict]:
    """The labels of comments `ids` by `version`, in the order of `ids`."""

    def ready() -> list[dict] | None:
        seen = stack.labels_by_comment()
        out = [
            next((v for v in seen.get(c, []) if v["model_version"] == version), None) for c in ids
        ]
        return out if all(out) else None

    return wait_for(ready, 60, f"labels of {ids[0]}.. by v{version}")


def send_comments(stack: Stack, prefix: str, texts: list[str]) -> list[str]:
    producer = stack.producer()
    ids = [f"{prefix}{i}" for i in range(len(texts))]
    for cid, text in zip(ids, texts, strict=True):
        producer.comment(cid, text)
    producer.flush()
    producer.close()
    return ids


def relabel(stack: Stack, texts: list[str], labels: list[bool]) -> None:
    """New labels for pretraining texts: the same keys as `smartstream pretrain` writes, so the
    later records win (a different corpus for the next retraining)."""
    producer = stack.producer()
    for text, spam in zip(texts, labels, strict=True):
        producer.pretraining("comments", text, spam, "relabel")
    producer.flush()
    producer.close()


@pytest.mark.integration
def test_spam_filter_history_rollback_and_drift(stack: Stack, tmp_path) -> None:
    worker = stack.start_worker()
    texts, labels = corpus(400, seed=1)
    stack.pretrain(write_youtube_csv(tmp_path / "Youtube99-Test.csv", texts, labels))
    wait_for(lambda: serving(worker, SPAM) == 1, 120, "spam filter v1")
    probes, _ = corpus(80, seed=7)
    v1 = labelled(stack, send_comments(stack, "one-", probes), 1)

    # v2 learns inverted labels, v3 half of them inverted: each behaves differently.
    relabel(stack, texts, [not s for s in labels])
    stack.cli("retrain", "--filter", "comments")
    wait_for(lambda: serving(worker, SPAM) == 2, 120, "spam filter v2")
    relabel(stack, texts[:200], labels[:200])
    stack.cli("retrain", "--filter", "comments")
    wait_for(lambda: serving(worker, SPAM) == 3, 120, "spam filter v3")
    v3 = labelled(stack, send_comments(stack, "three-", probes), 3)
    flipped = sum(a["is_spam"] != b["is_spam"] for a, b in zip(v1, v3, strict=True))
    print(f"\nv3 labels {flipped} of {len(probes)} probes otherwise than v1")
    assert flipped >= 20

    out = stack.cli("models", "rollback", SPAM, "1")
    assert "rollback of spam:comments to v1 requested" in out.stdout
    wait_for(lambda: serving(worker, SPAM) == 4, 120, "the rollback's v4")
    v4 = labelled(stack, send_comments(stack, "four-", probes), 4)

    # v4 is v1's state: the same labels and scores as v1 gave, and as v1's archived document
    # gives when loaded here.
    docs = archived(stack, 4)
    assert {k for k in docs if k.startswith(SPAM)} == {f"{SPAM}@{v}" for v in (1, 2, 3, 4)}
    first = json.loads(docs[f"{SPAM}@1"])
    first_model = SpamFilter.from_dict(estimator(first, "model"))
    expected_labels, expected_scores = first_model.predict_with_scores(probes)
    for got in (v1, v4):
        assert [x["is_spam"] for x in got] == expected_labels.tolist()
        assert np.allclose([x["score"] for x in got], expected_scores, rtol=0, atol=1e-9)
    fourth = json.loads(docs[f"{SPAM}@4"])
    assert fourth["model"]["vectoriser"] == first["model"]["vectoriser"]
    assert fourth["model"]["classifier"] == first["model"]["classifier"]

    history = models(worker)[SPAM]
    assert history["serving_version"] == 4
    rows = history["versions"]
    assert [r["version"] for r in rows] == [1, 2, 3, 4]
    assert [r["reason"] for r in rows] == ["pretrain", "cli", "cli", "rollback to v1"]
    assert [r["serving"] for r in rows] == [False, False, False, True]
    assert rows[3]["rollback_of"] == 1 and rows[0]["rollback_of"] is None
    for row in rows:
        doc = json.loads(docs[f"{SPAM}@{row['version']}"])
        cv = doc["model"]["cv"]
        assert row["bytes"] == len(docs[f"{SPAM}@{row['version']}"])
        assert (row["cv_mean"], row["cv_two_std"]) == (cv["mean"], cv["two_std"])
        assert row["cross_validation"].startswith("Average Precision metric (10 folds): ")
        assert row["training_size"] == len(set(texts)) == row["pretraining_size"]
        assert row["trained_at"] == doc["model"]["trained_at"]
    truth = dict(zip(texts, labels, strict=True))
    assert rows[0]["training_spam_share"] == pytest.approx(sum(truth.values()) / len(truth))
    assert rows[1]["training_spam_share"] == pytest.approx(1 - rows[0]["training_spam_share"])

    listing = stack.cli("models", "list", SMARTSTREAM_WEB_PORT=str(worker.port)).stdout
    print(listing)
    lines = [line for line in listing.splitlines() if line.startswith(SPAM)]
    assert len(lines) == 4, listing
    assert "*4" in lines[3] and "rollback to v1" in lines[3] and "*" not in lines[0]
    assert "Average Precision metric" in lines[0]

    # Drift: the worker's window holds every label it gave (fewer than 1,000 here).
    scores = np.array([x["score"] for x in v1 + v3 + v4])
    gauges = wait_for(
        lambda: (
            (m := metrics(worker)).get('smartstream_spam_labels_recent{filter="comments"}')
            == len(scores)
            and m
        ),
        30,
        "the drift window",
    )
    assert gauges['smartstream_spam_share_recent{filter="comments"}'] == pytest.approx(
        float((scores >= 0.5).mean()), abs=1e-12
    )
    assert gauges['smartstream_spam_score_recent_mean{filter="comments"}'] == pytest.approx(
        float(scores.mean()), abs=1e-9
    )
    for q in (0.1, 0.5, 0.9):
        key = f'smartstream_spam_score_recent{{filter="comments",quantile="{q}"}}'
        assert gauges[key] == pytest.approx(float(np.quantile(scores, q)), abs=1e-9)
    assert gauges['smartstream_spam_share_training{filter="comments"}'] == pytest.approx(
        rows[0]["training_spam_share"]
    )


def views(rng: np.random.Generator, center: float) -> tuple[float, float]:
    return round(center + rng.normal(0, 1.0), 2), round(center + rng.normal(0, 1.0), 2)


def features(a: float, b: float) -> list[float]:
    """avg_time_pages and avg_time_pages_a after a view of A (a s) then B (b s), computed as
    streams.profiles' running mean computes them."""
    mean = a * 1 / 2 + b / 2
    return [mean, a]


def send_users(stack: Stack, first: int, count: int, center: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    producer = stack.producer()
    sent = {}
    for i in range(first, first + count):
        uid = str(i)
        a, b = views(rng, center)
        producer.new_user(uid, age=30, avg1=round(float(rng.normal(10, 2)), 2))
        producer.page_time(uid, "A", a)
        producer.page_time(uid, "B", b)
        sent[uid] = features(a, b)
    producer.flush()
    producer.close()
    return sent


def events_processed(worker) -> float:
    return sum(
        v
        for k, v in metrics(worker).items()
        if k.startswith("smartstream_events_total{") and ("page-times" in k or "new-users" in k)
    )


@pytest.mark.integration
def test_clustering_history_rollback_and_refusals(stack: Stack) -> None:
    stack.env.update(SMARTSTREAM_CLUSTERING_THRESHOLD="0", SMARTSTREAM_CLUSTERING_RESTARTS="3")
    worker = stack.start_worker()
    users = {**send_users(stack, 1, 60, 10.0, 1), **send_users(stack, 61, 60, 30.0, 2)}
    wait_for(lambda: events_processed(worker) == 3 * len(users), 60, "the first users")
    stack.cli("recluster")
    wait_for(lambda: serving(worker, "clustering") == 1, 120, "clustering v1")
    # Twice the data (a cold fit), with a new group far from the others: v2 gives it a cluster.
    users.update(send_users(stack, 121, 120, 60.0, 3))
    wait_for(lambda: events_processed(worker) == 3 * len(users), 60, "the new users")
    stack.cli("recluster")
    wait_for(lambda: serving(worker, "clustering") == 2, 120, "clustering v2")

    # v2's dashboard sample (the history keeps none: it names users, and erasure must not
    # find them in old versions), read while v2 serves.
    sample_v2 = worker.get("/dashboard/data")[1]["sample"]
    assert not json.loads(archived(stack, 2)["clustering@2"]).get("sample")
    status, answer = worker.post("/models/clustering/rollback", json.dumps({"version": 1}).encode())
    assert (status, answer["rollback_to"]) == (202, 1), answer
    wait_for(lambda: serving(worker, "clustering") == 3, 120, "the rollback's v3")

    docs = archived(stack, 3)
    one, two, three = (json.loads(docs[f"clustering@{v}"]) for v in (1, 2, 3))
    m1, m2 = (BayesianGaussianMixture.from_dict(estimator(d, "mixture")) for d in (one, two))
    clusters = worker.get("/clusters")[1]["current"]
    assert clusters["version"] == 3
    assert [c["mean"] for c in clusters["clusters"]] == [c["mean"] for c in m1.clusters()]
    assert clusters["lower_bound"] == m1.posterior.lower_bound
    points = np.asarray(sample_v2["points"], dtype=float)
    share = float(np.mean(m2.predict(points) != m1.predict(points)))
    assert three["mixture"]["label_change_share"] == share == clusters["label_change_share"]

    # Every user's latest assignment is v1's cluster; those v2 had moved carry version 3.
    ids = sorted(users, key=int)
    X = np.array([users[u] for u in ids])
    under_v1 = dict(zip(ids, m1.predict(X), strict=True))
    moved = {u for u, label in zip(ids, m2.predict(X), strict=True) if label != under_v1[u]}
    print(f"\nclusters v1 {len(m1.labels_)}, v2 {len(m2.labels_)}; {len(moved)} users moved back")
    assert len(moved) >= 100

    def settled() -> dict | None:
        latest = {}
        for m in stack.consume_all("cluster-assignments", 0):
            latest[m.key.decode()] = json.loads(m.value)
        done = set(latest) == set(ids) and all(latest[u]["model_version"] == 3 for u in moved)
        return latest if done else None

    latest = wait_for(settled, 60, "the re-assignments with version 3")
    assert {u: latest[u]["cluster"] for u in ids} == under_v1

    rows = models(worker)["clustering"]["versions"]
    assert [(r["version"], r["reason"], r["serving"]) for r in rows] == [
        (1, "cli", False),
        (2, "cli", False),
        (3, "rollback to v1", True),
    ]
    assert [r["clusters"] for r in rows] == [len(d["mixture"]["labels"]) for d in (one, two, three)]
    assert [r["users"] for r in rows] == [120, 240, 120]
    assert rows[2]["label_change_share"] == share
    gauge = metrics(worker)["smartstream_cluster_label_change_share"]
    assert gauge == pytest.approx(share, abs=1e-12)
    listing = stack.cli("models", "list", SMARTSTREAM_WEB_PORT=str(worker.port)).stdout
    print(listing)
    lines = [line for line in listing.splitlines() if line.startswith("clustering")]
    assert len(lines) == 3 and "*3" in lines[2] and "rollback to v1" in lines[2], listing
    assert f"{len(m1.labels_)} clusters" in lines[2] and f"{100 * share:.1f}% labels" in lines[2]

    # Refusals: unknown versions and models, bad bodies. A rollback the trainer cannot carry
    # out (a version not in the history; an archived document its loader refuses) and a record
    # on `model-versions` that is not a version are dead-lettered with their reasons; the
    # serving version stays.
    post = worker.post
    assert post("/models/clustering/rollback", b'{"version": 9}')[0] == 404
    assert post("/models/clustering/rollback", b'{"version": "1"}')[0] == 400
    assert post("/models/clustering/rollback", b"[1]")[0] == 400
    assert post("/models/nothing/rollback", b'{"version": 1}')[0] == 404
    producer = stack.producer()
    broken = {**three, "version": 4, "mixture": {"version": 4}}
    producer.send("model-versions", "clustering@4", broken).get(timeout=30)
    producer.send("model-versions", "nope@1", {"name": "nope", "version": 1}).get(timeout=30)
    producer.close()
    wait_for(lambda: len(models(worker)["clustering"]["versions"]) == 4, 30, "v4's summary")
    stack.cli("models", "rollback", "clustering", "9")
    stack.cli("models", "rollback", "clustering", "4")

    def letters() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in stack.consume_all("dead-letters", 0):
            value = json.loads(m.value)
            out.setdefault(value["topic"].rsplit("-", 1)[-1], []).append(value["error"])
        return out

    refused = wait_for(
        lambda: (d := letters()) and len(d.get("control", [])) == 2 and d.get("versions") and d,
        60,
        "the dead letters of the two rollbacks and of nope@1",
    )
    assert "version 9 of clustering is not in the history [1, 2, 3, 4]" in refused["control"][0]
    assert "DocumentError" in refused["control"][1]
    assert "is not NAME@VERSION of a known model" in refused["versions"][0]
    assert serving(worker, "clustering") == 3


def test_history_keeps_bounded_summaries_and_refuses_what_is_not_a_version() -> None:
    """apply_version, the follower's step, on records built here (pure logic)."""
    os.environ.setdefault("SMARTSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    from streams.cli import load_worker_modules

    load_worker_modules()  # the kinds register there (alone, this test found none)
    from streams import lifecycle

    def record(key: bytes | None, value: dict | bytes | None, offset: int) -> SimpleNamespace:
        raw = json.dumps(value).encode() if isinstance(value, dict) else value
        return SimpleNamespace(key=key, value=raw, offset=offset, timestamp=1000 * offset)

    def spam(version: int) -> dict:
        model = {"cv": {"metric": "f1", "folds": 5, "mean": 0.9, "two_std": 0.1}}
        return {"name": SPAM, "version": version, "reason": "cli", "model": model}

    lifecycle.history.clear()
    refused: list = []
    keep = lifecycle.HISTORY_VERSIONS
    for v in range(1, keep + 6):
        lifecycle.apply_version(record(f"{SPAM}@{v}".encode(), spam(v), v), refused)
    assert sorted(lifecycle.history[SPAM]) == list(range(6, keep + 6))
    entry = lifecycle.history[SPAM][keep + 5]
    assert entry["cross_validation"] == "F1 metric (5 folds): 0.900 ± 0.100"
    assert entry["training_size"] is None and entry["published_at"] == keep + 5
    lifecycle.apply_version(record(f"{SPAM}@{keep + 5}".encode(), None, 99), refused)
    assert keep + 5 not in lifecycle.history[SPAM] and not refused

    hostile = [
        (None, spam(1)),
        (b"spam:comments", spam(1)),
        (b"unknown@1", {**spam(1), "name": "unknown"}),
        (b"spam:comments@0", spam(0)),
        (b"spam:comments@1" + b"0" * 30, spam(1)),
        (b"spam:comments@2", spam(3)),
        (b"spam:comments@2", {**spam(2), "name": "clustering"}),
        (b"spam:comments@2", b"[1, 2]"),
        (b"spam:comments@2", b"\xff{"),
        (b"spam:comments@2", {**spam(2), "model": {"cv": {"mean": "NaN", "folds": 10**400}}}),
    ]
    for i, (key, value) in enumerate(hostile):
        lifecycle.apply_version(record(key, value, 200 + i), refused)
    assert [r.offset for r, _ in refused] == list(range(200, 200 + len(hostile) - 1))
    assert lifecycle.history[SPAM][2]["cross_validation"] is None  # figures shown as unknown
    lifecycle.history.clear()
