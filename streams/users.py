"""Users: the per-user table, its Redis mirror and GET /users/{user_id}.

Redis key layout (prefix = SMARTSTREAM_TOPIC_PREFIX + "smartstream:"):
  ``{prefix}user:{user_id}``  -> JSON of the GET /users/{id} record (one GET per page view)
  ``{prefix}model:{name}``    -> JSON of the model's current version (see streams.clustering)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from faust.web import Request, Response, View
from redis.exceptions import RedisError

from streams.app import app, settings
from streams.profiles import public_view
from streams.records import dumps_json

log = logging.getLogger(__name__)

users_table = app.Table(
    "users",
    default=None,
    partitions=settings.partitions,
    key_type=bytes,  # raw user-id keys, as on the source topics; JSON values
    help="Per-user profile: running averages and visits overall and per page type A..J.",
)


class RedisMirror:
    """Writes the latest value of each key to Redis in pipelined batches.

    When Redis is down, the latest values wait in memory (one entry per key, so the backlog is
    bounded by the number of keys) and are written when it answers again: processing never waits.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.client = (
            aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2) if url else None
        )
        self.pending: dict[str, bytes] = {}
        self.written = 0
        self.failures = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Future | None = None

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def stage_users(self, profiles: Iterable[dict[str, Any]]) -> None:
        if self.client is None:
            return
        for p in profiles:
            self.pending[self.user_key(p["user_id"])] = dumps_json(public_view(p))

    def stage(self, key: str, value: Any) -> None:
        if self.client is not None:
            self.pending[f"{self.prefix}{key}"] = json.dumps(value).encode()

    def flush_soon(self) -> None:
        """Start a flush in the background unless one is running: a slow or frozen Redis never
        holds up the stream (what fails stays pending for the next flush)."""
        if self.client is not None and self.pending and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self.flush())

    async def flush(self) -> bool:
        """Write what is pending; keep it for the next flush if Redis does not answer."""
        if self.client is None or not self.pending:
            return True
        async with self._lock:
            batch, self.pending = self.pending, {}
            try:
                pipe = self.client.pipeline(transaction=False)
                for key, value in batch.items():
                    pipe.set(key, value)
                await pipe.execute()
                self.written += len(batch)
                return True
            except (RedisError, OSError) as exc:
                self.failures += 1
                # Newer values staged meanwhile win over the batch that failed.
                self.pending = {**batch, **self.pending}
                log.warning("Redis unavailable (%s); %d keys wait", exc, len(self.pending))
                return False

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The mirrored record; None when absent or unreadable (a corrupted value is logged,
        never raised to the caller)."""
        if self.client is None:
            return None
        key = self.user_key(user_id)
        raw = await self.client.get(key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            log.error("unreadable Redis value at %s: %s", key, exc)
            return None
        return value if isinstance(value, dict) else None


mirror = RedisMirror(settings.redis_url, settings.redis_prefix)


@app.timer(interval=1.0)
async def flush_mirror() -> None:
    """Retry the Redis backlog even when no events arrive."""
    await mirror.flush()


@app.page("/users/{user_id}")
class UserView(View):
    """The user's record, from the worker that owns the user's partition (faust routes it)."""

    @app.table_route(table=users_table, match_info="user_id")
    async def get(self, request: Request, user_id: str) -> Response:
        profile = users_table.get(user_id.encode())
        if profile is None:
            return self.json({"error": f"unknown user {user_id!r}"}, status=404)
        return self.json(public_view(profile))
