"""GET /metrics parses as Prometheus text and its counters grow under traffic; the dashboard and
its data route answer."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def samples(worker) -> dict[tuple[str, tuple], float]:
    status, text = worker.get("/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def events_total(worker, topic: str) -> float:
    return samples(worker).get(("smartstream_events_total", (("topic", topic),)), 0.0)


def test_metrics_grow_under_traffic_and_dashboard_answers(stack: Stack) -> None:
    worker = stack.start_worker()
    topic = stack.settings.topic("page-times")
    producer = stack.producer()
    for round_ in range(2):
        for i in range(200):
            producer.page_time(f"u{i}", "ABCDEFGHIJ"[i % 10], 5.0 + i % 7)
        producer.send("page-times", "bad", b"{broken")
        producer.flush()
        wait_for(
            lambda n=round_: events_total(worker, topic) == 201 * (n + 1),
            60,
            f"round {round_} counted in /metrics",
        )
    metrics = samples(worker)
    assert metrics[("smartstream_dead_letters_total", (("topic", topic),))] == 2
    assert ("smartstream_consumer_lag", (("topic", topic),)) in metrics
    assert metrics[("smartstream_consumer_lag", (("topic", topic),))] == 0
    status, page = worker.get("/dashboard")
    assert status == 200 and "<canvas" in page and "textContent" in page  # Chart.js canvases
    status, tables = worker.get("/table/")  # faust's own table views stay enabled
    assert status == 200 and {"users", "counters", "comments"} <= {t["name"] for t in tables}
    status, data = worker.get("/dashboard/data")
    assert status == 200 and data["ready"] and data["events"][topic] == 402
    assert data["filters"] == ["comments"] and data["dead_letters"][topic] == 2
