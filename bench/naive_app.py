"""The naive Faust pipeline the issue measured, for comparison in bench/pipeline.py: group_by on
the user id (a repartition topic), one running-average table write per event, default settings.

    SMARTSTREAM_TOPIC_PREFIX=... python bench/naive_app.py worker -l warn --web-port 6098

With NAIVE_EMPTY=1 the agent does nothing with its events (batches of `take_events`, raw bytes):
the ceiling of Faust's per-message delivery path on this machine.
"""

from __future__ import annotations

import os

import faust

PREFIX = os.environ.get("SMARTSTREAM_TOPIC_PREFIX", "")
BROKER = os.environ.get("SMARTSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")

EMPTY = bool(os.environ.get("NAIVE_EMPTY"))
app = faust.App(
    f"{PREFIX}naive{'-empty' if EMPTY else ''}",
    broker=f"kafka://{BROKER}",
    store="memory://",
    topic_partitions=int(os.environ.get("SMARTSTREAM_PARTITIONS", "8")),
)


class PageTime(faust.Record, serializer="json"):
    user_id: str
    page_type: str
    seconds: float


page_times = app.topic(f"{PREFIX}page-times", value_type=PageTime)
averages = app.Table("averages", default=lambda: [0.0, 0])
processed = {"n": 0}


raw_page_times = app.topic(f"{PREFIX}page-times", key_serializer="raw", value_serializer="raw")


async def count_only(stream: faust.StreamT) -> None:
    async for events in stream.take_events(5000, 0.05):
        processed["n"] += len(events)


async def running_averages(stream: faust.StreamT) -> None:
    async for event in stream.group_by(PageTime.user_id):
        mean, n = averages[event.user_id]
        averages[event.user_id] = [mean * n / (n + 1) + event.seconds / (n + 1), n + 1]
        processed["n"] += 1


if EMPTY:
    app.agent(raw_page_times)(count_only)
else:
    app.agent(page_times)(running_averages)


@app.page("/metrics")
async def metrics(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    """The one line bench/pipeline.py reads."""
    line = f'smartstream_events_total{{topic="page-times"}} {processed["n"]}\n'
    return web.text(line)


if __name__ == "__main__":
    app.main()
