"""The moderator's queue (streams/review.py) without a broker: `moderation-queue` records as
moderation writes them are read back to the same entries, hostile records are refused with a
reason while the records around them apply, and a forged paging cursor is a 400, not a 500."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest

from streams.cli import load_worker_modules

load_worker_modules()

from streams import moderation, review  # noqa: E402  (after the worker's modules registered)
from streams.records import Rejected  # noqa: E402

HUGE = "1" + "0" * 400  # an integer no float holds: float() raises OverflowError


def pending_row(comment_id: str, since: float, user_id: str | None = "u1") -> dict[str, Any]:
    return {
        "comment_id": comment_id,
        "text": "is this spam?",
        "user_id": user_id,
        "filter": "comments",
        "score": 0.5,
        "model_version": 3,
        "state": "pending",
        "pending_since": since,
    }


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> review.PendingQueue:
    fresh = review.PendingQueue()
    monkeypatch.setattr(review, "queue", fresh)
    return fresh


def apply(records: list[tuple[bytes, bytes | None]]) -> list[str]:
    refused: list[tuple[Any, str]] = []
    for key, value in records:
        review.apply_record(SimpleNamespace(key=key, value=value), refused)
    return [reason for _, reason in refused]


def test_entries_moderation_writes_read_back_as_the_same_entries(queue: review.PendingQueue):
    rows = {b"c1": pending_row("c1", 100.0), b"c2": pending_row("c2", 50.0, user_id=None)}
    written = moderation.queue_records(rows, {b"c1": None, b"c2": None})
    assert apply(written) == []
    names = ("comment_id", "text", "user_id", "filter", "score", "model_version", "pending_since")
    expected = [{name: rows[key][name] for name in names} for key in (b"c2", b"c1")]
    assert queue.page(None, 10) == expected  # oldest first
    decided = {b"c1": {**rows[b"c1"], "state": "reviewed"}, b"c2": rows[b"c2"]}
    assert apply(moderation.queue_records(decided, rows)) == []  # c1 decided: a tombstone
    assert [e["comment_id"] for e in queue.page(None, 10)] == ["c2"]


@pytest.mark.parametrize(
    "field, raw",
    [("pending_since", HUGE), ("score", HUGE), ("pending_since", '"soon"'), ("score", "1.5")],
)
def test_a_hostile_entry_is_refused_and_the_entries_around_it_apply(
    queue: review.PendingQueue, field: str, raw: str
) -> None:
    good = moderation.queue_records({b"c1": pending_row("c1", 1.0)}, {b"c1": None})
    entry = json.loads(good[0][1])
    hostile = json.dumps({**entry, "comment_id": "c2", field: 0}).replace(
        f'"{field}": 0', f'"{field}": {raw}'
    )
    later = moderation.queue_records({b"c3": pending_row("c3", 2.0)}, {b"c3": None})
    reasons = apply([*good, (b"c2", hostile.encode()), *later])
    assert len(reasons) == 1 and field in reasons[0], reasons
    assert [e["comment_id"] for e in queue.page(None, 10)] == ["c1", "c3"]


def test_a_forged_cursor_is_refused() -> None:
    for forged in (f'[{HUGE}, "c1"]', '["x", "c1"]', "[1.0]"):
        cursor = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
        with pytest.raises(Rejected, match="not a cursor"):
            review.decode_cursor(cursor)
    entry = {"pending_since": 12.5, "comment_id": "c9"}
    assert review.decode_cursor(review.encode_cursor(entry)) == (12.5, "c9")
