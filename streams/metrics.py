"""The metrics pipeline (SPEC §3-§4): page-time and new-user events into the users table,
weighted counters that request re-clusterings, and the HTTP ingestion routes.

Hot path design: the user-keyed topics are delivered in bulk (streams.bulk: a whole fetch per
partition, past Faust's per-message stream path); per batch the handler updates each touched
profile in memory and writes it once (one changelog record per user per batch, produced as whole
Kafka batches), mirrors the batch to Redis in one pipeline, and sends the partition's counter
total.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import faust
from faust.web import Request, Response, View

from streams import topics as t
from streams.app import (
    app,
    batch_producer,
    comments_topic,
    control_topic,
    counter_increments_topic,
    models_ready,
    new_users_topic,
    page_times_topic,
    produce_acknowledged,
    settings,
)
from streams.auth import Role, json_body, requires
from streams.deadletters import letter, send_dead_letter, send_letters
from streams.monitoring import BATCH_SECONDS, EVENTS, LAST_EVENT
from streams.profiles import (
    already_applied,
    apply_new_user,
    apply_page_time,
    mark_applied,
    new_profile,
)
from streams.records import (
    Erase,
    Rejected,
    RunRequest,
    loads_object,
    parse_comment,
    parse_counter_total,
    parse_new_user,
    parse_page_time,
    parse_user_command,
)
from streams.serving import assign, observe_metric, reassigner, serving
from streams.users import load_row, mirror, row_partition, users_table, write_users

log = logging.getLogger(__name__)

CLUSTERING = "clustering"
PAGE_TIMES = settings.topic(t.PAGE_TIMES)
NEW_USERS = settings.topic(t.NEW_USERS)

USER_COMMANDS = settings.topic(t.USER_COMMANDS)
ASSIGNMENTS = settings.topic(t.CLUSTER_ASSIGNMENTS)
RECENT_USERS = 200
# The users this worker touched last, oldest first (an insertion-ordered dict used as a bounded,
# deduplicated queue), for the demo site's user menu.
recent_users: dict[str, None] = {}
# The user-keyed topics share the partition count, so one agent owns a user's whole row and is the
# only writer of the user's `cluster-assignments` records.
user_events = app.topic(
    PAGE_TIMES, NEW_USERS, USER_COMMANDS, key_serializer="raw", value_serializer="raw"
)

counters_table = app.Table(
    "counters",
    default=None,
    partitions=1,
    key_type=bytes,  # raw user-id keys, as on the source topics; JSON values
    help="Weighted counters of the models: count, threshold, requests emitted.",
)


def _parse(record: Any) -> Any:
    """The record's event, or :class:`Rejected`. The key must be the user id: a keyless or
    wrongly keyed record would land in another partition than the user's row."""
    obj = loads_object(record.value or b"", settings.max_payload_bytes)
    if record.topic == PAGE_TIMES:
        event = parse_page_time(obj, settings.max_seconds)
    else:
        event = parse_new_user(obj)
    if record.key != event.user_id.encode():
        key = "null" if record.key is None else repr(record.key[:40])
        raise Rejected(f"key {key} is not the user_id {event.user_id[:40]!r}")
    return event


@app.bulk(user_events)
async def process_user_records(partition: int, records: list[Any]) -> None:
    """One partition's records of one fetch (streams.bulk): apply them, write each touched user
    once, send the partition's counter total, mirror the users to Redis."""
    await models_ready.wait()
    start = time.perf_counter()
    touched: list[dict[str, Any]] = []
    partition_totals[partition] += await _apply_records(partition, records, touched)
    send_total(CLUSTERING, partition, partition_totals[partition])
    for topic, count in Counter(r.topic for r in records).items():
        EVENTS.labels(topic=topic).inc(count)
    remember_users([p["user_id"] for p in touched[-RECENT_USERS:]])
    mirror.flush_soon()
    LAST_EVENT.set(time.time())
    BATCH_SECONDS.labels(agent="users").observe(time.perf_counter() - start)


def remember_users(user_ids: list[str]) -> None:
    """Move these users to the newest end of `recent_users`; O(len(user_ids)) per batch."""
    for user_id in user_ids:
        recent_users.pop(user_id, None)
        recent_users[user_id] = None
    while len(recent_users) > RECENT_USERS:
        del recent_users[next(iter(recent_users))]


class _Batch:
    """One partition's records of one fetch, applied to the touched profiles in memory."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.profiles: dict[bytes, dict[str, Any]] = {}
        self.foreign: set[bytes] = set()  # keys whose rows live in another partition
        self.letters: list[tuple[bytes | None, bytes, int]] = []
        self.weight = 0
        self.erased: dict[bytes, str] = {}  # key -> erasure id
        self.new_metric: list[float] = []

    def profile(self, record: Any, event: Any) -> dict[str, Any] | None:
        """The event's profile, or None (dead-lettered) when the key's row is not in this
        partition (a producer with its own partitioner): co-partitioning is the contract."""
        key = event.user_id.encode()
        profile = self.profiles.get(key)
        if profile is not None:
            return profile
        if key not in self.foreign and row_partition(key) == self.partition:
            profile = load_row(key, self.partition) or new_profile(event.user_id)
            self.profiles[key] = profile
            return profile
        self.foreign.add(key)
        self.letters.append(
            letter(record, f"key's partition is {row_partition(key)}, not {self.partition}")
        )
        return None

    def apply(self, record: Any) -> None:
        try:
            event = _parse(record)
        except Rejected as exc:
            self.letters.append(letter(record, str(exc)))
            return
        profile = self.profile(record, event)
        if profile is None or already_applied(
            profile, record.topic, record.partition, record.offset
        ):
            return
        if record.topic == PAGE_TIMES:
            apply_page_time(profile, event)
            add_profile_weight(profile, settings.clustering_weight_page_time)
            self.weight += settings.clustering_weight_page_time
        else:
            value = getattr(event, settings.atypical_metric, None)
            if profile.get(settings.atypical_metric) is None and value is not None:
                self.new_metric.append(value)
            apply_new_user(profile, event)
            add_profile_weight(profile, settings.clustering_weight_new_user)
            self.weight += settings.clustering_weight_new_user
        mark_applied(profile, record.topic, record.partition, record.offset)

    async def command(self, record: Any) -> None:
        try:
            obj = loads_object(record.value or b"", settings.max_payload_bytes)
            command = parse_user_command(obj)
        except Rejected as exc:
            self.letters.append(letter(record, f"bad user command: {exc}"))
            return
        if isinstance(command, Erase):
            self.erase(record, command)
        elif command.model != CLUSTERING:
            self.letters.append(letter(record, f"unknown model {command.model[:40]!r}"))
        elif await serving.wait_version(command.version):
            # The partition's rows are re-assigned by streams.serving's pass, in slices.
            reassigner.request(self.partition, command.version)
        else:
            self.letters.append(
                letter(record, f"model version {command.version} was never served here")
            )


    def erase(self, record: Any, command: Erase) -> None:
        """Erase the user after this batch's events (a profile the batch made goes too)."""
        key = command.user_id.encode()
        if row_partition(key) != self.partition:
            reason = f"erase: the user's row is not in partition {record.partition}"
            self.letters.append(letter(record, reason))
        else:
            self.erased[key] = command.erasure_id

    async def finish_erasures(self) -> list[tuple[bytes, None]]:
        """Tombstones for the erased users: their assignments now, their rows returned for the
        batch's row write; their Redis keys deleted, the demo's list forgets them."""
        for key in self.erased:
            self.profiles.pop(key, None)
            recent_users.pop(key.decode(), None)
            mirror.stage_delete(mirror.user_key(key.decode()), self.partition)
        await batch_producer.send_routed(ASSIGNMENTS, [(k, None, 0) for k in self.erased])
        return [(key, None) for key in self.erased]


async def _apply_records(partition: int, records: list[Any], touched: list[dict[str, Any]]) -> int:
    """Apply one partition's records, write the changed rows; return the records' counter weight.
    A re-assignment pass over the partition (streams.serving) reads none of its rows meanwhile,
    and the rows a pass has re-assigned but not yet written are waited for."""
    async with reassigner.lock(partition):
        await reassigner.settle(partition, {r.key for r in records})  # keyless: every row
        return await _apply_locked(partition, records, touched)


async def _apply_locked(partition: int, records: list[Any], touched: list[dict[str, Any]]) -> int:
    batch = _Batch(partition)
    for record in records:
        if record.topic == USER_COMMANDS:
            await batch.command(record)
        else:
            batch.apply(record)
    observe_metric(batch.new_metric)
    profiles = batch.profiles
    changed = assign(list(profiles.values()))
    # Effects first (dead letters, assignments), rows second: a crash in between repeats an
    # effect on replay, while the other order could store a row whose effect was never sent.
    await send_letters(batch.letters)
    await batch_producer.send_keyed(
        ASSIGNMENTS, [(a["user_id"].encode(), json.dumps(a).encode()) for a in changed]
    )
    erased = await batch.finish_erasures()
    written = [(key, profile) for key, profile in profiles.items() if key not in batch.erased]
    await write_users(partition, written, erased)
    touched.extend(profile for _, profile in written)
    if erased and serving.mixture is not None:
        # The serving model's dashboard sample names users: a new one that does not.
        await request_run(CLUSTERING, "erasure")
    return batch.weight


# ---------------------------------------------------------------------------------------------
# Weighted counters


# The counter is a function of the users table: each profile carries the weight of the events
# applied to it, each partition's total is the sum over its rows, and workers send these absolute,
# growing totals. A lost or repeated message cannot skew the count: the next total heals it.
partition_totals: dict[int, int] = defaultdict(int)


def add_profile_weight(profile: dict[str, Any], weight: int) -> None:
    profile["weight"] = profile.get("weight", 0) + weight


def send_total(model: str, partition: int, total: int, extra: dict[str, int] | None = None) -> None:
    """A partition's absolute total for a model's counter (see :func:`update_total`)."""
    message = {"model": model, "partition": partition, "total": total, "extra": extra}
    counter_increments_topic.send_soon(key=model.encode(), value=json.dumps(message).encode())


@users_table.on_recover
async def recount_partitions() -> None:
    """After recovery, rebuild the totals of this worker's partitions from the table and resend
    them, so a total that was lost in a crash is delivered again."""
    active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == PAGE_TIMES}
    for partition in active:
        partition_totals[partition] = 0
    for key, profile in users_table.items():
        partition = row_partition(key)
        if partition in active:
            partition_totals[partition] += profile.get("weight", 0)
    for partition in sorted(active):
        send_total(CLUSTERING, partition, partition_totals[partition])


def threshold_of(model: str) -> int:
    """Clustering counts weighted events; a spam filter ("spam:NAME") counts moderators' reviews."""
    if model.startswith("spam:"):
        return settings.moderation_review_threshold
    return settings.clustering_threshold


def stored_counter(model: str) -> dict[str, Any]:
    """A copy of the model's stored counter: the memory store hands out the stored object itself."""
    state = copy.deepcopy(counters_table.get(model.encode()))
    if state is None:
        state = {"model": model, "total": 0, "requests": 0, "partitions": {}, "extras": {}}
    return state


def counter_state(model: str) -> dict[str, Any]:
    """The stored counter with what derives from it: the threshold, the count towards it, and
    the partitions' extra figures summed."""
    state = stored_counter(model)
    threshold = threshold_of(model)
    state["threshold"] = threshold or None
    state["count"] = state["total"] % threshold if threshold > 0 else state["total"]
    summed: dict[str, int] = defaultdict(int)
    for extra in state.get("extras", {}).values():
        for name, value in extra.items():
            summed[name] += value
    state["summed"] = dict(summed)
    return state


def update_total(
    state: dict[str, Any],
    partition: int,
    total: int,
    threshold: int,
    extra: dict[str, int] | None = None,
) -> int:
    """Take a partition's absolute total; return how many new run requests it makes.

    Requests are floor(total / threshold) over the sum of the partitions' totals, whatever order
    the totals arrive in; the counter (count) is the overflow, total modulo threshold. `extra`
    figures (e.g. a filter's confusion counts) travel with the total they belong to.
    """
    partitions = state["partitions"]
    if total >= partitions.get(str(partition), 0) and extra is not None:
        state.setdefault("extras", {})[str(partition)] = extra
    partitions[str(partition)] = max(total, partitions.get(str(partition), 0))
    state["total"] = sum(partitions.values())
    if threshold <= 0:
        return 0
    new = state["total"] // threshold - state["requests"]
    if new <= 0:
        return 0
    state["requests"] += new
    return new


@app.agent(counter_increments_topic)
async def counters_agent(stream: faust.StreamT) -> None:
    async for event in stream.events():
        try:
            msg = loads_object(event.message.value or b"", settings.max_payload_bytes)
            total = parse_counter_total(msg)
        except Rejected as exc:
            await send_dead_letter(event.message, f"bad counter total: {exc}")
            continue
        state = stored_counter(total.model)
        threshold = threshold_of(total.model)
        new = update_total(state, total.partition, total.total, threshold, total.extra)
        counters_table[total.model.encode()] = state
        if new:
            await request_run(total.model, "counter", new)


async def request_run(model: str, reason: str, requests: int = 1) -> None:
    """Ask the trainer (the owner of the single `control` partition) for a model run.

    `requests` counts the threshold crossings one increment made; the trainer coalesces them.
    """
    request = RunRequest(model=model, reason=reason, requests=requests, ts=time.time())
    # Sent now, not attached to the current event (Faust would hold it until the commit): a
    # repeat after a crash is harmless, the trainer coalesces requests.
    await control_topic.send(key=model.encode(), value=request.dumps(), force=True)


@app.page("/counters")
class CountersView(View):
    """Every model's counter, from the worker that owns the counters' single partition."""

    @requires(Role.SERVER)
    @app.table_route(table=counters_table, exact_key=CLUSTERING)
    async def get(self, request: Request) -> Response:
        models = {key.decode() for key in counters_table} | {CLUSTERING}
        return self.json({model: counter_state(model) for model in sorted(models)})


# ---------------------------------------------------------------------------------------------
# HTTP ingestion


async def read_json_body(request: Request) -> dict[str, Any]:
    """The whole body as a JSON object (application/json or the beacon's text/plain), read to
    its end: one read returns only what has arrived so far, and a body split over TCP segments
    would be cut short."""
    limit = settings.max_payload_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise Rejected(f"payload too large: {length} bytes > {limit}")
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise Rejected(f"payload too large: more than {limit} bytes")
    return loads_object(bytes(body), limit)


class _Ingest(View):
    async def _produce(self, request: Request) -> Response:
        try:
            obj = await read_json_body(request)
            topic, key, value = self.record(obj)
        except Rejected as exc:
            return self.json({"error": str(exc)}, status=400)
        failure = await produce_acknowledged(topic, key.encode(), value)
        if failure is not None:
            return self.json({"error": failure}, status=503)
        return self.bytes(b"", status=204)

    def record(self, obj: dict[str, Any]) -> tuple[faust.TopicT, str, bytes]:
        raise NotImplementedError


@app.page("/events/page-time")
class PageTimeIngest(_Ingest):
    """The beacon's route: text/plain bodies allowed (navigator.sendBeacon), public key."""

    @requires(Role.INGEST)
    async def post(self, request: Request) -> Response:
        return await self._produce(request)

    def record(self, obj: dict[str, Any]) -> tuple[faust.TopicT, str, bytes]:
        event = parse_page_time(obj, settings.max_seconds)
        if event.event_id is None or event.ts is None:
            event = type(event)(
                event.user_id,
                event.page_type,
                event.seconds,
                event.event_id or uuid.uuid4().hex,
                event.ts or time.time(),
            )
        return page_times_topic, event.user_id, event.dumps()


@app.page("/events/new-user")
class NewUserIngest(_Ingest):
    @requires(Role.INGEST)
    @json_body
    async def post(self, request: Request) -> Response:
        return await self._produce(request)

    def record(self, obj: dict[str, Any]) -> tuple[faust.TopicT, str, bytes]:
        event = parse_new_user(obj)
        return new_users_topic, event.user_id, event.dumps()


@app.page("/comments")
class CommentIngest(_Ingest):
    @requires(Role.SERVER)
    @json_body
    async def post(self, request: Request) -> Response:
        return await self._produce(request)

    def record(self, obj: dict[str, Any]) -> tuple[faust.TopicT, str, bytes]:
        comment = parse_comment(obj)
        return comments_topic, comment.comment_id, comment.dumps()
