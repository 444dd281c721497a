"""The Faust app (faust's project layout: ``streams.app:app``) and the contract's topics.

Configuration is passed in: the worker's entry point (streams.cli) reads the environment once,
checks it, and hands the Settings to :func:`configure`, which builds the app, its topics and its
batch producer; the domain modules (streams.cli.WORKER_MODULES) then register on that app. A
module imported without the entry point (a tool, a test) gets the app configured from the
environment at its first use of one of the configured names below.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import TP
from mode.utils.logging import level_number

from streams import topics as t
from streams.adapter import stores
from streams.adapter.bulk import App, BatchProducer, Coalescer, set_producer_backlog
from streams.records import dumps_json
from streams.settings import Settings

# The contract topics the worker reads or writes through Faust (raw bytes: agents validate
# values themselves), by the name each is imported by.
TOPICS = {
    "page_times_topic": t.PAGE_TIMES,
    "new_users_topic": t.NEW_USERS,
    "comments_topic": t.COMMENTS,
    "comment_reviews_topic": t.COMMENT_REVIEWS,
    "dead_letters_topic": t.DEAD_LETTERS,
    "models_topic": t.MODELS,
    "counter_increments_topic": t.COUNTER_INCREMENTS,
    "control_topic": t.CONTROL,
    "user_commands_topic": t.USER_COMMANDS,
    "pretraining_topic": t.PRETRAINING,
    "comment_commands_topic": t.COMMENT_COMMANDS,
    "erasures_topic": t.ERASURES,
}


@dataclass(frozen=True)
class Wiring:
    """What configure() builds from the settings, served as this module's names."""

    settings: Settings
    app: App
    # Set once this worker has loaded every model published before it started
    # (streams.trainer): the handlers wait for it, so a restarted worker never labels or assigns
    # without its models.
    models_ready: asyncio.Event
    # Writes of whole batches (labels, assignments, dead letters): see streams.adapter.bulk.
    batch_producer: BatchProducer
    # The tables' changelog writes, on a connection of their own: aiokafka sends one request
    # at a time per broker and client, so a fetch's labels queued behind the previous fetch's
    # changelog write (bench/moderation.py: ~1 ms of every label's wait).
    changelog_producer: BatchProducer
    # Changelog writes of handlers that only hand them on to their acks (streams.moderation),
    # merged over CHANGELOG_LINGER_SECONDS (see store_rows).
    coalesced_changelog: Coalescer
    topics: dict[str, faust.TopicT]


# How long a coalesced changelog write waits for more rows: far below Faust's commit interval
# (the acks it holds back are committed no later), and at 500 comments/s it merges the writes of
# ~10 fetches into one produce request (bench/moderation.py).
CHANGELOG_LINGER_SECONDS = 0.02

_wiring: Wiring | None = None
# The configured names (module attributes served by __getattr__ from the Wiring).
settings: Settings
app: App
models_ready: asyncio.Event
batch_producer: BatchProducer
page_times_topic: faust.TopicT
new_users_topic: faust.TopicT
comments_topic: faust.TopicT
comment_reviews_topic: faust.TopicT
dead_letters_topic: faust.TopicT
models_topic: faust.TopicT
counter_increments_topic: faust.TopicT
control_topic: faust.TopicT
user_commands_topic: faust.TopicT
pretraining_topic: faust.TopicT
comment_commands_topic: faust.TopicT
erasures_topic: faust.TopicT


def configure(s: Settings) -> App:
    """Build this process's app from `s`, before any domain module registers on it; once."""
    global _wiring
    if _wiring is not None:
        raise RuntimeError(
            "streams.app is configured already: configure() runs once per process, before the "
            "domain modules are imported"
        )
    # Faust pauses its streams whenever more than its producer buffer's limit (process-wide,
    # 100) records wait to be produced; a fetch of refused records queues up to BATCH_MAX dead
    # letters at once, so the default would stall the agents. The producer flushes before every
    # offset commit.
    set_producer_backlog(100_000)
    built = make_app(s)
    topics = {attribute: _raw_topic(built, s, name) for attribute, name in TOPICS.items()}
    per_batch = 1 if s.kafka_embedded else 0
    producer = BatchProducer(records_per_batch=per_batch, **s.aiokafka_config())
    changelogs = BatchProducer(records_per_batch=per_batch, **s.aiokafka_config())
    coalesced = Coalescer(_write_coalesced, CHANGELOG_LINGER_SECONDS)
    _wiring = Wiring(s, built, asyncio.Event(), producer, changelogs, coalesced, topics)
    built.task(_restore_root_log_level)
    built.task(_tune_garbage_collector)
    built.on_before_shutdown.connect(_stop_batch_producer)
    return built


def wiring() -> Wiring:
    """The configured app and its parts (configured from the environment on first use)."""
    if _wiring is None:
        configure(Settings.from_env())
    assert _wiring is not None
    return _wiring


def __getattr__(name: str) -> Any:
    if name in TOPICS:
        return wiring().topics[name]
    if name in ("settings", "app", "models_ready", "batch_producer"):
        return getattr(wiring(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def raw_topic(name: str, **kwargs: Any) -> faust.TopicT:
    """A contract topic read and written as raw bytes: agents validate values themselves."""
    w = wiring()
    return _raw_topic(w.app, w.settings, name, **kwargs)


def _raw_topic(app: App, s: Settings, name: str, **kwargs: Any) -> faust.TopicT:
    return app.topic(s.topic(name), key_serializer="raw", value_serializer="raw", **kwargs)


def _credentials(s: Settings) -> Any:
    context = ssl.create_default_context(cafile=s.kafka_ssl_cafile or None)
    if s.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=s.kafka_sasl_username,
            password=s.kafka_sasl_password,
            mechanism=s.kafka_sasl_mechanism,
            ssl_context=context if s.kafka_security_protocol == "SASL_SSL" else None,
        )
    if s.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def make_app(s: Settings) -> App:
    """Build the app; consumer-group timings are short so a worker processes within seconds."""
    extra: dict[str, Any] = {}
    if s.kafka_embedded:
        extra["producer_max_batch_size"] = 1
    return App(
        s.app_id,
        broker=";".join(f"kafka://{h}" for h in s.bootstrap_servers) or "kafka://127.0.0.1:9092",
        broker_credentials=_credentials(s),
        store=s.store,
        datadir=s.data_dir,
        web_port=s.web_port,
        web_bind=s.web_host,
        canonical_url=f"http://{_advertised_host(s)}:{s.web_port}",
        topic_partitions=s.partitions,
        broker_max_poll_records=s.batch_max,
        broker_session_timeout=s.broker_session_timeout,
        broker_heartbeat_interval=s.broker_heartbeat_interval,
        consumer_auto_offset_reset="earliest",
        bulk_client=s.aiokafka_config(),
        producer_max_request_size=t.MODEL_MAX_BYTES,
        table_standby_replicas=0,
        autodiscover=False,
        web_cors_options=None,
        # Faust's own /router/ (hosts, partition assignment) and /table/ (raw rows) views have no
        # credential check: off whenever credentials are configured.
        web_router_enabled=not s.credentials_configured,
        web_tables_enabled=not s.credentials_configured,
        **extra,
    )


def _advertised_host(s: Settings) -> str:
    """Where other workers reach this one (faust routes table requests there)."""
    return socket.gethostname() if s.web_host == "0.0.0.0" else s.web_host


async def write_rows(
    table: faust.Table,
    partition: int,
    rows: list[tuple[bytes, Any | None]],
    encoded: list[bytes | None] | None = None,
) -> None:
    """Store rows of one partition of `table` and write them to its changelog as whole Kafka
    batches (what Faust's table assignment does one record at a time, ~40 µs each); returns once
    the broker has them, so the source offsets are committed only after their rows. `encoded`:
    the rows' JSON when the caller has it (None for a deleted row)."""
    if rows:
        await store_rows(table, partition, rows, encoded)


def store_rows(
    table: faust.Table,
    partition: int,
    rows: list[tuple[bytes, Any | None]],
    encoded: list[bytes | None] | None = None,
    coalesce: bool = False,
) -> Awaitable[None]:
    """:func:`write_rows`' first half, at once: the (non-empty) rows stored; returns their
    changelog write, to await, or for a bulk handler to hand on as its effect in flight (its
    records are acked once the rows are written while the next fetch is already handled).
    `coalesce`: the write is merged with the other coalesced writes of the next
    CHANGELOG_LINGER_SECONDS, for a handler that does not await it."""
    if encoded is None:
        encoded = [None if value is None else dumps_json(value) for _, value in rows]
    store = table.data
    if stores.is_rocksdb(store):  # one RocksDB write batch, as Faust's own recovery writes
        stores.write_batch(
            store, partition, [(k, v) for (k, _), v in zip(rows, encoded, strict=True)]
        )
    else:
        for key, value in rows:
            if value is not None:
                store[key] = value
            elif key in store:  # None: the row is deleted (a tombstone on the changelog)
                del store[key]
    topic = table.changelog_topic.get_topic_name()
    records = [(key, value) for (key, _), value in zip(rows, encoded, strict=True)]
    if coalesce:
        return wiring().coalesced_changelog.add((store, topic, partition), records)
    return _send_changelog(store, topic, partition, records)


async def _write_coalesced(
    target: tuple[Any, str, int], records: list[tuple[bytes, bytes | None]]
) -> None:
    await _send_changelog(*target, records)


async def _send_changelog(
    store: Any, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
) -> None:
    offset = await wiring().changelog_producer.send(topic, partition, records)
    # What Faust's changelog callback does: RocksDB recovers from after this offset.
    store.set_persisted_offset(TP(topic, partition), offset)


async def produce_acknowledged(
    topic: faust.TopicT, key: bytes | None, value: bytes, partition: int | None = None
) -> str | None:
    """Produce one record and wait until the broker acknowledged it; None, or why it was not
    within SMARTSTREAM_INGEST_TIMEOUT_SECONDS (then the caller answers 503: an acknowledgement
    promises a durable record)."""
    timeout = wiring().settings.ingest_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            delivered = await topic.send(key=key, value=value, partition=partition, force=True)
            await delivered
    except TimeoutError:
        return f"the broker did not acknowledge within {timeout} s"
    except KafkaError as exc:
        return f"the broker refused the record: {type(exc).__name__}"
    return None


async def _restore_root_log_level() -> None:
    """Faust's worker sets the root logger to DEBUG whenever its terminal spinner is on (levels
    warn and above), so every library builds each debug record and then drops it: a twentieth of
    a busy worker's CPU (py-spy). The configured level is restored once the worker runs."""
    logging.getLogger().setLevel(level_number(wiring().settings.log_level))


async def _tune_garbage_collector() -> None:
    """A busy worker allocates hundreds of thousands of short-lived objects a second (records,
    events, rows) beside a long-lived heap (tables, models): the default thresholds ran a
    collection every 700 allocations, each walking that heap. Objects alive at start are frozen
    out of the collections; measured on bench/pipeline.py: 38,200 -> 44,800 events/s."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


async def _stop_batch_producer(sender: faust.App, **kwargs: Any) -> None:
    """After the consumer stopped (its last batch is written), before the process exits."""
    await wiring().batch_producer.stop()
    await wiring().changelog_producer.stop()
