"""Per-user profiles: the original UserInfo fields, updated by exact incremental means (SPEC §3.2).

Pure functions on plain dicts (the table's JSON values), so the hot path is testable without Kafka.
Each profile remembers the last offset it applied from each source topic: a replay after a crash
skips what the profile already holds, so an event never counts twice in its user's averages.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from streams.records import PAGE_TYPES, NewUser, PageTime, dumps_json

TYPE_SUFFIXES = tuple(t.lower() for t in PAGE_TYPES)
AVG_FIELDS = ("avg_time_pages", *(f"avg_time_pages_{s}" for s in TYPE_SUFFIXES))
VISIT_FIELDS = ("visits_pages", *(f"visits_pages_{s}" for s in TYPE_SUFFIXES))
PUBLIC_FIELDS = (
    "user_id",
    *AVG_FIELDS,
    *VISIT_FIELDS,
    "age",
    "sex",
    "avg1",
    "cluster",
    "atypical",
    "model_version",
)
_PUBLIC = frozenset(PUBLIC_FIELDS)
_public_values = itemgetter(*PUBLIC_FIELDS)


def new_profile(user_id: str) -> dict[str, Any]:
    profile: dict[str, Any] = {"user_id": user_id}
    for name in AVG_FIELDS:
        profile[name] = 0.0
    for name in VISIT_FIELDS:
        profile[name] = 0
    profile.update(age=None, sex=None, avg1=None, cluster=None, atypical=None, model_version=None)
    profile["offsets"] = {}
    return profile


def _running_mean(profile: dict[str, Any], avg: str, visits: str, seconds: float) -> None:
    n = profile[visits]
    profile[avg] = profile[avg] * n / (n + 1) + seconds / (n + 1)
    profile[visits] = n + 1


def apply_page_time(profile: dict[str, Any], event: PageTime) -> None:
    """One page view moves the all-pages and the per-type average (SPEC §3.2 steps 3-4)."""
    suffix = event.page_type.lower()
    _running_mean(profile, "avg_time_pages", "visits_pages", event.seconds)
    _running_mean(profile, f"avg_time_pages_{suffix}", f"visits_pages_{suffix}", event.seconds)


def apply_new_user(profile: dict[str, Any], event: NewUser) -> None:
    """A new-user event sets the demographic fields it carries; metrics are untouched."""
    for name in ("age", "sex", "avg1"):
        value = getattr(event, name)
        if value is not None:
            profile[name] = value


def _applied_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"  # Kafka topic names cannot hold ":"


def already_applied(profile: dict[str, Any], topic: str, partition: int, offset: int) -> bool:
    """Whether the profile holds this record already. Offsets are per topic-partition: a user's
    records on two partitions (a producer with its own partitioner) are not replays of each
    other. Rows written before this bookkeeping kept one offset per topic: it stands for the
    row's own partition, the only one keyed records reached."""
    offsets = profile["offsets"]
    applied = offsets.get(_applied_key(topic, partition))
    if applied is None:
        applied = offsets.get(topic, -1)
    return offset <= applied


def mark_applied(profile: dict[str, Any], topic: str, partition: int, offset: int) -> None:
    profile["offsets"].pop(topic, None)
    profile["offsets"][_applied_key(topic, partition)] = offset


def public_view(profile: dict[str, Any]) -> dict[str, Any]:
    """The contract's GET /users/{id} record (no internal bookkeeping)."""
    return {name: profile.get(name) for name in PUBLIC_FIELDS}


def encode_row(profile: dict[str, Any]) -> tuple[bytes, bytes]:
    """(the row's JSON, its public view's JSON) from one encoding of the public fields, the
    row's bookkeeping appended: a hot path writes both per touched user (changelog and Redis),
    and encoding was its largest cost (py-spy)."""
    try:  # the C loops of itemgetter, zip and a set difference: the dict comprehensions over
        # ~30 fields were half of the encoding's time
        public = dumps_json(dict(zip(PUBLIC_FIELDS, _public_values(profile), strict=True)))
    except KeyError:  # a row from before a public field existed
        public = dumps_json(public_view(profile))
    internal = {name: profile[name] for name in profile.keys() - _PUBLIC}
    if not internal:
        return public, public
    return public[:-1] + b"," + dumps_json(internal)[1:], public
