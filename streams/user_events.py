"""The users pipeline (SPEC §3-§4): page-time and new-user events and user commands into the
users table, one partition's fetch at a time.

Hot path design: the user-keyed topics are delivered in bulk (streams/adapter: a whole fetch per
partition, past Faust's per-message stream path); per batch the handler updates each touched
profile in memory and writes it once (one changelog record per user per batch, produced as whole
Kafka batches), mirrors the batch to Redis in one pipeline, and sends the partition's total of
the clustering counter (streams.counters).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from typing import Any

from streams import topics as t
from streams.app import app, batch_producer, models_ready, settings
from streams.counters import request_run, send_total
from streams.deadletters import letter, send_letters
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
    dumps_json,
)
from streams.serving import ASSIGNMENTS, CLUSTERING, assign, observe_metric, reassigner, serving
from streams.users import load_row, mirror, row_partition, users_table, write_users

log = logging.getLogger(__name__)

PAGE_TIMES = settings.topic(t.PAGE_TIMES)
NEW_USERS = settings.topic(t.NEW_USERS)

USER_COMMANDS = settings.topic(t.USER_COMMANDS)
PAGE_TIME_CODEC, NEW_USER_CODEC = t.SPECS[t.PAGE_TIMES], t.SPECS[t.NEW_USERS]
MAX_BYTES, MAX_SECONDS = settings.max_payload_bytes, settings.max_seconds
RECENT_USERS = 200
# The users this worker touched last, oldest first (an insertion-ordered dict used as a bounded,
# deduplicated queue), for the demo site's user menu.
recent_users: dict[str, None] = {}
# The user-keyed topics share the partition count, so one agent owns a user's whole row and is the
# only writer of the user's `cluster-assignments` records.
user_events = app.topic(
    PAGE_TIMES, NEW_USERS, USER_COMMANDS, key_serializer="raw", value_serializer="raw"
)


def _parse(record: Any) -> Any:
    """The record's event, or :class:`Rejected`. The key must be the user id: a keyless or
    wrongly keyed record would land in another partition than the user's row."""
    if record.topic == PAGE_TIMES:
        event = PAGE_TIME_CODEC.decode(record.value, MAX_BYTES, MAX_SECONDS)
    else:
        event = NEW_USER_CODEC.decode(record.value, MAX_BYTES)
    if record.key != event.user_id.encode():
        key = "null" if record.key is None else repr(record.key[:40])
        raise Rejected(f"key {key} is not the user_id {event.user_id[:40]!r}")
    return event


@app.bulk(user_events)
async def process_user_records(partition: int, records: list[Any]) -> None:
    """One partition's records of one fetch (bulk delivery): apply them, write each touched user
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
            command = t.SPECS[t.USER_COMMANDS].decode(record.value, MAX_BYTES)
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
        ASSIGNMENTS, [(a["user_id"].encode(), dumps_json(a)) for a in changed]
    )
    erased = await batch.finish_erasures()
    written = [(key, profile) for key, profile in profiles.items() if key not in batch.erased]
    await write_users(partition, written, erased)
    touched.extend(profile for _, profile in written)
    if erased and serving.mixture is not None:
        # The serving model's dashboard sample names users: a new one that does not.
        await request_run(CLUSTERING, "erasure")
    return batch.weight


# The clustering counter is a function of the users table: each profile carries the weight of the
# events applied to it, each partition's total is the sum over its rows, and workers send these
# absolute, growing totals. A lost or repeated message cannot skew the count: the next total heals
# it.
partition_totals: dict[int, int] = defaultdict(int)


def add_profile_weight(profile: dict[str, Any], weight: int) -> None:
    profile["weight"] = profile.get("weight", 0) + weight


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
