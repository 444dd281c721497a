"""The moderator's workflow through the real broker, with two workers and the server token:
pending labels inside the uncertain band, the queue every worker serves (oldest first, paged),
reviews posted to either worker (forwarded with their body to the comment's owner), the final
labels, the counters on /metrics and the dashboard's data, and a retrain that learns from the
reviewed comments."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from models.spam import SpamFilter
from tests.conftest import Stack, Worker, estimator, http, wait_for
from tests.spamdata import corpus, write_youtube_csv

pytestmark = pytest.mark.integration
TOKEN = "moderator-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOW, HIGH = 0.35, 0.65
# Words the filter never saw: the score is the calibrated prior (~0.54), inside the band. The
# word-level `example` preset's: the default's char n-grams score any text by its characters.
FILTERS = "comments:example"
DOUBTFUL = ["hello there friend", "nice one", "what a day", "greetings from far", "ok then", "hmm"]
CLEAR = {"clear-spam": "free money click subscribe cash win", "clear-ham": "song love dance lyrics"}
REVIEWED = 4  # 3 pending comments and the overturned clear spam: the retraining threshold


def get(worker: Worker, path: str) -> tuple[int, object]:
    return http("GET", worker.url + path, None, AUTH)


def post_review(
    worker: Worker, comment_id: str, body: object, content_type: str = "application/json"
) -> tuple[int, object]:
    headers = {**AUTH, "Content-Type": content_type}
    raw = json.dumps(body).encode()
    return http("POST", f"{worker.url}/comments/{comment_id}/review", raw, headers)


def metric(worker: Worker, name: str, **labels: str) -> float:
    """A sample of the worker's /metrics (0 when absent)."""
    text = http("GET", worker.url + "/metrics")[1]
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(match[3])
    return 0.0


def queue_pages(worker: Worker, limit: int) -> list[list[dict]]:
    """Every page of GET /moderation/queue, following `next`."""
    pages, after = [], ""
    while True:
        status, body = get(worker, f"/moderation/queue?limit={limit}{after}")
        assert status == 200, body
        pages.append(body["entries"])
        if body["next"] is None:
            return pages
        after = f"&after={body['next']}"


def latest(stack: Stack) -> dict[str, dict]:
    return {cid: values[-1] for cid, values in stack.labels_by_comment().items()}


def test_pending_queue_review_counters_retrain(stack: Stack, tmp_path) -> None:
    stack.env.update(
        SMARTSTREAM_API_TOKEN=TOKEN,
        SMARTSTREAM_SPAM_FILTERS=FILTERS,
        SMARTSTREAM_MODERATION_PENDING_LOW=str(LOW),
        SMARTSTREAM_MODERATION_PENDING_HIGH=str(HIGH),
        SMARTSTREAM_MODERATION_REVIEW_THRESHOLD=str(REVIEWED),
    )
    a, b = stack.start_worker(), stack.start_worker()
    stack.pretrain(write_youtube_csv(tmp_path / "Youtube01-Test.csv", *corpus(400, seed=1)))
    for w in (a, b):
        wait_for(
            lambda w=w: metric(w, "smartstream_model_version", model="spam:comments") == 1,
            120,
            "the pretrained filter on both workers",
        )
    producer = stack.producer()

    # Two waves, the second once the first is labelled: the queue lists the first wave first.
    waves = [[f"doubt{i}" for i in range(3)], [f"doubt{i}" for i in range(3, 6)]]
    for wave in waves:
        for cid in wave:
            producer.comment(cid, DOUBTFUL[int(cid[5:])], user_id=f"u{cid}")
        if wave is waves[0]:
            for cid, text in CLEAR.items():
                producer.comment(cid, text, user_id="u-clear")
        producer.flush()
        wait_for(lambda wave=wave: set(wave) <= set(latest(stack)), 60, f"labels of {wave}")
    labels = latest(stack)

    # The band's rule, checked against each label's own score, and the score against the model
    # document that `models` carries (scored here, not by the worker).
    documents = [m.value for m in stack.consume_all("models", 1) if m.key == b"spam:comments"]
    model = SpamFilter.from_dict(estimator(json.loads(documents[-1]), "model"))
    texts = {**{f"doubt{i}": t for i, t in enumerate(DOUBTFUL)}, **CLEAR}
    _, scores = model.predict_with_scores(list(texts.values()))
    for (cid, text), score in zip(texts.items(), scores.tolist(), strict=True):
        label = labels[cid]
        assert label["score"] == pytest.approx(score, abs=1e-9), (cid, text)
        assert label["model_version"] == 1
        if LOW <= score < HIGH:
            assert label["state"] == "pending" and label["is_spam"] is None, label
        else:
            assert label["state"] == "labelled" and label["is_spam"] == (score >= 0.5), label
    pending = [cid for cid in texts if labels[cid]["state"] == "pending"]
    assert sorted(pending) == sorted(f"doubt{i}" for i in range(6))
    assert labels["clear-spam"]["is_spam"] is True and labels["clear-ham"]["is_spam"] is False

    # The queue: every pending comment, from either worker, oldest first (ties by id), paged.
    expected = sorted(pending, key=lambda c: (labels[c]["ts"], c))
    assert max(labels[c]["ts"] for c in waves[0]) < min(labels[c]["ts"] for c in waves[1])
    for w in (a, b):
        pages = wait_for(
            lambda w=w: (p := queue_pages(w, 2)) and sum(map(len, p)) == 6 and p,
            30,
            "the whole queue",
        )
        assert [len(p) for p in pages] == [2, 2, 2]
        entries = [e for p in pages for e in p]
        assert [e["comment_id"] for e in entries] == expected
        for e in entries:
            cid = e["comment_id"]
            assert e == {
                "comment_id": cid,
                "text": texts[cid],
                "user_id": f"u{cid}",
                "filter": "comments",
                "score": labels[cid]["score"],
                "model_version": 1,
                "pending_since": labels[cid]["ts"],
            }
    assert metric(a, "smartstream_moderation_pending", filter="comments") == 6
    pending_counted = sum(
        metric(w, "smartstream_moderation_labels_total", filter="comments", outcome="pending")
        for w in (a, b)
    )
    assert pending_counted == 6

    # Refusals: no token, text/plain, bad verdict, another body id, unknown comment, bad paging.
    assert http("GET", a.url + "/moderation/queue")[0] == 401
    assert post_review(a, "doubt0", {"is_spam": True}, "text/plain")[0] == 415
    assert post_review(a, "doubt0", {"is_spam": "yes"})[0] == 400
    assert post_review(a, "doubt0", {"is_spam": True, "comment_id": "doubt1"})[0] == 400
    for w in (a, b):  # one of them forwards to the owner
        assert post_review(w, "no-such-comment", {"is_spam": True})[0] == 404
        assert get(w, "/moderation/queue?limit=0")[0] == 400
        assert get(w, "/moderation/queue?after=garbage")[0] == 400

    # Verdicts, posted to both workers: whichever does not own a comment forwards it (the same
    # verdict twice changes nothing). The clear spam approved as ham overturns its label.
    verdicts = {expected[0]: False, expected[1]: True, expected[3]: False, "clear-spam": False}
    for cid, verdict in verdicts.items():
        for w in (a, b):
            status, body = post_review(w, cid, {"is_spam": verdict, "reviewer": "mod"})
            assert status == 204, (cid, status, body)
    reviews = stack.consume_all("comment-reviews", 2 * len(verdicts))
    seen = [json.loads(r.value) for r in reviews]
    assert sorted((v["comment_id"], v["is_spam"], v["reviewer"]) for v in seen) == sorted(
        (cid, verdict, "mod") for cid, verdict in verdicts.items() for _ in (a, b)
    )
    assert all(r.key == json.loads(r.value)["comment_id"].encode() for r in reviews)

    # Final labels: one "reviewed" label per decided pending comment, the score kept.
    decided = [c for c in verdicts if c in pending]
    final = wait_for(
        lambda: (
            (lb := stack.labels_by_comment())
            and all(lb[c][-1]["state"] == "reviewed" for c in decided)
            and lb
        ),
        60,
        "the reviewed labels",
    )
    for cid in decided:
        reviewed = [v for v in final[cid] if v["state"] == "reviewed"]
        assert len(reviewed) == 1, final[cid]
        assert reviewed[0]["is_spam"] == verdicts[cid]
        assert reviewed[0]["score"] == labels[cid]["score"]
        assert reviewed[0]["model_version"] == 1
    assert [v["state"] for v in final["clear-spam"]] == ["labelled"]
    row = get(a, f"/comments/{decided[0]}")[1]
    assert row["state"] == "reviewed" and row["review"] == verdicts[decided[0]]
    assert row["pending_since"] == labels[decided[0]]["ts"] and row["label"] is None

    # The queue keeps the undecided ones, in order, on both workers; the counters moved.
    left = [c for c in expected if c not in verdicts]
    for w in (a, b):
        wait_for(
            lambda w=w: [e["comment_id"] for p in queue_pages(w, 50) for e in p] == left,
            30,
            "the decided comments to leave the queue",
        )
        assert metric(w, "smartstream_moderation_pending", filter="comments") == len(left)
    outcomes = {
        outcome: sum(
            metric(w, "smartstream_moderation_labels_total", filter="comments", outcome=outcome)
            for w in (a, b)
        )
        for outcome in ("pending", "approved", "rejected", "overturned")
    }
    approved = sum(not v for v in verdicts.values())
    assert outcomes == {
        "pending": 6,
        "approved": approved,
        "rejected": len(verdicts) - approved,
        "overturned": 1,
    }
    dashboard = get(b, "/dashboard/data")[1]["moderation"]
    assert dashboard["pending"] == len(left) and dashboard["band"] == [LOW, HIGH]
    assert dashboard["oldest_pending_since"] == labels[left[0]]["ts"]

    # A hostile record on the queue topic is dead-lettered; the queue is unchanged.
    producer.send("moderation-queue", "doubt9", b'{"comment_id": "doubt9", "score": NaN}')
    producer.flush()
    letters = wait_for(
        lambda: [
            v
            for m in stack.consume_all("dead-letters", 0)
            if (v := json.loads(m.value))["topic"] == stack.settings.topic("moderation-queue")
        ],
        30,
        "the dead letter of the hostile queue entry",
    )
    assert "bad moderation-queue entry" in letters[0]["error"]
    assert [e["comment_id"] for p in queue_pages(a, 50) for e in p] == left
    producer.close()

    # The reviews crossed the threshold: the retrained filter learnt from the reviewed comments.
    def filter_state() -> dict:
        status, body = get(a, "/spam-filters/comments")
        return body if status == 200 and body["version"] >= 2 else {}

    state = wait_for(filter_state, 120, "the retraining the reviews requested")
    assert state["current"]["reviewed_size"] == REVIEWED
    assert state["reviews"]["reviews"] == REVIEWED
    assert state["reviews"]["misclassified"] == 1  # the overturned label; pending ones had none


def test_erasure_takes_a_users_pending_comments_out_of_the_queue(stack: Stack, tmp_path) -> None:
    """The queue holds texts and user ids: erasing a user must empty it of theirs."""
    if importlib.util.find_spec("streams.erasure") is None:
        pytest.skip("no erasure in this tree (streams.erasure)")
    stack.env.update(
        SMARTSTREAM_API_TOKEN=TOKEN,
        SMARTSTREAM_SPAM_FILTERS=FILTERS,
        SMARTSTREAM_MODERATION_PENDING_LOW=str(LOW),
        SMARTSTREAM_MODERATION_PENDING_HIGH=str(HIGH),
    )
    worker = stack.start_worker()
    stack.pretrain(write_youtube_csv(tmp_path / "Youtube01-Test.csv", *corpus(400, seed=1)))
    wait_for(
        lambda: metric(worker, "smartstream_model_version", model="spam:comments") == 1,
        120,
        "the pretrained filter",
    )
    producer = stack.producer()
    for i, text in enumerate(DOUBTFUL[:4]):
        producer.comment(f"e{i}", text, user_id="leaving" if i % 2 else "staying")
    producer.flush()
    producer.close()
    ids = wait_for(
        lambda: (q := queue_pages(worker, 50)[0]) and len(q) == 4 and [e["comment_id"] for e in q],
        60,
        "the four pending comments",
    )
    status, body = http("DELETE", worker.url + "/users/leaving", None, AUTH)
    assert status == 202, body
    wait_for(
        lambda: (
            [e["comment_id"] for e in queue_pages(worker, 50)[0]]
            == [c for c in ids if c in ("e0", "e2")]
        ),
        60,
        "the erased user's comments to leave the queue",
    )
    assert metric(worker, "smartstream_moderation_pending", filter="comments") == 2
