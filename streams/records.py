"""The contract's records: typed, validated from raw bytes, serialised as UTF-8 JSON.

Agents consume raw bytes and call the ``parse_*`` functions, so a bad record raises
:class:`Rejected` with a reason (it goes to ``dead-letters``) instead of crashing a
deserialiser inside Faust.
"""

from __future__ import annotations

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


def dumps_json(value: Any) -> bytes:
    """JSON bytes, by orjson (the stdlib encoder was a third of the hot path's CPU); the stdlib
    takes what orjson refuses: strings with lone surrogates, which hostile input can carry."""
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
    value = float(value)
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


def dead_letter(
    topic: str, partition: int, offset: int, error: str, payload: bytes | None
) -> bytes:
    """The `dead-letters` value: where the record came from, why it was refused, and its bytes."""
    text = "" if payload is None else payload.decode("utf-8", errors="backslashreplace")
    doc = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "error": error,
        "payload": text,
    }
    return json.dumps(doc, separators=(",", ":")).encode()
