"""Events from Django views: page views, new users and comments, sent without holding up a request.

One process-wide kafka-python producer (built at the first send, rebuilt in a forked child)
batches records for ``linger_ms`` in its own thread, so a send validates and appends to its
buffer. Every wait it may have (bootstrap, a topic's metadata, a full buffer) is bounded by
``SEND_TIMEOUT_SECONDS``; after a failed bootstrap, sends are dropped at once for
:data:`RETRY_SECONDS` rather than each waiting again. Nothing raises into the view: a refused,
dropped or lost event is logged and counted (:func:`stats`). Records are keyed by user id or
comment id (producers.client) and flushed when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer

from producers.client import SmartStreamProducer
from producers.django.conf import Config, config
from streams.records import Rejected, parse_comment, parse_new_user, parse_page_time
from streams.settings import Settings

log = logging.getLogger(__name__)
STATS = ("sent", "acknowledged", "failed", "refused", "dropped")
RETRY_SECONDS = 5.0
# kafka-python >= 2.1 bounds its eager bootstrap with bootstrap_timeout_ms; 2.0 had another name.
BOOTSTRAP_TIMEOUT = (
    "bootstrap_timeout_ms"
    if "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG
    else "api_version_auto_timeout_ms"
)


class EventSender:
    """The process's producer, its counters, and the bounded paths in and out of it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: SmartStreamProducer | None = None
        self._pid = 0
        self._retry_at = 0.0
        self._counts = dict.fromkeys(STATS, 0)
        self._exit_hook = False
        self._flush_timeout = 0.0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def send(
        self,
        kind: str,
        parse: Callable[[Settings], Any],
        produce: Callable[[SmartStreamProducer, Any], Any],
    ) -> bool:
        """Validate with `parse`, hand the record to `produce`; True once buffered."""
        try:
            cfg = config()
            record = parse(cfg.settings)
        except Rejected as exc:
            self._count("refused")
            log.warning("SmartStream %s event refused: %s", kind, exc)
            return False
        except Exception:
            self._count("failed")
            log.exception("SmartStream %s event not sent", kind)
            return False
        client = self._producer(cfg)
        if client is None:
            self._count("dropped")
            return False
        try:
            future = produce(client, record)
        except Exception as exc:  # a timeout, a closed producer: never raised into the view
            self._count("failed")
            log.warning("SmartStream %s event not sent: %r", kind, exc)
            return False
        self._count("sent")
        future.add_callback(self._acknowledged)
        future.add_errback(self._lost, kind)
        return True

    def _acknowledged(self, _metadata: Any) -> None:
        self._count("acknowledged")

    def _lost(self, exc: BaseException, kind: str) -> None:
        self._count("failed")
        log.warning("SmartStream %s event lost: %r", kind, exc)

    def _producer(self, cfg: Config) -> SmartStreamProducer | None:
        client = self._client
        if client is not None and self._pid == os.getpid():
            return client
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                return self._client
            now = time.monotonic()
            if now < self._retry_at:
                return None
            bound = int(cfg.send_timeout * 1000)
            options = {"max_block_ms": bound, BOOTSTRAP_TIMEOUT: bound, **cfg.producer}
            try:
                self._client = SmartStreamProducer(cfg.settings, **options)
            except Exception as exc:
                self._client = None
                self._retry_at = now + RETRY_SECONDS
                log.warning(
                    "SmartStream: no Kafka producer (%r); retry in %.0f s", exc, RETRY_SECONDS
                )
                return None
            self._pid = os.getpid()
            self._flush_timeout = cfg.flush_timeout
            if not self._exit_hook:  # runs before kafka-python's own hook (1 s flush)
                atexit.register(self.close)
                self._exit_hook = True
            return self._client

    def close(self, timeout: float | None = None) -> None:
        """Flush what is buffered (at most `timeout`, default the FLUSH_TIMEOUT_SECONDS it was
        built with), then close."""
        with self._lock:
            client, self._client = self._client, None
            own = self._pid == os.getpid()
            self._retry_at = 0.0
        if client is None or not own:  # a parent's producer: its threads are not in this child
            return
        wait = self._flush_timeout if timeout is None else timeout
        try:
            client.flush(wait)
        except Exception as exc:  # KafkaTimeoutError: what is still buffered is lost
            log.warning("SmartStream: events lost at close, not flushed in %s s: %r", wait, exc)
        try:
            client.producer.close(timeout=0)  # flushed or given up: no second wait
        except Exception as exc:
            log.warning("SmartStream: closing the producer failed: %r", exc)


sender = EventSender()
stats = sender.stats
close = sender.close


def send_page_time(user_id: Any, page_type: str, seconds: float) -> bool:
    """One page view of `seconds` on a page of type A..J, keyed by the user's id."""
    event = {"user_id": user_id, "page_type": page_type, "seconds": seconds}
    return sender.send(
        "page-time",
        lambda s: parse_page_time(event, s.max_seconds),
        lambda p, r: p.page_time(r.user_id, r.page_type, r.seconds),
    )


def send_new_user(
    user_id: Any, *, age: int | None = None, sex: str | int | None = None, avg1: float | None = None
) -> bool:
    """A user joined; `sex` is "M"/"F" (or the original choices 0/1)."""
    event = {"user_id": user_id, "age": age, "sex": sex, "avg1": avg1}

    def produce(p: SmartStreamProducer, r: Any) -> Any:
        fields = {k: v for k, v in r.to_dict().items() if k in ("age", "sex", "avg1")}
        return p.new_user(r.user_id, **fields)

    return sender.send("new-user", lambda s: parse_new_user(event), produce)


def send_comment(
    comment_id: Any, text: str, *, user_id: Any = None, filter: str | None = None
) -> bool:
    """A comment to label, keyed by its id; `filter` names the spam filter (default comments)."""
    event = {"comment_id": comment_id, "text": text, "user_id": user_id, "filter": filter}

    def produce(p: SmartStreamProducer, r: Any) -> Any:
        extra = {"user_id": r.user_id} if r.user_id is not None else {}
        return p.comment(r.comment_id, r.text, filter=r.filter, **extra)

    return sender.send("comment", lambda s: parse_comment(event), produce)
