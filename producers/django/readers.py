"""Reads for Django views: a user's cluster and atypical flag and a comment's label, in ONE Redis
round trip (an MGET of the workers' mirror keys, README "Redis key layout"):

  ``{prefix}smartstream:user:{user_id}``       the JSON of GET /users/{user_id}
  ``{prefix}smartstream:comment:{comment_id}`` the comment's latest ``comment-labels`` value

A read waits at most twice READ_TIMEOUT_SECONDS (one retry, for a pooled connection that
Redis closed). Never raises into the view: with Redis down, slow or holding a corrupted value,
the reader answers "not known" (None fields, ``ok`` False when Redis failed) and logs it.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from producers.django.conf import config, text_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What Redis held for one user and one comment (None: absent, unreadable or not asked)."""

    user: dict[str, Any] | None = None
    comment: dict[str, Any] | None = None
    ok: bool = True

    @property
    def cluster(self) -> str | None:
        return (self.user or {}).get("cluster")

    @property
    def atypical(self) -> bool | None:
        return (self.user or {}).get("atypical")

    @property
    def is_spam(self) -> bool | None:
        """The comment's label: None while unknown (no model yet) or pending a person."""
        return (self.comment or {}).get("is_spam")


class Reader:
    """One process-wide Redis client (its connection pool is thread- and fork-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self.failures = 0

    def client(self) -> redis.Redis | None:
        with self._lock:
            if self._client is None:
                cfg = config()
                if not cfg.settings.redis_url:
                    return None
                self._client = redis.Redis.from_url(
                    cfg.settings.redis_url,
                    socket_timeout=cfg.read_timeout,
                    socket_connect_timeout=cfg.read_timeout,
                    retry=Retry(NoBackoff(), 1),  # a dropped pooled connection, not a slow Redis
                )
            return self._client

    def read(self, user_id: Any = None, comment_id: Any = None) -> Snapshot:
        """The user's record and the comment's label, one MGET for both."""
        try:
            return self._read(text_id(user_id), text_id(comment_id))
        except (RedisError, OSError) as exc:
            log.warning("SmartStream: Redis read failed: %r", exc)
        except Exception:
            log.exception("SmartStream: Redis read failed")
        with self._lock:
            self.failures += 1
        return Snapshot(ok=False)

    def _read(self, user_id: str | None, comment_id: str | None) -> Snapshot:
        prefix = config().settings.redis_prefix
        keys = {
            kind: f"{prefix}{kind}:{value}"
            for kind, value in (("user", user_id), ("comment", comment_id))
            if value
        }
        client = self.client()
        if not keys or client is None:
            return Snapshot(ok=client is not None)
        raws = client.mget(list(keys.values()))
        values = {k: _decode(key, raw) for (k, key), raw in zip(keys.items(), raws, strict=True)}
        return Snapshot(user=values.get("user"), comment=values.get("comment"))

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _decode(key: str, raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        log.error("SmartStream: unreadable Redis value at %s: %s", key, exc)
        return None
    return value if isinstance(value, dict) else None


reader = Reader()
read = reader.read


def user_cluster(user_id: Any) -> tuple[str | None, bool | None]:
    """(cluster, atypical) of a user; (None, None) before the first clustering or when unknown."""
    snapshot = read(user_id=user_id)
    return snapshot.cluster, snapshot.atypical


def comment_label(comment_id: Any) -> dict[str, Any] | None:
    """A comment's latest label (is_spam, score, state, filter, model_version), or None."""
    return read(comment_id=comment_id).comment
