"""Validation of the contract's records and the pure profile / counter logic."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from streams.profiles import (
    already_applied,
    apply_page_time,
    mark_applied,
    new_profile,
    public_view,
)
from streams.records import (
    DEAD_LETTER_PREFIX_BYTES,
    ClusterAssignment,
    Reassign,
    Rejected,
    dead_letter,
    dumps_json,
    loads_object,
    parse_comment,
    parse_comment_review,
    parse_counter_total,
    parse_new_user,
    parse_page_time,
    parse_reassign,
    parse_run_request,
    parse_training_example,
)
from tests.streamdata import BAD_NEW_USERS, BAD_PAGE_TIMES


def page_time(raw: bytes):
    return parse_page_time(loads_object(raw, 65536), 86400)


@pytest.mark.parametrize(("raw", "reason"), BAD_PAGE_TIMES)
def test_bad_page_times_are_rejected_with_their_reason(raw, reason):
    with pytest.raises(Rejected, match=reason.replace("(", r"\(").replace("'", ".")):
        page_time(raw.replace(b"KEY", b"u1"))


@pytest.mark.parametrize(("raw", "reason"), BAD_NEW_USERS)
def test_bad_new_users_are_rejected_with_their_reason(raw, reason):
    with pytest.raises(Rejected, match=reason.replace("'", ".")):
        parse_new_user(loads_object(raw.replace(b"KEY", b"u1"), 65536))


def test_page_type_is_an_exact_letter_not_a_substring():
    for bad in ("AB", "abc", "K", " A", "", "AJ"):
        with pytest.raises(Rejected):
            page_time(json.dumps({"user_id": "1", "page_type": bad, "seconds": 2}).encode())
    assert page_time(b'{"user_id": "1", "page_type": "c", "seconds": 2}').page_type == "C"


def test_beacon_and_integer_ids_are_accepted():
    beacon = b'{"metric": "time_spent", "user_id": 17, "page_type": "B", "time_spent": 3.5}'
    event = page_time(beacon)
    assert (event.user_id, event.page_type, event.seconds) == ("17", "B", 3.5)


def test_new_user_sex_accepts_the_original_choices():
    assert parse_new_user({"user_id": "1", "sex": 1}).sex == "F"
    assert parse_new_user({"user_id": "1", "sex": 0}).sex == "M"
    with pytest.raises(Rejected):
        parse_new_user({"user_id": "1", "sex": True})


def test_comment_review_and_assignment_records():
    assert parse_comment({"comment_id": 5, "text": "hi"}).filter == "comments"
    with pytest.raises(Rejected):
        parse_comment({"comment_id": "5"})
    assert parse_comment_review({"comment_id": "5", "is_spam": False}).is_spam is False
    with pytest.raises(Rejected):
        parse_comment_review({"comment_id": "5", "is_spam": "yes"})
    a = ClusterAssignment("1", "B", 3, None, 1.5)
    assert json.loads(a.dumps()) == {"user_id": "1", "cluster": "B", "model_version": 3, "ts": 1.5}


def test_running_means_equal_plain_means():
    profile = new_profile("u")
    seconds = [3.0, 17.5, 0.25, 1200.0, 42.0]
    for i, s in enumerate(seconds):
        apply_page_time(
            profile,
            page_time(
                json.dumps({"user_id": "u", "page_type": "AB"[i % 2], "seconds": s}).encode()
            ),
        )
    view = public_view(profile)
    assert view["visits_pages"] == 5 and view["visits_pages_a"] == 3 and view["visits_pages_b"] == 2
    assert view["avg_time_pages"] == pytest.approx(sum(seconds) / 5, rel=1e-12)
    assert view["avg_time_pages_a"] == pytest.approx((3.0 + 0.25 + 42.0) / 3, rel=1e-12)
    assert view["avg_time_pages_c"] == 0.0 and "offsets" not in view
    assert math.isfinite(view["avg_time_pages_b"])


def test_lone_surrogates_are_refused_and_never_break_the_encoder():
    """JSON may escape a lone surrogate ("\\ud800"); no UTF-8 key or value can hold it."""
    with pytest.raises(Rejected, match="user_id is not valid Unicode"):
        page_time(b'{"user_id": "u\\ud800", "page_type": "A", "seconds": 3}')
    with pytest.raises(Rejected, match="text is not valid Unicode"):
        parse_comment(loads_object(b'{"comment_id": "c1", "text": "hi \\udfff"}', 65536))
    assert json.loads(dumps_json({"x": "a\ud800"})) == {"x": "a\ud800"}  # the stdlib fallback
    assert dumps_json({"x": 1.5}) == b'{"x":1.5}'


HUGE_DIGITS = "9" * 400


@pytest.mark.parametrize("field", ["seconds", "ts", "time_spent"])
def test_numbers_outside_float_range_are_rejections_not_overflow_errors(field):
    beacon = '"metric": "time_spent", ' if field == "time_spent" else ""
    raw = f'{{{beacon}"user_id": "u", "page_type": "A", "seconds": 3, "{field}": {HUGE_DIGITS}}}'
    with pytest.raises(Rejected, match="outside the range of a float"):
        page_time(raw.encode())
    with pytest.raises(Rejected, match="avg1 is outside the range of a float"):
        parse_new_user(loads_object(f'{{"user_id": "u", "avg1": {HUGE_DIGITS}}}'.encode(), 65536))


def test_internal_records_are_validated():
    assert parse_reassign({"action": "reassign", "model": "clustering", "version": 3}).version == 3
    legacy = {"action": "reassign", "model": {"name": "clustering", "version": 2, "mixture": {}}}
    assert parse_reassign(legacy) == Reassign("clustering", 2)
    assert parse_run_request({"action": "run", "model": "clustering"}).requests == 1
    total = parse_counter_total({"model": "m", "partition": 2, "total": 7, "extra": {"tp": 1}})
    assert (total.partition, total.total, total.extra) == (2, 7, {"tp": 1})
    for bad in (
        lambda: parse_reassign({"action": "reassign", "model": "clustering", "version": 10**400}),
        lambda: parse_reassign({"action": "reassign", "model": "clustering", "version": 1.5}),
        lambda: parse_reassign({"action": "reassign", "model": {"version": 2}}),
        lambda: parse_run_request({"model": "m", "requests": True}),
        lambda: parse_counter_total({"model": "m", "partition": 0, "total": math.inf}),
        lambda: parse_counter_total({"model": "m", "partition": 0, "total": 1, "extra": [1]}),
        lambda: parse_training_example({"filter": "f", "text": "t", "is_spam": "no"}),
    ):
        with pytest.raises(Rejected):
            bad()


def test_dead_letters_carry_a_bounded_payload():
    payload = bytes(range(256)) * 1600  # 400 KB of binary: 1.37 MB once escaped whole
    letter = json.loads(dead_letter("page-times", 3, 9, "bad", payload))
    assert len(letter["payload"].encode()) < 5 * DEAD_LETTER_PREFIX_BYTES
    assert letter["payload_bytes"] == len(payload)
    assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert letter["payload_truncated"] is True
    small = json.loads(dead_letter("t", 0, 1, "bad", b'{"a": 1}'))
    assert (small["payload"], small["payload_truncated"]) == ('{"a": 1}', False)


def test_applied_offsets_are_per_topic_partition():
    profile = new_profile("u")
    mark_applied(profile, "page-times", 1, 7)
    assert already_applied(profile, "page-times", 1, 7)
    assert not already_applied(profile, "page-times", 0, 5)  # another partition: not a replay
    legacy = {**new_profile("v"), "offsets": {"page-times": 9}}  # rows of the previous release
    assert already_applied(legacy, "page-times", 2, 9)
    mark_applied(legacy, "page-times", 2, 10)
    assert legacy["offsets"] == {"page-times:2": 10}
