"""A small client for web apps: produce the contract's events with kafka-python, keyed correctly."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from kafka import KafkaProducer

from streams import topics as t
from streams.settings import Settings


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


class SmartStreamProducer:
    """Key = user id (or comment id) so a user's events and table row share a partition."""

    def __init__(self, settings: Settings | None = None, **producer_config: Any) -> None:
        self.settings = settings or Settings.from_env()
        config = {"linger_ms": 5, "acks": "all", **self.settings.kafka_python_config()}
        config.update(producer_config)
        self.producer = KafkaProducer(**config)

    def send(self, topic: str, key: str, value: dict[str, Any] | bytes) -> Any:
        payload = value if isinstance(value, bytes) else encode(value)
        return self.producer.send(self.settings.topic(topic), key=key.encode(), value=payload)

    def page_time(self, user_id: str, page_type: str, seconds: float, **extra: Any) -> Any:
        value = {
            "user_id": user_id,
            "page_type": page_type,
            "seconds": seconds,
            "event_id": uuid.uuid4().hex,
            "ts": time.time(),
            **extra,
        }
        return self.send(t.PAGE_TIMES, user_id, value)

    def new_user(self, user_id: str, **fields: Any) -> Any:
        return self.send(t.NEW_USERS, user_id, {"user_id": user_id, "ts": time.time(), **fields})

    def comment(self, comment_id: str, text: str, **fields: Any) -> Any:
        value = {"comment_id": comment_id, "text": text, "ts": time.time(), **fields}
        return self.send(t.COMMENTS, comment_id, value)

    def review(self, comment_id: str, is_spam: bool, reviewer: str | None = None) -> Any:
        value = {
            "comment_id": comment_id,
            "is_spam": is_spam,
            "reviewer": reviewer,
            "ts": time.time(),
        }
        return self.send(t.COMMENT_REVIEWS, comment_id, value)

    def flush(self, timeout: float | None = 30) -> None:
        self.producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close; `timeout` bounds the wait for records the broker has not taken."""
        self.producer.close(timeout=timeout)
