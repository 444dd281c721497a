"""The moderator's workflow: the queue of comments waiting for a person, the review route, the
moderator page and the moderation counters.

* Pending comments (a calibrated score inside SMARTSTREAM_MODERATION_PENDING_LOW/HIGH, labelled
  by streams.moderation with `"state": "pending"`) live in the comments table of their
  partition's owner, so no worker knows them all. The owner also writes each one to the compacted
  `moderation-queue` topic (key comment id; a tombstone once decided or erased), before the row,
  and every worker follows that one-partition topic from its start: any worker answers
  GET /moderation/queue from memory, in one order, without asking the others (which a
  scatter-gather over Faust's router would, failing whenever one of them is away).
* POST /comments/{comment_id}/review runs on the owner of the comment's partition (404 for an
  unknown comment) and answers 204 once `comment-reviews` acknowledged the verdict; the owner's
  moderation handler then publishes the final label and the queue's tombstone.
* /metrics and the dashboard's data show the pending count and the labels and verdicts this
  worker published (`smartstream_moderation_labels_total{filter, outcome}`).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from yarl import URL

from streams import topics as t
from streams.app import app, comment_reviews_topic, produce_acknowledged, settings
from streams.auth import Role, html_response, json_body, requires
from streams.ingest import read_json_body
from streams.moderation import QUEUE, comments_table, filters, moderation_outcomes
from streams.records import (
    Rejected,
    finite_or_none,
    parse_comment_review,
)
from streams.trainer import follow_compacted

PAGE = (Path(__file__).parent / "static" / "moderation.html").read_bytes()
OUTCOMES = ("pending", "approved", "rejected", "overturned")
MAX_LIMIT = 500
# A queue entry holds a comment of up to 20,000 characters, each escaped to up to 12 bytes.
MAX_ENTRY_BYTES = 1 << 20
# Set on a request this worker forwarded to the owner of a comment's partition: the owner never
# forwards it again (no ping-pong while a rebalance moves the partition).
ROUTED_HEADER = "X-SmartStream-Routed"


# ---------------------------------------------------------------------------------------------
# The queue


def parse_entry(raw: bytes) -> dict[str, Any]:
    """A `moderation-queue` value, validated like every record a worker reads; every field
    of the record, nulls included (what GET /moderation/queue shows)."""
    return asdict(t.SPECS[t.MODERATION_QUEUE].decode(raw, MAX_ENTRY_BYTES))


class PendingQueue:
    """The pending comments of every partition, oldest first (ties by comment id)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self._order: list[tuple[float, str]] | None = None  # sorted lazily, once per change
        self.loaded = asyncio.Event()  # read up to the topic's end as it was at start

    def put(self, entry: dict[str, Any]) -> None:
        self.entries[entry["comment_id"]] = entry
        self._order = None

    def drop(self, comment_id: str) -> None:
        if self.entries.pop(comment_id, None) is not None:
            self._order = None

    def page(self, after: tuple[float, str] | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` entries after the cursor position `after` (since, comment id): a
        position, not an index, so a page never repeats or skips an entry as others leave."""
        if self._order is None:
            self._order = sorted((e["pending_since"], cid) for cid, e in self.entries.items())
        start = 0 if after is None else bisect.bisect_right(self._order, after)
        return [self.entries[cid] for _, cid in self._order[start : start + limit]]

    def by_filter(self) -> dict[str, int]:
        out = dict.fromkeys(filters, 0)
        for entry in self.entries.values():
            out[entry["filter"]] = out.get(entry["filter"], 0) + 1
        return out


queue = PendingQueue()


def apply_record(record: Any, refused: list[tuple[Any, str]]) -> None:
    """One `moderation-queue` record: an entry, a tombstone, or refused (dead-lettered)."""
    comment_id = (record.key or b"").decode("utf-8", errors="replace")
    if record.value is None:
        queue.drop(comment_id)
        return
    try:
        entry = parse_entry(record.value)
        if entry["comment_id"].encode() != record.key:
            raise Rejected(f"key is not the comment_id {entry['comment_id'][:40]!r}")
    except Rejected as exc:
        refused.append((record, f"bad moderation-queue entry: {exc}"))
        return
    queue.put(entry)


@app.task
async def follow_queue() -> None:
    """Every worker: keep `queue` equal to the `moderation-queue` topic's latest entries."""
    await follow_compacted(QUEUE, queue.loaded, apply_record)


def encode_cursor(entry: dict[str, Any]) -> str:
    raw = json.dumps([entry["pending_since"], entry["comment_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        since, comment_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise Rejected("after: not a cursor this route gave") from None
    if finite_or_none(since) is None or not isinstance(comment_id, str):
        raise Rejected("after: not a cursor this route gave")
    return float(since), comment_id


def page_arguments(query: Any) -> tuple[int, tuple[float, str] | None]:
    """(limit, cursor position) of GET /moderation/queue?limit=N&after=CURSOR."""
    raw = query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise Rejected(f"limit must be an integer 1..{MAX_LIMIT}")
    after = query.get("after")
    return int(raw), decode_cursor(after) if after else None


@app.page("/moderation/queue")
class QueueView(View):
    """The comments waiting for a moderator, oldest first, paged; any worker answers."""

    @requires(Role.SERVER)
    async def get(self, request: Request) -> Response:
        try:
            limit, after = page_arguments(request.query)
        except Rejected as exc:
            return self.json({"error": str(exc)}, status=400)
        if not queue.loaded.is_set():
            return self.json({"error": "the moderation queue is still loading"}, status=503)
        entries = queue.page(after, limit)
        more = len(entries) == limit and bool(queue.page(queue_position(entries[-1]), 1))
        return self.json(
            {
                "entries": entries,
                "next": encode_cursor(entries[-1]) if more else None,
                "pending": len(queue.entries),
            }
        )


def queue_position(entry: dict[str, Any]) -> tuple[float, str]:
    return entry["pending_since"], entry["comment_id"]


# ---------------------------------------------------------------------------------------------
# Reviews


async def forward_to_owner(
    view: View, request: Request, comment_id: str, body: bytes
) -> Response | None:
    """Answer from the worker owning the comment's partition; None when that is this one.

    Faust's table_route forwards a request's method and headers but not its body (faust's
    Router._route_req): a routed POST would reach the owner empty. This forwards the body."""
    topic = comments_table.changelog_topic.get_topic_name()
    if not app.knows_partitions(topic):
        raise ServiceUnavailable()
    try:
        owner = app.router.key_store(comments_table.name, comment_id)
    except KeyError:
        raise ServiceUnavailable() from None
    here = URL(app.conf.canonical_url)
    if (owner.host, owner.port) == (here.host, here.port):
        return None
    if request.headers.get(ROUTED_HEADER):
        raise ServiceUnavailable()  # the partition is moving: the client retries
    headers = {ROUTED_HEADER: "1", "Content-Type": "application/json"}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    url = request.url.with_host(owner.host).with_port(owner.port)
    timeout = aiohttp.ClientTimeout(total=settings.ingest_timeout_seconds + 5)
    try:
        async with app.http_client.post(url, data=body, headers=headers, timeout=timeout) as resp:
            payload = await resp.read()
            return view.bytes(payload, content_type=resp.content_type, status=resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return view.json({"error": f"the comment's worker did not answer: {exc!r}"}, status=503)


def review_record(obj: dict[str, Any], comment_id: str) -> Any:
    """The `comment-reviews` record of a request body, with the path's comment id."""
    if obj.get("comment_id", comment_id) != comment_id:
        raise Rejected("the body's comment_id is not the path's")
    return parse_comment_review({"ts": time.time(), **obj, "comment_id": comment_id})


@app.page("/comments/{comment_id}/review")
class ReviewView(View):
    """A moderator's verdict `{"is_spam": bool, "reviewer": str?}` on a known comment."""

    @requires(Role.SERVER)
    @json_body
    async def post(self, request: Request, comment_id: str) -> Response:
        try:
            review = review_record(await read_json_body(request), comment_id)
        except Rejected as exc:
            return self.json({"error": str(exc)}, status=400)
        forwarded = await forward_to_owner(self, request, comment_id, review.dumps())
        if forwarded is not None:
            return forwarded
        row = comments_table.get(comment_id.encode())
        if row is None or row.get("text") is None:
            return self.json({"error": f"unknown comment {comment_id!r}"}, status=404)
        failure = await produce_acknowledged(
            comment_reviews_topic, comment_id.encode(), review.dumps()
        )
        if failure is not None:
            return self.json({"error": failure}, status=503)
        return self.bytes(b"", status=204)


@app.page("/moderation")
class ModerationPage(View):
    async def get(self, request: Request) -> Response:
        """The page holds no data (its script asks for the server token and sends it as a
        header), so it is served to anyone."""
        return html_response(self, PAGE)


# ---------------------------------------------------------------------------------------------
# Counters


def outcome_counts() -> dict[str, dict[str, int]]:
    """{filter: {outcome: count}} of this worker, every configured filter and outcome listed."""
    names = sorted(set(filters) | {name for name, _ in moderation_outcomes})
    return {n: {o: moderation_outcomes[(n, o)] for o in OUTCOMES} for n in names}


def figures() -> dict[str, Any]:
    """The dashboard's moderation block."""
    oldest = queue.page(None, 1)
    return {
        "band": [settings.moderation_pending_low, settings.moderation_pending_high],
        "pending": len(queue.entries),
        "pending_by_filter": queue.by_filter(),
        "oldest_pending_since": oldest[0]["pending_since"] if oldest else None,
        "outcomes": outcome_counts(),
    }


class ModerationCollector(Collector):
    """Prometheus figures read at scrape time from moderation's counts and the queue."""

    def collect(self) -> Iterator[Any]:
        labels = CounterMetricFamily(
            "smartstream_moderation_labels",
            "Labels and verdicts this worker published: pending labels, moderators' approved "
            "(ham) and rejected (spam) verdicts, overturned published labels",
            labels=["filter", "outcome"],
        )
        for name, counts in outcome_counts().items():
            for outcome, count in counts.items():
                labels.add_metric([name, outcome], count)
        yield labels
        pending = GaugeMetricFamily(
            "smartstream_moderation_pending",
            "Comments waiting for a moderator (the whole queue, as every worker follows it)",
            labels=["filter"],
        )
        for name, count in queue.by_filter().items():
            pending.add_metric([name], count)
        yield pending


REGISTRY.register(ModerationCollector())
