"""One decision per comment, through Kafka: a worker pretrained as the demo pretrains it labels
the simulator's comments, and no label contradicts its score (is_spam == score >= 1/2 outside
the moderators' band, null inside it) or the template's class. On the landed code the demo
labelled friendly comments spam with a score of 0.00."""

from __future__ import annotations

import pytest

from producers.demo import pretrain_from_templates
from producers.population import generate
from producers.traffic import Traffic
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration
COMMENTS = 300
LOW, HIGH = 0.35, 0.65


def test_the_demo_stream_gets_labels_that_agree_with_scores_and_templates(stack: Stack) -> None:
    stack.env.update(
        SMARTSTREAM_MODERATION_PENDING_LOW=str(LOW), SMARTSTREAM_MODERATION_PENDING_HIGH=str(HIGH)
    )
    worker = stack.start_worker()
    producer = stack.producer()
    pretrain_from_templates(producer, stack.settings)
    wait_for(
        lambda: (worker.get("/spam-filters/comments")[1] or {}).get("version") == 1,
        120,
        "the filter pretrained from the templates",
    )
    traffic = Traffic(generate(20), seed=77)  # other placeholder values than the pretraining
    truth = {}
    for i in range(COMMENTS):
        text, spam = traffic.labelled_text()
        truth[f"dc{i}"] = (text, spam)
        producer.comment(f"dc{i}", text, user_id=str(i % 20))
    producer.flush()
    labels = wait_for(
        lambda: (got := stack.labels_by_comment()) and len(got) >= COMMENTS and got,
        120,
        "a label for every comment",
    )
    wrong, pending = [], 0
    for comment_id, (text, spam) in truth.items():
        (label,) = labels[comment_id]
        score = label["score"]
        if label["state"] == "pending":
            pending += 1
            assert label["is_spam"] is None and LOW <= score < HIGH, label
            continue
        assert label["state"] == "labelled" and label["model_version"] == 1, label
        assert label["is_spam"] == (score >= 0.5), label  # one decision
        if label["is_spam"] != spam:
            wrong.append((text, spam, score))
    assert not wrong, wrong[:5]
    assert pending < COMMENTS / 10, pending
    print(f"\n{COMMENTS} demo comments: all labelled as their template, {pending} pending")
