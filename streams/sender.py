"""The contract's producer (kafka-python, no worker): what the CLI's commands and the site's
client (producers.client) send with. A record goes to its topic encoded by the topic's codec
(streams.topics), keyed so that a user's events and the user's row share a partition."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaProducer

from streams import topics as t
from streams.records import PretrainingExample, RunRequest, dumps_json
from streams.settings import Settings


class Sender:
    """Produce to the contract's topics (names without this deployment's prefix)."""

    def __init__(self, settings: Settings | None = None, **producer_config: Any) -> None:
        self.settings = settings or Settings.from_env()
        config = {"linger_ms": 5, "acks": "all", **self.settings.kafka_python_config()}
        config.update(producer_config)
        self.producer = KafkaProducer(**config)

    def send(
        self,
        topic: str,
        key: str | bytes | None,
        value: Any,
        partition: int | None = None,
    ) -> Any:
        """Send `value` (a record of the topic's, encoded by its codec; bytes as they are; a
        dict as JSON, unvalidated, as any producer of the site may send it: the workers
        validate). Returns kafka-python's future of the record's metadata."""
        if isinstance(value, bytes):
            payload = value
        elif isinstance(value, dict):
            payload = dumps_json(value, strict=True)
        else:
            payload = t.SPECS[topic].encode(value)
        raw_key = key.encode() if isinstance(key, str) else key
        return self.producer.send(
            self.settings.topic(topic), key=raw_key, value=payload, partition=partition
        )

    def pretraining(
        self, filter_name: str, text: str, is_spam: bool, source: str | None = None
    ) -> Any:
        """A labelled text of a spam filter's pretraining corpus (a text once per filter)."""
        example = PretrainingExample(filter=filter_name, text=text, is_spam=is_spam, source=source)
        return self.send(t.PRETRAINING, example.pretraining_key(), example)

    def request_run(self, model: str, reason: str) -> Any:
        """Ask the trainer for a run of `model` (clustering or spam:FILTER)."""
        return self.send(t.CONTROL, model, RunRequest(model=model, reason=reason, ts=time.time()))

    def flush(self, timeout: float | None = 30) -> None:
        self.producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close; `timeout` bounds the wait for records the broker has not taken."""
        self.producer.close(timeout=timeout)
