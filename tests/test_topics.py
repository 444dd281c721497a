"""streams/topics.py's codecs and streams/sender.py, without a broker: every topic's values are
typed once, encoded and read back through the topic's own codec, and a record never goes to a
topic that does not hold its type."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any

import pytest

from streams import records as r
from streams import topics as t
from streams.sender import Sender
from streams.settings import Settings

# One value of every record class a topic holds, with every optional field set.
SAMPLES: dict[type, Any] = {
    r.PageTime: r.PageTime("u1", "C", 12.5, event_id="e1", ts=1.5),
    r.NewUser: r.NewUser("u1", age=31, sex="F", avg1=4.25, ts=2.0),
    r.ClusterAssignment: r.ClusterAssignment("u1", "A", 3, atypical=False, ts=3.0),
    r.Comment: r.Comment("c1", "nice video", user_id="u1", filter="forum", ts=4.0),
    r.CommentLabel: r.CommentLabel("c1", None, 0.5, "comments", 2, 5.0, "pending"),
    r.CommentReview: r.CommentReview("c1", True, reviewer="mod", ts=6.0),
    r.DeadLetter: r.DeadLetter("page-times", 1, 7, "bad", "{", 1, "0" * 64, False),
    r.CounterTotal: r.CounterTotal("spam:comments", 3, 40, extra={"tp": 2}),
    r.RunRequest: r.RunRequest("clustering", "cli", 2, ts=7.0),
    r.RollbackRequest: r.RollbackRequest("spam:comments", 4, ts=8.0),
    r.Reassign: r.Reassign("clustering", 9),
    r.Erase: r.Erase("u1", "x1"),
    r.PretrainingExample: r.PretrainingExample(
        "comments", "free money", True, source="s", comment_id="c1", reviewer="mod"
    ),
    r.PendingComment: r.PendingComment(
        comment_id="c1",
        text="hm",
        user_id="u1",
        filter="comments",
        score=0.5,
        model_version=2,
        pending_since=9.0,
    ),
    r.Erasure: r.Erasure("x1", 10.0),
}
RECORD_TOPICS = [spec for spec in t.CONTRACT_TOPICS if spec.value]


def test_every_topic_is_typed_by_records_except_the_model_documents() -> None:
    documents = {spec.name for spec in t.CONTRACT_TOPICS if not spec.value}
    assert documents == {t.MODELS, t.MODEL_VERSIONS}
    assert all(spec.parse is not None for spec in RECORD_TOPICS)
    assert set(t.SPECS) == {spec.name for spec in t.CONTRACT_TOPICS}


@pytest.mark.parametrize(
    "spec,cls",
    [(spec, cls) for spec in RECORD_TOPICS for cls in spec.value],
    ids=lambda x: getattr(x, "name", None) or getattr(x, "__name__", ""),
)
def test_a_record_reads_back_as_itself(spec: t.TopicSpec, cls: type) -> None:
    record = SAMPLES[cls]
    raw = spec.encode(record)
    limits = (86400.0,) if spec.name == t.PAGE_TIMES else ()
    assert spec.decode(raw, 65536, *limits) == record
    assert json.loads(raw) == record.to_dict()


def test_a_record_of_another_type_is_refused_before_it_is_sent() -> None:
    with pytest.raises(TypeError, match="page-times values"):
        t.SPECS[t.PAGE_TIMES].encode(SAMPLES[r.Comment])


def test_decode_refuses_what_the_parsers_refuse() -> None:
    spec = t.SPECS[t.PAGE_TIMES]
    with pytest.raises(r.Rejected, match="malformed JSON"):
        spec.decode(b"{broken", 65536, 60.0)
    with pytest.raises(r.Rejected, match="above the cap"):
        spec.decode(SAMPLES[r.PageTime].dumps(), 65536, 10.0)
    with pytest.raises(r.Rejected, match="not a ClusterAssignment"):
        t.SPECS[t.CLUSTER_ASSIGNMENTS].decode(b'{"user_id": "u1"}', 65536)
    with pytest.raises(TypeError, match="model documents"):
        t.SPECS[t.MODELS].decode(b"{}", 65536)


class RecordingSender(Sender):
    """The Sender without Kafka: what it hands kafka-python's producer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent: list[dict[str, Any]] = []
        self.producer = SimpleNamespace(
            send=lambda topic, **kw: self.sent.append(kw | {"t": topic})
        )


def test_the_sender_encodes_by_the_topic_and_prefixes_its_name() -> None:
    sender = RecordingSender(Settings(topic_prefix="site1."))
    sender.pretraining("comments", "free money", True, "corpus")
    sender.request_run("clustering", "cli")
    sender.send(t.PAGE_TIMES, "u1", b"{raw")
    sender.send(t.USER_COMMANDS, None, SAMPLES[r.Erase], partition=3)
    example, run, raw, erase = sender.sent
    assert example["t"] == "site1.pretraining"
    assert example["key"] == b"comments:" + hashlib.sha1(b"free money").hexdigest().encode()
    assert t.SPECS[t.PRETRAINING].decode(example["value"], 4096) == r.PretrainingExample(
        "comments", "free money", True, source="corpus"
    )
    request = t.SPECS[t.CONTROL].decode(run["value"], 4096)
    assert (run["key"], request.model, request.reason) == (b"clustering", "clustering", "cli")
    assert (raw["value"], raw["partition"]) == (b"{raw", None)
    assert (erase["key"], erase["partition"], erase["t"]) == (None, 3, "site1.user-commands")
    with pytest.raises(TypeError):
        sender.send(t.COMMENTS, "c1", SAMPLES[r.PageTime])
