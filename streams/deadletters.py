"""Dead letters: every refused record goes to `dead-letters` with its reason, and the send is
awaited before the source offset can be committed (a letter sent fire-and-forget could be lost
while its record's offset was committed)."""

from __future__ import annotations

from typing import Any

from streams import topics as t
from streams.app import batch_producer, settings
from streams.monitoring import DEAD_LETTERS
from streams.records import dead_letter

DEAD_LETTERS_TOPIC = settings.topic(t.DEAD_LETTERS)


def letter(record: Any, error: str) -> tuple[bytes | None, bytes, int]:
    """(key, value, source partition) of the dead letter of `record` (an aiokafka record or a
    Faust message): keyed by the original key, bounded payload (streams.records.dead_letter)."""
    DEAD_LETTERS.labels(topic=record.topic).inc()
    value = dead_letter(record.topic, record.partition, record.offset, error, record.value)
    return record.key, value, record.partition


async def send_letters(letters: list[tuple[bytes | None, bytes, int]]) -> None:
    """Produce dead letters and wait until the broker has them (keyless ones go to the source
    partition's number, modulo the topic's partitions)."""
    await batch_producer.send_routed(DEAD_LETTERS_TOPIC, letters)


async def send_dead_letter(record: Any, error: str) -> None:
    """One refused record, awaited (the agents of the single-partition internal topics)."""
    await send_letters([letter(record, error)])
