"""GET /dashboard: the operators' page (static HTML + JS polling JSON, no external assets), and
GET /dashboard/data, what it draws that no other route serves.

The time series are sampled by the worker (one point every SAMPLE_SECONDS, the last
HISTORY_SECONDS): every browser tab then shows the same history from its first poll, and rates
do not depend on when or how often a tab polls."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faust.web import Request, Response, View

from streams import review
from streams.app import app, settings
from streams.auth import Role, html_response, requires
from streams.moderation import filters, latest_comments
from streams.monitoring import (
    CLASSIFY_SECONDS,
    DEAD_LETTERS,
    EVENTS,
    LOOP_LAG,
    consumer_lag,
    counter_values,
    is_ready,
)
from streams.serving import serving

STATIC = Path(__file__).parent / "static"


def inline_vendored(page: bytes) -> bytes:
    """The page with each vendored library (streams/static/vendor) put in place of its
    `/*vendor:NAME*/` marker: no route of its own, and the page's CSP hash pins its bytes."""
    for path in (STATIC / "vendor").glob("*.js"):
        code = path.read_bytes().split(b"\n//# sourceMappingURL=")[0]  # no map is shipped
        page = page.replace(f"/*vendor:{path.name}*/".encode(), code)
    return page


PAGE = inline_vendored((STATIC / "dashboard.html").read_bytes())

SAMPLE_SECONDS = 2.0
HISTORY_SECONDS = 600.0
VERSIONS_KEPT = 50


@dataclass
class Totals:
    """Cumulative figures at one instant; a point is the difference of two of these."""

    t: float
    events: dict[str, float] = field(default_factory=dict)
    classified_seconds: float = 0.0
    classified: float = 0.0


def classification_totals() -> tuple[float, float]:
    """(sum of latencies in s, number of labels) of the classification histogram so far."""
    figures = {s.name: s.value for m in CLASSIFY_SECONDS.collect() for s in m.samples}
    return (
        figures.get("smartstream_classification_seconds_sum", 0.0),
        figures.get("smartstream_classification_seconds_count", 0.0),
    )


class History:
    """A bounded ring of points, each about the interval since the point before it: events/s
    per topic, consumer lag per topic, labels made, their mean latency, the spam share of the
    labels; and cluster sizes per model version."""

    def __init__(self, start: Totals, points: int = int(HISTORY_SECONDS / SAMPLE_SECONDS)) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=points)
        self.last = start
        self.start = start.t  # where the first kept point's interval begins
        self.versions: dict[int, dict[str, int]] = {}

    def add(self, now: Totals, lag: dict[str, int], labels: Iterable[dict[str, Any]]) -> None:
        """Append the point of (self.last.t, now.t]. `labels` are recent comment labels (with
        their `ts`): those of the interval the filter decided (not "unknown" or "pending") give
        its spam share."""
        dt = now.t - self.last.t
        if dt <= 0:
            return
        count = now.classified - self.last.classified
        latency = now.classified_seconds - self.last.classified_seconds
        made = [
            c for c in labels if self.last.t < c["ts"] <= now.t and c.get("state") == "labelled"
        ]
        if len(self.points) == self.points.maxlen:
            self.start = self.points[0]["t"]
        self.points.append(
            {
                "t": now.t,
                "events_per_s": {
                    topic: (n - self.last.events.get(topic, 0.0)) / dt
                    for topic, n in now.events.items()
                },
                "lag": dict(lag),
                "labels": int(count),
                "label_latency_ms": 1000 * latency / count if count else None,
                "spam_share": sum(bool(c["is_spam"]) for c in made) / len(made) if made else None,
            }
        )
        self.last = now

    def remember_version(self, version: int, sizes: dict[str, int]) -> None:
        if version in self.versions:
            return
        self.versions[version] = dict(sizes)
        for old in sorted(self.versions)[:-VERSIONS_KEPT]:
            del self.versions[old]

    def columns(self) -> dict[str, Any]:
        """The series as columns (what the charts take): a missing lag is null (unknown), a
        missing event count 0 (the topic's counter did not exist yet)."""
        points = list(self.points)
        topics = sorted({t for p in points for t in p["events_per_s"]})
        lagged = sorted({t for p in points for t in p["lag"]})
        versions = sorted(self.versions)
        labels = sorted({label for v in versions for label in self.versions[v]})
        return {
            "interval_s": SAMPLE_SECONDS,
            "start": self.start,
            "t": [p["t"] for p in points],
            "events_per_s": {t: [p["events_per_s"].get(t, 0.0) for p in points] for t in topics},
            "lag": {t: [p["lag"].get(t) for p in points] for t in lagged},
            "labels": [p["labels"] for p in points],
            "label_latency_ms": [p["label_latency_ms"] for p in points],
            "spam_share": [p["spam_share"] for p in points],
            "cluster_sizes": {
                "versions": versions,
                "sizes": {
                    label: [self.versions[v].get(label, 0) for v in versions] for label in labels
                },
            },
        }


history = History(Totals(time.time()))


@app.timer(SAMPLE_SECONDS)
async def sample_history() -> None:
    classified_seconds, classified = classification_totals()
    now = Totals(time.time(), counter_values(EVENTS), classified_seconds, classified)
    history.add(now, consumer_lag() if is_ready() else {}, latest_comments)
    # Both served documents: a version replaced within one interval still gets its sizes.
    for document in (serving.previous, serving.document):
        if document is not None:  # validated when it was loaded
            history.remember_version(document["version"], document["mixture"]["sizes"])


@app.page("/dashboard")
class DashboardView(View):
    async def get(self, request: Request) -> Response:
        """The page holds no data (its script asks for the admin token and sends it as a
        header to /dashboard/data), so it is served to anyone."""
        return html_response(self, PAGE)


@app.page("/dashboard/data")
class DashboardDataView(View):
    @requires(Role.ADMIN)
    async def get(self, request: Request) -> Response:
        document = serving.document or {}
        population = serving.population
        return self.json(
            {
                "now": time.time(),
                "ready": is_ready(),
                "events": counter_values(EVENTS),
                "dead_letters": counter_values(DEAD_LETTERS),
                "lag": consumer_lag() if is_ready() else {},
                # smartstream_event_loop_lag_seconds: the worst lateness of the last 15 s
                "event_loop_lag_s": LOOP_LAG.worst(),
                "sample": document.get("sample"),
                "version": serving.version,
                "online_band": list(population.band)
                if population is not None and population.n
                else None,
                "filters": sorted(filters),
                "comments": list(latest_comments),
                "features": settings.clustering_features.split(","),
                "topic_prefix": settings.topic_prefix,
                "history": history.columns(),
                "moderation": review.figures(),
            }
        )
