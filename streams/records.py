"""The contract's records: typed, validated from raw bytes, serialised as UTF-8 JSON.

Agents consume raw bytes and call the ``parse_*`` functions, so a bad record raises
:class:`Rejected` with a reason (it goes to ``dead-letters``) instead of crashing a
deserialiser inside Faust.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import orjson

PAGE_TYPES = "ABCDEFGHIJ"
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 20000
DEFAULT_FILTER = "comments"


class Rejected(ValueError):
    """A record that cannot be processed; the message is the dead-letter reason."""


def loads_object(raw: bytes | str, max_bytes: int) -> dict[str, Any]:
    """Decode a JSON object, refusing oversized, malformed, deep or non-object payloads."""
    size = len(raw)
    if size > max_bytes:
        raise Rejected(f"payload too large: {size} bytes > {max_bytes}")
    try:
        value = orjson.loads(raw)  # the fast path: a third of the stdlib's time
    except orjson.JSONDecodeError:
        value = _stdlib_loads(raw)  # what orjson refuses (NaN, huge integers...) or its reason
    if not isinstance(value, dict):
        raise Rejected(f"expected a JSON object, got {type(value).__name__}")
    return value


def dumps_json(value: Any, strict: bool = False) -> bytes:
    """JSON bytes, by orjson (the stdlib encoder was a third of the hot path's CPU); the stdlib
    takes what orjson refuses: strings with lone surrogates, which hostile input can carry.
    `strict` (model documents): the stdlib, refusing NaN and infinities with ValueError where
    orjson would write null, so a broken fit fails its run instead of publishing a document
    that every worker refuses."""
    if strict:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def _stdlib_loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise Rejected("malformed JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected(f"malformed JSON: {exc}") from None


def _id(obj: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise Rejected(f"missing field {name!r}")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Rejected(f"{name} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_CHARS:
        raise Rejected(f"{name} must have 1..{MAX_ID_CHARS} characters")
    return _unicode(name, value)


def _number(obj: dict[str, Any], name: str, required: bool = False) -> float | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise Rejected(f"missing field {name!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(f"{name} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an integer of hundreds of digits (the stdlib parser's output)
        raise Rejected(f"{name} is outside the range of a float") from None
    if not math.isfinite(value):
        raise Rejected(f"{name} must be finite, got {value}")
    return value


def _text(obj: dict[str, Any], name: str, required: bool, limit: int) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise Rejected(f"missing field {name!r}")
        return None
    if not isinstance(value, str):
        raise Rejected(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise Rejected(f"{name} longer than {limit} characters")
    return _unicode(name, value)


def _unicode(name: str, value: str) -> str:
    """Refuse lone surrogates (JSON's "\\ud800" escapes): they cannot be encoded as UTF-8, the
    encoding of every key and value this system writes."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise Rejected(f"{name} is not valid Unicode (lone surrogate)") from None
    return value


def _bool(obj: dict[str, Any], name: str) -> bool:
    value = obj.get(name)
    if not isinstance(value, bool):
        raise Rejected(f"{name} must be true or false")
    return value


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}  # type: ignore[call-overload]

    def dumps(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class PageTime(_Record):
    """One page view on `page-times`: the seconds a user spent on a page of type A..J."""

    user_id: str
    page_type: str
    seconds: float
    event_id: str | None = None
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class NewUser(_Record):
    """A user joined (`new-users`)."""

    user_id: str
    age: int | None = None
    sex: str | None = None
    avg1: float | None = None
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class Comment(_Record):
    """A comment to moderate (`comments`)."""

    comment_id: str
    text: str
    user_id: str | None = None
    filter: str = DEFAULT_FILTER
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class CommentReview(_Record):
    """A moderator's verdict (`comment-reviews`): a training label."""

    comment_id: str
    is_spam: bool
    reviewer: str | None = None
    ts: float | None = None


def parse_page_time(obj: dict[str, Any], max_seconds: float) -> PageTime:
    """Validate a page-time event; also accepts the browser beacon of SPEC §3.1."""
    if "metric" in obj:
        if obj["metric"] != "time_spent":
            raise Rejected(f"unsupported metric {obj['metric']!r}")
        obj = {**obj, "seconds": obj.get("time_spent")}
    user_id = _id(obj, "user_id")
    page_type = obj.get("page_type")
    if not isinstance(page_type, str) or len(page_type) != 1 or page_type.upper() not in PAGE_TYPES:
        raise Rejected(f"page_type must be one letter A..J, got {str(page_type)[:40]!r}")
    seconds = _number(obj, "seconds", required=True)
    assert seconds is not None
    if seconds <= 0:
        raise Rejected(f"seconds must be positive, got {seconds}")
    if seconds > max_seconds:
        raise Rejected(f"seconds {seconds} above the cap {max_seconds}")
    return PageTime(
        user_id=user_id,  # type: ignore[arg-type]
        page_type=page_type.upper(),
        seconds=seconds,
        event_id=_id(obj, "event_id", required=False),
        ts=_number(obj, "ts"),
    )


def parse_new_user(obj: dict[str, Any]) -> NewUser:
    """Validate a new-user event; sex accepts "M"/"F" or the original choices 0/1."""
    age = obj.get("age")
    if age is not None and (
        isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 150
    ):
        raise Rejected(f"age must be an integer 0..150, got {str(age)[:40]!r}")
    sex = obj.get("sex")
    if sex is not None:
        if type(sex) is int:  # the original choices; bools and other types are refused
            sex = {0: "M", 1: "F"}.get(sex)
        if sex not in ("M", "F"):
            raise Rejected(f"sex must be 'M' or 'F' (or 0/1), got {str(obj.get('sex'))[:40]!r}")
    return NewUser(
        user_id=_id(obj, "user_id"),  # type: ignore[arg-type]
        age=age,
        sex=sex,
        avg1=_number(obj, "avg1"),
        ts=_number(obj, "ts"),
    )


def parse_comment(obj: dict[str, Any]) -> Comment:
    filter_name = _id(obj, "filter", required=False) or DEFAULT_FILTER
    return Comment(
        comment_id=_id(obj, "comment_id"),  # type: ignore[arg-type]
        text=_text(obj, "text", True, MAX_TEXT_CHARS),  # type: ignore[arg-type]
        user_id=_id(obj, "user_id", required=False),
        filter=filter_name,
        ts=_number(obj, "ts"),
    )


def parse_comment_review(obj: dict[str, Any]) -> CommentReview:
    return CommentReview(
        comment_id=_id(obj, "comment_id"),  # type: ignore[arg-type]
        is_spam=_bool(obj, "is_spam"),
        reviewer=_id(obj, "reviewer", required=False),
        ts=_number(obj, "ts"),
    )


@dataclass(frozen=True, slots=True)
class ClusterAssignment(_Record):
    """A user's cluster and atypical flag under a model version (`cluster-assignments`)."""

    user_id: str
    cluster: str
    model_version: int
    atypical: bool | None = None
    ts: float | None = None


# A dead letter keeps this much of the refused record's bytes (with their length and sha256):
# enough to read what was refused, and escaped binary cannot push the letter past the topic's
# size limit (a 400 KB binary payload became 1.37 MB after escaping).
DEAD_LETTER_PREFIX_BYTES = 1024


def dead_letter(
    topic: str, partition: int, offset: int, error: str, payload: bytes | None
) -> bytes:
    """The `dead-letters` value: where the record came from, why it was refused, and a bounded
    view of its bytes (`payload`: the first DEAD_LETTER_PREFIX_BYTES, decoded with escapes;
    `payload_bytes` and `payload_sha256` identify the whole)."""
    raw = payload or b""
    doc = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "error": error[:1000],
        "payload": raw[:DEAD_LETTER_PREFIX_BYTES].decode("utf-8", errors="backslashreplace"),
        "payload_bytes": len(raw),
        "payload_sha256": hashlib.sha256(raw).hexdigest(),
        "payload_truncated": len(raw) > DEAD_LETTER_PREFIX_BYTES,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# Internal topics: validated like the contract's, so no record on any topic a worker reads can
# raise anything but Rejected.

MAX_COUNT = 2**53  # exact in a float: what JSON readers in other languages keep


def _int(obj: dict[str, Any], name: str, low: int = 0, high: int = MAX_COUNT) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Rejected(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise Rejected(f"{name} must be in {low}..{high}")
    return value


@dataclass(frozen=True, slots=True)
class Reassign(_Record):
    """`user-commands`: re-assign a partition's users once the model's `version` serves. It
    names a version on `models` (validated there), never carries the model itself."""

    model: str
    version: int
    action: str = "reassign"


def parse_reassign(obj: dict[str, Any]) -> Reassign:
    if obj.get("action") != "reassign":
        raise Rejected(f"unknown command {str(obj.get('action'))[:40]!r}")
    version = obj.get("version")
    legacy = obj.get("model")
    if version is None and isinstance(legacy, dict):  # the previous release sent the document
        return Reassign(_id(legacy, "name") or "", _int(legacy, "version", 1))  # type: ignore[arg-type]
    return Reassign(_id(obj, "model"), _int(obj, "version", 1))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RunRequest(_Record):
    """`control`: ask the trainer for a run of `model` (`requests`: threshold crossings)."""

    model: str
    reason: str
    requests: int = 1
    ts: float | None = None
    action: str = "run"


def parse_run_request(obj: dict[str, Any]) -> RunRequest:
    if obj.get("action", "run") != "run":
        raise Rejected(f"unknown control action {str(obj.get('action'))[:40]!r}")
    requests = obj.get("requests", 1)
    return RunRequest(
        model=_id(obj, "model"),  # type: ignore[arg-type]
        reason=_id(obj, "reason", required=False) or "request",
        requests=_int({"requests": requests}, "requests", 1),
        ts=_number(obj, "ts"),
    )


@dataclass(frozen=True, slots=True)
class CounterTotal(_Record):
    """`counter-increments`: a partition's absolute total for a model's counter, with the
    partition's extra figures (a filter's confusion counts)."""

    model: str
    partition: int
    total: int
    extra: dict[str, int] | None = None


def parse_counter_total(obj: dict[str, Any]) -> CounterTotal:
    extra = obj.get("extra")
    if extra is not None:
        if not isinstance(extra, dict) or len(extra) > 32:
            raise Rejected("extra must be an object of at most 32 counts")
        extra = {_unicode("extra", str(k))[:MAX_ID_CHARS]: _int(extra, k) for k in extra}
    return CounterTotal(
        model=_id(obj, "model"),  # type: ignore[arg-type]
        partition=_int(obj, "partition", 0, 1_000_000),
        total=_int(obj, "total"),
        extra=extra,
    )


@dataclass(frozen=True, slots=True)
class PretrainingExample(_Record):
    """`pretraining` (key `filter:sha1(text)`) and `training-examples` (key comment id): a
    labelled text of a spam filter."""

    filter: str
    text: str
    is_spam: bool
    source: str | None = None
    comment_id: str | None = None
    reviewer: str | None = None


def parse_training_example(obj: dict[str, Any]) -> PretrainingExample:
    return PretrainingExample(
        filter=_id(obj, "filter"),  # type: ignore[arg-type]
        text=_text(obj, "text", True, MAX_TEXT_CHARS),  # type: ignore[arg-type]
        is_spam=_bool(obj, "is_spam"),
        source=_text(obj, "source", False, MAX_TEXT_CHARS),
        comment_id=_id(obj, "comment_id", required=False),
        reviewer=_id(obj, "reviewer", required=False),
    )
