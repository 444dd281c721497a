"""Erasure of a user (`DELETE /users/{user_id}`, `smartstream erase USER_ID`): the EU's right to
be forgotten, carried out by the workers that hold the user's data.

A request produces (1) an erase command to the user's partition of `user-commands`: its owner
deletes the profile (a tombstone on the users changelog), the user's `cluster-assignments`
record (a tombstone) and Redis key, then asks for a re-clustering, since the serving model's
dashboard sample names users; (2) an erase command to every partition of `comment-commands`: the
comments table's owners delete the user's comments (changelog tombstones) and their training
examples (tombstones on `training-examples`), and ask for a retraining of each filter that
learnt from them; (3) the fact on the compacted `erasures` topic: an id and a time, nothing of
the user. Events the site still sends for the user afterwards make a new profile.
"""

from __future__ import annotations

import time
import uuid

from faust.web import Request, Response, View

from streams import topics as t
from streams.records import Erase, Erasure

# (topic, partition or None, key or None, value) of every record an erasure produces.
Plan = list[tuple[str, int | None, bytes | None, bytes]]


def erasure_plan(user_id: str, erasure_id: str, partitions: int) -> Plan:
    """The records that erase `user_id` (topic names without the prefix)."""
    command = t.SPECS[t.USER_COMMANDS].encode(Erase(user_id=user_id, erasure_id=erasure_id))
    fact = t.SPECS[t.ERASURES].encode(Erasure(erasure_id=erasure_id, ts=time.time()))
    return [
        (t.USER_COMMANDS, t.key_partition(user_id.encode(), partitions), None, command),
        *((t.COMMENT_COMMANDS, p, None, command) for p in range(partitions)),
        (t.ERASURES, None, erasure_id.encode(), fact),
    ]


def new_erasure_id() -> str:
    return uuid.uuid4().hex


async def request_erasure(user_id: str) -> tuple[str, str | None]:
    """Produce the erasure's records, each acknowledged by the broker; (erasure id, why not)."""
    # Imported here: `smartstream erase` uses erasure_plan without building the worker's app.
    from streams.app import (
        comment_commands_topic,
        erasures_topic,
        produce_acknowledged,
        settings,
        user_commands_topic,
    )

    topics = {
        t.USER_COMMANDS: user_commands_topic,
        t.COMMENT_COMMANDS: comment_commands_topic,
        t.ERASURES: erasures_topic,
    }
    erasure_id = new_erasure_id()
    for name, partition, key, value in erasure_plan(user_id, erasure_id, settings.partitions):
        failure = await produce_acknowledged(topics[name], key, value, partition)
        if failure is not None:
            return erasure_id, failure
    return erasure_id, None


async def erase_view(view: View, request: Request, user_id: str) -> Response:
    """The DELETE /users/{user_id} answer: 202 with the erasure id once every command is
    durable (the workers then carry it out), 503 when the broker did not acknowledge."""
    erasure_id, failure = await request_erasure(user_id)
    if failure is not None:
        return view.json({"error": failure, "erasure_id": erasure_id}, status=503)
    return view.json({"erasure_id": erasure_id, "status": "accepted"}, status=202)

