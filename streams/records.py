"""The contract's records: typed, validated from raw bytes, serialised as UTF-8 JSON.

Agents consume raw bytes and call the ``parse_*`` functions, so a bad record raises
:class:`Rejected` with a reason (it goes to ``dead-letters``) instead of crashing a
deserialiser inside Faust.

Each record's fields carry what the parser enforces as JSON Schema keywords (``spec`` metadata):
streams.contract generates the published schemas from these classes, so the rules are written
once, here, beside the code that enforces them.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import orjson

PAGE_TYPES = "ABCDEFGHIJ"
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 20000
DEFAULT_FILTER = "comments"
MAX_COUNT = 2**53  # exact in a float: what JSON readers in other languages keep
FLOAT_MAX = sys.float_info.max
# What the parser's `page_type.upper() in PAGE_TYPES` accepts: the letters in either case, and
# the dotless i, whose upper case is "I" (tests/test_contract.py checks the whole of Unicode).
PAGE_TYPE_SPELLINGS = (*PAGE_TYPES, *PAGE_TYPES.lower(), "\u0131")


def spec(
    *bases: dict[str, Any],
    required: bool | None = None,
    nullable: bool | None = None,
    **schema: Any,
) -> dict[str, Any]:
    """A field's contract metadata (``field(metadata=spec(...))``): JSON Schema keywords merged
    over the schema of the field's type (keywords naming a `type`, `enum` or `const` replace
    it), after those of `bases`. By default a field without a default is required and an
    optional one may be null (the parsers read null as absent); `required` and `nullable`
    override that where a parser differs."""
    out: dict[str, Any] = {"schema": {}}
    for base in bases:
        out["schema"].update(base["schema"])
        out.update({k: v for k, v in base.items() if k != "schema"})
    out["schema"].update(schema)
    if required is not None:
        out["required"] = required
    if nullable is not None:
        out["nullable"] = nullable
    return out


# An id on the wire: a string of 1..MAX_ID_CHARS characters, or an integer (read as its decimal
# string). Ids the system writes are strings.
ID = spec(
    type=["string", "integer"],
    minLength=1,
    maxLength=MAX_ID_CHARS,
    description=f"1..{MAX_ID_CHARS} characters; an integer is read as its decimal string",
)
STRING_ID = spec(minLength=1, maxLength=MAX_ID_CHARS)
NUMBER = spec(minimum=-FLOAT_MAX, maximum=FLOAT_MAX)  # finite: no infinity, nothing beyond
TS = spec(NUMBER, description="epoch seconds")
TEXT = spec(maxLength=MAX_TEXT_CHARS)


def bounded(low: int, high: int = MAX_COUNT, **schema: Any) -> dict[str, Any]:
    """An integer field the parser bounds to low..high."""
    return spec(minimum=low, maximum=high, **schema)


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
    # JSON Schema keywords of the whole record (alternative forms the parser also reads,
    # relations between fields), merged into the schema generated from the fields.
    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}  # type: ignore[call-overload]

    def dumps(self) -> bytes:
        return dumps_json(self.to_dict(), strict=True)


@dataclass(frozen=True, slots=True)
class PageTime(_Record):
    """One page view on `page-times`: the seconds a user spent on a page of type A..J."""

    # The browser beacon (SPEC §3.1) is read too: `metric` "time_spent" and `time_spent` for
    # `seconds`.
    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "properties": {
            "metric": {"const": "time_spent", "description": "the browser beacon's form"},
        },
        "if": {"required": ["metric"]},
        "then": {
            "required": ["time_spent"],
            "properties": {
                "time_spent": {"type": "number", "exclusiveMinimum": 0, "maximum": FLOAT_MAX}
            },
        },
        "else": {"required": ["seconds"]},
    }

    user_id: str = field(metadata=spec(ID))
    page_type: str = field(
        metadata=spec(
            enum=list(PAGE_TYPE_SPELLINGS), description="A..J (written upper case once read)"
        )
    )
    seconds: float = field(
        metadata=spec(
            required=False,  # the beacon's time_spent stands for it
            nullable=False,
            exclusiveMinimum=0,
            maximum=FLOAT_MAX,
            description="seconds on the page: above 0, at most SMARTSTREAM_MAX_SECONDS",
        )
    )
    event_id: str | None = field(default=None, metadata=spec(ID))
    ts: float | None = field(default=None, metadata=TS)


@dataclass(frozen=True, slots=True)
class NewUser(_Record):
    """A user joined (`new-users`)."""

    user_id: str = field(metadata=spec(ID))
    age: int | None = field(default=None, metadata=bounded(0, 150))
    sex: str | None = field(
        default=None,
        metadata=spec(enum=["M", "F", 0, 1], description='"M" or "F" (the original 0 / 1)'),
    )
    avg1: float | None = field(default=None, metadata=NUMBER)
    ts: float | None = field(default=None, metadata=TS)


@dataclass(frozen=True, slots=True)
class Comment(_Record):
    """A comment to moderate (`comments`)."""

    comment_id: str = field(metadata=spec(ID))
    text: str = field(metadata=TEXT)
    user_id: str | None = field(default=None, metadata=spec(ID))
    filter: str = field(
        default=DEFAULT_FILTER, metadata=spec(ID, description="the spam filter's name")
    )
    ts: float | None = field(default=None, metadata=TS)


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingComment(_Record):
    """A comment waiting for a moderator (`moderation-queue`); a tombstone once decided or
    erased. The comment's fields, read as a comment is, with the score that made it pending."""

    comment_id: str = field(metadata=spec(ID))
    text: str = field(metadata=TEXT)
    user_id: str | None = field(default=None, metadata=spec(ID))
    filter: str = field(
        default=DEFAULT_FILTER, metadata=spec(ID, description="the spam filter's name")
    )
    score: float = field(metadata=spec(minimum=0, maximum=1))
    model_version: int = field(metadata=bounded(1, MAX_COUNT - 1))
    pending_since: float = field(metadata=TS)


def parse_pending_comment(obj: dict[str, Any]) -> PendingComment:
    comment = parse_comment(obj)
    score = _number(obj, "score", required=True)
    if not 0 <= score <= 1:  # type: ignore[operator]
        raise Rejected("score must be in [0, 1]")
    return PendingComment(
        comment_id=comment.comment_id,
        text=comment.text,
        user_id=comment.user_id,
        filter=comment.filter,
        score=score,  # type: ignore[arg-type]
        model_version=_int(obj, "model_version", 1, MAX_COUNT - 1),
        pending_since=_number(obj, "pending_since", required=True),  # type: ignore[arg-type]
    )


@dataclass(frozen=True, slots=True)
class CommentReview(_Record):
    """A moderator's verdict (`comment-reviews`): a training label."""

    comment_id: str = field(metadata=spec(ID))
    is_spam: bool
    reviewer: str | None = field(default=None, metadata=spec(ID))
    ts: float | None = field(default=None, metadata=TS)


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

    user_id: str = field(metadata=STRING_ID)
    cluster: str = field(metadata=spec(minLength=1, description="the cluster's label"))
    model_version: int = field(metadata=bounded(1))
    atypical: bool | None = field(
        default=None, metadata=spec(description="null while the user has no atypical metric")
    )
    ts: float | None = field(default=None, metadata=TS)


@dataclass(frozen=True, slots=True)
class CommentLabel(_Record):
    """A comment's label under a model version (`comment-labels`). "labelled": the filter
    decided. "unknown": no model yet (or a score that is not finite), `is_spam` and `score`
    null; a comment is never dropped for want of a model. "pending": the score is in the
    uncertain band, `is_spam` null until a person decides. "reviewed": a moderator's verdict
    in `is_spam`, the model's score and version kept."""

    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "allOf": [
            {
                "if": {"properties": {"state": {"const": state}}},
                "then": {"properties": {"is_spam": {"type": spam}, "score": {"type": score}}},
            }
            for state, spam, score in (
                ("labelled", "boolean", "number"),
                ("unknown", "null", "null"),
                ("pending", "null", "number"),
                ("reviewed", "boolean", "number"),
            )
        ]
    }

    comment_id: str = field(metadata=STRING_ID)
    is_spam: bool | None
    score: float | None = field(
        metadata=spec(minimum=0, maximum=1, description="calibrated probability of spam")
    )
    filter: str = field(metadata=STRING_ID)
    model_version: int = field(metadata=bounded(0, description="0: no model yet"))
    ts: float = field(metadata=TS)
    state: str = field(metadata=spec(enum=["labelled", "unknown", "pending", "reviewed"]))

    def to_dict(self) -> dict[str, Any]:
        """Every field, nulls included: "unknown" labels say so with null values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# A dead letter keeps this much of the refused record's bytes (with their length and sha256):
# enough to read what was refused, and escaped binary cannot push the letter past the topic's
# size limit (a 400 KB binary payload became 1.37 MB after escaping).
DEAD_LETTER_PREFIX_BYTES = 1024


@dataclass(frozen=True, slots=True)
class DeadLetter(_Record):
    """A refused record on `dead-letters` (keyed by the record's own key): where it came from,
    why it was refused, and a bounded view of its bytes."""

    topic: str = field(metadata=spec(minLength=1))
    partition: int = field(metadata=bounded(0))
    offset: int = field(metadata=bounded(0))
    error: str = field(metadata=spec(maxLength=1000, description="the reason"))
    payload: str = field(
        metadata=spec(
            description=f"the first {DEAD_LETTER_PREFIX_BYTES} bytes, decoded as UTF-8 with "
            "undecodable bytes escaped as \\xNN"
        )
    )
    payload_bytes: int = field(metadata=bounded(0, description="the whole record's length"))
    payload_sha256: str = field(metadata=spec(pattern="^[0-9a-f]{64}$"))
    payload_truncated: bool


def dead_letter(
    topic: str, partition: int, offset: int, error: str, payload: bytes | None
) -> bytes:
    """The `dead-letters` value: where the record came from, why it was refused, and a bounded
    view of its bytes (`payload`: the first DEAD_LETTER_PREFIX_BYTES, decoded with escapes;
    `payload_bytes` and `payload_sha256` identify the whole)."""
    raw = payload or b""
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        error=error[:1000],
        payload=raw[:DEAD_LETTER_PREFIX_BYTES].decode("utf-8", errors="backslashreplace"),
        payload_bytes=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        payload_truncated=len(raw) > DEAD_LETTER_PREFIX_BYTES,
    ).dumps()


# ---------------------------------------------------------------------------------------------
# Internal topics: validated like the contract's, so no record on any topic a worker reads can
# raise anything but Rejected.


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
    names a version on `models` (validated there), never carries the model itself. (The
    previous release's form, the model document in `model` and no `version`, is still read and
    is not part of the schema.)"""

    model: str = field(metadata=spec(ID))
    version: int = field(metadata=bounded(1))
    action: str = field(
        default="reassign", metadata=spec(const="reassign", required=True, nullable=False)
    )


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

    model: str = field(metadata=spec(ID))
    reason: str = field(default="request", metadata=spec(ID))
    requests: int = field(default=1, metadata=bounded(1, nullable=False))
    ts: float | None = field(default=None, metadata=TS)
    action: str = field(default="run", metadata=spec(const="run", nullable=False))


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
class RollbackRequest(_Record):
    """`control`: republish version `version` of `model` as a new version (streams.lifecycle);
    the trainer checks that the version is in the history."""

    model: str = field(metadata=spec(ID))
    version: int = field(metadata=bounded(1, description="a version in the model's history"))
    ts: float | None = field(default=None, metadata=TS)
    action: str = field(
        default="rollback", metadata=spec(const="rollback", required=True, nullable=False)
    )


def parse_control(obj: dict[str, Any]) -> RunRequest | RollbackRequest:
    """A `control` record: a run request (`action` "run" or absent) or a rollback."""
    if obj.get("action") != "rollback":
        return parse_run_request(obj)
    return RollbackRequest(
        model=_id(obj, "model"),  # type: ignore[arg-type]
        version=_int(obj, "version", 1),
        ts=_number(obj, "ts"),
    )


@dataclass(frozen=True, slots=True)
class CounterTotal(_Record):
    """`counter-increments`: a partition's absolute total for a model's counter, with the
    partition's extra figures (a filter's confusion counts)."""

    model: str = field(metadata=spec(ID))
    partition: int = field(metadata=bounded(0, 1_000_000))
    total: int = field(metadata=bounded(0))
    extra: dict[str, int] | None = field(
        default=None,
        metadata=spec(
            maxProperties=32,
            additionalProperties={"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
        ),
    )


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

    filter: str = field(metadata=spec(ID))
    text: str = field(metadata=TEXT)
    is_spam: bool
    source: str | None = field(default=None, metadata=TEXT)
    comment_id: str | None = field(default=None, metadata=spec(ID))
    reviewer: str | None = field(default=None, metadata=spec(ID))

    def pretraining_key(self) -> str:
        """Its key on `pretraining`: a text is kept once per filter (compaction)."""
        return f"{self.filter}:{hashlib.sha1(self.text.encode()).hexdigest()}"


def parse_training_example(obj: dict[str, Any]) -> PretrainingExample:
    return PretrainingExample(
        filter=_id(obj, "filter"),  # type: ignore[arg-type]
        text=_text(obj, "text", True, MAX_TEXT_CHARS),  # type: ignore[arg-type]
        is_spam=_bool(obj, "is_spam"),
        source=_text(obj, "source", False, MAX_TEXT_CHARS),
        comment_id=_id(obj, "comment_id", required=False),
        reviewer=_id(obj, "reviewer", required=False),
    )


@dataclass(frozen=True, slots=True)
class Erase(_Record):
    """Erase a user (`DELETE /users/{id}`, `smartstream erase`): on `user-commands` to the
    user's partition (the profile, its assignment, its Redis key) and on `comment-commands` to
    every partition (the user's comments and their training examples)."""

    user_id: str = field(metadata=spec(ID))
    erasure_id: str = field(metadata=spec(ID))
    action: str = field(
        default="erase", metadata=spec(const="erase", required=True, nullable=False)
    )


def parse_user_command(obj: dict[str, Any]) -> Reassign | Erase:
    """A `user-commands` record: re-assign with a model version, or erase a user."""
    if obj.get("action") == "erase":
        return parse_erase(obj)
    return parse_reassign(obj)


def parse_erase(obj: dict[str, Any]) -> Erase:
    if obj.get("action") != "erase":
        raise Rejected(f"unknown command {str(obj.get('action'))[:40]!r}")
    return Erase(user_id=_id(obj, "user_id"), erasure_id=_id(obj, "erasure_id"))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Erasure(_Record):
    """`erasures` (compacted, key: erasure id): the fact that a user was erased, when, without
    the user's id or any of the user's data."""

    erasure_id: str = field(metadata=STRING_ID)
    ts: float = field(metadata=TS)


def document_version(document: dict[str, Any]) -> int:
    """The version of a model document on `models` (every kind's loader checks it first): a
    positive integer that JSON readers in other languages keep exactly."""
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < MAX_COUNT:
        raise Rejected(f"version must be a positive integer, got {str(version)[:40]}")
    return version


# The deployment fields a publishing run writes into the estimator objects of a model document
# (the `models` wire format): the estimators hold hyperparameters and fitted state only, so each
# loader takes these out, checked, before the estimator loads the rest.
STAMP_TIMES = ("trained_at", "duration_s")


def unstamp(
    state: Any, where: str, version: int, *, exact: bool = True, name: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(The estimator's own document, its deployment fields) from the `where` object of a model
    document of version `version`. Its version must be the document's, or with `exact` False no
    newer (a clustering rollback renumbers the mixture only); its name, when `name` is given,
    that one; its times non-negative numbers."""
    if not isinstance(state, dict):
        raise Rejected(f"{where} must be an object")
    own = dict(state)
    stamps = {"version": own.pop("version", None)}
    found = stamps["version"]
    valid = isinstance(found, int) and not isinstance(found, bool)
    if not valid or not (found == version if exact else 0 <= found <= version):
        raise Rejected(f"{where} version {str(found)[:40]} is not the document's {version}")
    if name is not None:
        stamps["name"] = own.pop("name", None)
        if stamps["name"] != name:
            raise Rejected(f"{where} name {str(stamps['name'])[:40]!r} is not {name!r}")
    for key in STAMP_TIMES:
        if key in own:
            stamps[key] = own.pop(key)
            figure = finite_or_none(stamps[key])
            if figure is None or figure < 0:
                raise Rejected(f"{where} {key} must be a non-negative number")
    return own, stamps


# Readers of a model document's display figures (GET /models): a figure of the wrong type shows
# as null; the whole document is validated by its loader before it is ever served.


def finite_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def count_or_none(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_COUNT
    return value if ok else None


def object_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
