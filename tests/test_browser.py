"""End-to-end in real headless Chromium (Debian's package, driven by Playwright): the dashboard
shows what the JSON routes say, a demo page's beacon adds one visit, and a comment with HTML is
shown escaped and labelled. Screenshots go to $TEST_ARTIFACTS (default run/test/artifacts)."""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from urllib.parse import urlparse

import pytest

from producers.population import generate
from producers.traffic import Traffic
from tests.conftest import ARTIFACTS, Stack, wait_for
from tests.spamdata import corpus

pytestmark = pytest.mark.integration


# Pages are served with a Content-Security-Policy that forbids eval (tests/test_auth_integration.py
# checks it); Playwright's wait_for_function evaluates its predicate with eval, so the test pages
# open with bypass_csp=True.


@pytest.fixture
def live(stack: Stack):
    """A worker with a clustering model of the original population and a trained spam filter;
    yields it, a producer and how many events of each topic were sent."""
    worker = stack.start_worker()
    producer = stack.producer()
    traffic = Traffic(generate(200), seed=5)
    sent: Counter[str] = Counter()
    for event in itertools.chain(traffic.new_users(), traffic.history()):
        producer.send(event.topic, event.key, event.value)
        sent[event.topic] += 1
    texts, labels = corpus(300, seed=4)
    for text, spam in zip(texts, labels, strict=True):
        producer.pretraining("comments", text, spam)
    producer.flush()
    wait_for(
        lambda: (
            worker.get("/users/200")[0] == 200 and worker.get("/users/200")[1]["visits_pages"] > 80
        ),
        120,
        "the population's history",
    )
    for model in ("clustering", "spam:comments"):
        producer.request_run(model, "test")
    producer.flush()
    wait_for(
        lambda: (
            worker.get("/clusters")[1]["current"]
            and worker.get("/spam-filters/comments")[1]["version"]
        ),
        120,
        "both models",
    )
    yield worker, producer, sent
    producer.close()


def test_dashboard_shows_the_json_figures(browser, live) -> None:
    worker, _, _ = live
    page = browser.new_page(bypass_csp=True, viewport={"width": 1400, "height": 1100})
    page.goto(worker.url + "/dashboard")
    page.wait_for_selector("#clusters-current tr:nth-child(2)", timeout=20000)
    page.wait_for_function("window.dashboardData && window.dashboardData.sample", timeout=20000)
    clusters = worker.get("/clusters")[1]["current"]
    rows = page.eval_on_selector_all(
        "#clusters-current tr",
        "rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent))",
    )
    assert [(r[0], int(r[1])) for r in rows] == [
        (c["label"], c["size"]) for c in clusters["clusters"]
    ]
    for r, c in zip(rows, clusters["clusters"], strict=True):
        assert [float(x) for x in r[2:]] == pytest.approx(c["mean"], abs=0.0006)
    sample = worker.get("/dashboard/data")[1]["sample"]
    scatter = page.evaluate(CHART_STATE, "scatter")
    points = [d for d in scatter["datasets"] if not d["label"].endswith(ELLIPSE)]
    ellipses = [d for d in scatter["datasets"] if d["label"].endswith(ELLIPSE)]
    by_label: dict[str, list[dict]] = {}
    for point, label in zip(sample["points"], sample["labels"], strict=True):
        by_label.setdefault(label, []).append({"x": point[0], "y": point[1]})
    assert {d["label"]: d["data"] for d in points} == by_label
    assert sorted(d["label"] for d in ellipses) == [
        c["label"] + ELLIPSE for c in clusters["clusters"]
    ]
    # Axes named after the features, with tick labels, and a legend of the clusters.
    assert [scatter["x_title"], scatter["y_title"]] == clusters["features"]
    assert len(scatter["x_ticks"]) > 2 and len(scatter["y_ticks"]) > 2
    assert scatter["legend"] == sorted(by_label)
    version = worker.get("/spam-filters/comments")[1]["version"]
    assert f"v{version}" in page.locator("#filters").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.close()


ELLIPSE = " 2\N{GREEK SMALL LETTER SIGMA}"  # the scatter's ellipse datasets: "A 2 sigma"
# The state of a Chart.js chart: its datasets, axis titles, tick labels and legend entries.
CHART_STATE = """id => {
  const chart = Chart.getChart(id);
  const box = chart.canvas.getBoundingClientRect();
  return {
    width: box.width, height: box.height,
    datasets: chart.data.datasets.map(d => ({label: d.label, data: d.data})),
    labels: chart.data.labels,
    x_title: chart.options.scales.x.title.text, y_title: chart.options.scales.y.title.text,
    x_ticks: chart.scales.x.ticks.map(t => t.label),
    y_ticks: chart.scales.y.ticks.map(t => t.label),
    legend: chart.legend.legendItems.map(i => i.text),
  };
}"""
COMMENT_BURSTS, BURST = 3, 8


def send_comment_bursts(stack: Stack, worker, producer) -> None:
    """Bursts of comments, each sent once the worker sampled the previous one: an interval
    then holds at most one burst, fewer than the 20 recent labels its spam share reads. Burst b
    has 2(b+1) spam comments of 8, so the share moves."""
    texts, labels = corpus(200, seed=11)
    spam = [t for t, s in zip(texts, labels, strict=True) if s]
    ham = [t for t, s in zip(texts, labels, strict=True) if not s]
    for burst in range(COMMENT_BURSTS):
        n_spam = 2 * (burst + 1)
        chosen = (
            spam[burst * BURST : burst * BURST + n_spam] + ham[burst * BURST :][: BURST - n_spam]
        )
        for i, text in enumerate(chosen):
            cid = f"dash-{burst}-{i}"
            producer.send("comments", cid, {"comment_id": cid, "user_id": "7", "text": text})
        producer.flush()
        wait_for(
            lambda n=(burst + 1) * BURST: sum(history(worker)["labels"]) >= n,
            60,
            f"burst {burst} labelled and sampled",
        )


def history(worker) -> dict:
    return worker.get("/dashboard/data")[1]["history"]


def expected_label_points(stack: Stack, hist: dict) -> list[tuple[int, float | None, float | None]]:
    """Ground truth from the topics: per sampled interval, the labels made in it, their mean
    latency (label ts minus the comment record's timestamp) and the spam share."""
    made = {
        json.loads(m.value)["comment_id"]: m.timestamp / 1000
        for m in stack.consume_all("comments", COMMENT_BURSTS * BURST)
    }
    labels = [json.loads(m.value) for m in stack.consume_all("comment-labels", len(made))]
    out = []
    bounds = [hist["start"], *hist["t"]]
    for lo, hi in itertools.pairwise(bounds):
        inside = [v for v in labels if lo < v["ts"] <= hi]
        latency = [max(0.0, v["ts"] - made[v["comment_id"]]) for v in inside]
        spam = [v["is_spam"] for v in inside if v["state"] == "labelled"]
        out.append(
            (
                len(inside),
                1000 * sum(latency) / len(latency) if latency else None,
                sum(spam) / len(spam) if spam else None,
            )
        )
    return out


def test_time_axes_label_every_history_span(browser) -> None:
    """Every time chart has at least two labelled ticks whatever span its history covers
    (Chart.js's own steps left one tick for spans of 80-100 s: a CI run failed on it)."""
    from streams.dashboard import PAGE

    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.route("**/*", lambda route: route.fulfill(body=PAGE, content_type="text/html"))
    page.goto("http://dashboard.test/dashboard")
    spans = (4, 9, 17, 33, 61, 81.3, 95, 99.9, 170, 333, 599, 1234, 7200)
    for span, phase in itertools.product(spans, (0.0, 0.3, 0.55, 0.8)):
        start = 1_796_000_000.0 + phase * span  # where the first sample falls between ticks
        t = [start + span * i / 7 for i in range(8)]
        page.evaluate(
            "h => drawHistory(h, '')",
            {
                "interval_s": 2,
                "t": t,
                "events_per_s": {"page-times": [1.0] * 8},
                "lag": {"page-times": [0] * 8},
                "label_latency_ms": [5.0] * 8,
                "spam_share": [0.5] * 8,
                "cluster_sizes": {"versions": [], "sizes": {}},
            },
        )
        for name in ("events", "lag", "latency", "spam"):
            ticks = page.evaluate(CHART_STATE, f"chart-{name}")["x_ticks"]
            assert len(set(ticks)) >= 2, (span, name, ticks)
    page.close()


def test_dashboard_charts_draw_the_worker_history(browser, live, stack: Stack) -> None:
    worker, producer, sent = live
    producer.send("control", "clustering", {"action": "run", "model": "clustering", "reason": "t"})
    send_comment_bursts(stack, worker, producer)
    wait_for(lambda: worker.get("/clusters")[1]["current"]["version"] >= 2, 120, "clustering v2")
    page_times = stack.settings.topic("page-times")
    # Every page view counted, then one more sample: the history holds them all.

    def counted() -> float | None:
        data = worker.get("/dashboard/data")[1]
        return data["now"] if data["events"].get(page_times) == sent["page-times"] else None

    seen = wait_for(counted, 60, "every page view counted")
    wait_for(lambda: history(worker)["t"][-1] > seen, 10, "a sample after the last page view")

    requests: list[str] = []
    page = browser.new_page(bypass_csp=True, viewport={"width": 1400, "height": 1600})
    page.on("request", lambda r: requests.append(r.url))
    page.goto(worker.url + "/dashboard")
    page.wait_for_function(
        "window.dashboardData && window.dashboardData.history.cluster_sizes.versions.length >= 2",
        timeout=20000,
    )
    shown = page.evaluate("window.dashboardData.history")
    charts = {
        name: page.evaluate(CHART_STATE, f"chart-{name}")
        for name in ("events", "lag", "latency", "spam", "sizes")
    }
    server = history(worker)
    clusters = worker.get("/clusters")[1]
    page.screenshot(path=str(ARTIFACTS / "dashboard-charts.png"), full_page=True)
    page.locator("section.wide").screenshot(path=str(ARTIFACTS / "dashboard-trends.png"))

    for name, state in charts.items():
        assert state["width"] > 100 and state["height"] > 100, name
        assert len(state["x_ticks"]) > 1 and len(state["y_ticks"]) > 1, name

    # The charts draw exactly the figures of /dashboard/data the page read ...
    def drawn(values: list) -> list[dict]:
        return [{"x": t, "y": v} for t, v in zip(shown["t"], values, strict=True) if v is not None]

    def per_topic(chart: dict) -> dict[str, list]:  # legends name topics without the prefix
        return {stack.prefix + d["label"]: d["data"] for d in chart["datasets"]}

    assert per_topic(charts["events"]) == {t: drawn(v) for t, v in shown["events_per_s"].items()}
    assert per_topic(charts["lag"]) == {t: drawn(v) for t, v in shown["lag"].items()}
    assert charts["latency"]["datasets"][0]["data"] == drawn(shown["label_latency_ms"])
    assert charts["spam"]["datasets"][0]["data"] == drawn(
        [None if s is None else 100 * s for s in shown["spam_share"]]
    )
    # ... which are the worker's samples: a later read holds the same points.
    common = set(shown["t"]) & set(server["t"])
    assert len(common) >= len(shown["t"]) - 1 > 3
    at = {t: i for i, t in enumerate(server["t"])}
    for i, t in enumerate(shown["t"]):
        if t in common:
            assert shown["labels"][i] == server["labels"][at[t]]
            assert shown["spam_share"][i] == server["spam_share"][at[t]]
            for topic, values in shown["events_per_s"].items():
                assert values[i] == server["events_per_s"][topic][at[t]]

    # Ground truth: the page views sent are the integral of the page-times rate ...
    assert len(server["t"]) < 300  # nothing left the ring yet
    dts = [b - a for a, b in itertools.pairwise([server["start"], *server["t"]])]
    rates = server["events_per_s"][page_times]
    assert sum(r * dt for r, dt in zip(rates, dts, strict=True)) == pytest.approx(
        sent["page-times"], abs=1e-6
    )
    assert max(rates) > 0 and server["lag"][page_times][-1] == 0
    # ... the labels, their latency and spam share per interval are those of the topics ...
    expected = expected_label_points(stack, server)
    assert server["labels"] == [n for n, _, _ in expected]
    assert sum(server["labels"]) == COMMENT_BURSTS * BURST
    for got, (_, latency, _) in zip(server["label_latency_ms"], expected, strict=True):
        assert got == (None if latency is None else pytest.approx(latency, rel=1e-9, abs=1e-6))
    assert server["spam_share"] == [share for _, _, share in expected]
    assert len({s for s in server["spam_share"] if s is not None}) > 1  # the share moved
    # ... and the cluster sizes per version those of /clusters.
    sizes = charts["sizes"]
    by_label = {d["label"]: d["data"] for d in sizes["datasets"]}
    for model in (clusters["previous"], clusters["current"]):
        column = sizes["labels"].index(f"v{model['version']}")
        for cluster in model["clusters"]:
            assert by_label[cluster["label"]][column] == cluster["size"]

    # Nothing came from outside the worker.
    assert requests and {urlparse(u).hostname for u in requests} == {"127.0.0.1"}
    page.close()


def test_dashboard_asks_for_the_admin_token_and_sends_it_only_in_a_header(
    browser, stack: Stack
) -> None:
    token = "adm-" + stack.prefix
    stack.env.update(SMARTSTREAM_ADMIN_TOKEN=token, SMARTSTREAM_API_TOKEN="srv-" + stack.prefix)
    worker = stack.start_worker()
    page = browser.new_page(bypass_csp=True)
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    page.goto(worker.url + "/dashboard")
    page.locator("#login").wait_for(state="visible", timeout=20000)
    assert "admin token" in page.locator("#status").inner_text()
    page.fill("#token", token)
    page.click("#login button")
    page.wait_for_function("window.dashboardData && window.dashboardData.ready", timeout=20000)
    # Once given as a fragment (never sent), the token is kept and the address forgets it.
    second = browser.new_page(bypass_csp=True)
    second.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    second.goto(f"{worker.url}/dashboard#token={token}")
    second.wait_for_function("window.dashboardData && window.dashboardData.ready", timeout=20000)
    assert token not in second.url
    assert all(token not in url for url, _ in sent)
    data_requests = [auth for url, auth in sent if urlparse(url).path == "/dashboard/data"]
    assert data_requests and data_requests[-1] == f"Bearer {token}"
    page.close()
    second.close()


def test_demo_page_beacon_adds_a_visit_and_comments_are_escaped(browser, live) -> None:
    worker, _, _ = live
    before = worker.get("/users/7")[1]
    page = browser.new_page(bypass_csp=True)
    page.goto(worker.url + "/pages/B/7")
    page.wait_for_function("document.getElementById('group').textContent.includes('Group')")
    assert "User n° 7" in page.locator("#group").inner_text()
    page.wait_for_function("Number(document.getElementById('counter').textContent) >= 1")
    page.screenshot(path=str(ARTIFACTS / "page-b.png"), full_page=True)
    page.click("#another")  # leaving the page sends the beacon
    page.wait_for_url("**/pages/*/7")
    after = wait_for(
        lambda: (
            (u := worker.get("/users/7")[1])["visits_pages"] == before["visits_pages"] + 1 and u
        ),
        30,
        "the beacon's visit",
    )
    assert after["visits_pages_b"] == before["visits_pages_b"] + 1

    hostile = '<img src=x onerror="window.pwned=1"><b>bold</b> free money click subscribe'
    page.goto(worker.url + "/pages/comments/7")
    page.fill("#comment-text", hostile)
    page.click("button[type=submit]")
    item = page.locator("#comments li", has_text="free money click subscribe").first
    item.wait_for(timeout=30000)
    assert hostile in item.inner_text()  # shown as text ...
    assert page.locator("#comments li b, #comments li img").count() == 0  # ... never as HTML
    assert page.evaluate("window.pwned") is None
    assert item.locator("span").inner_text().strip() in ("[spam]", "[ok]")
    page.screenshot(path=str(ARTIFACTS / "comments.png"), full_page=True)
    page.close()


def test_history_ring_keeps_its_last_points_and_where_they_start() -> None:
    """Pure logic of the worker's sampler: rates are differences over each interval, the ring
    drops the oldest point and moves `start` to it, spam share reads the interval's labels."""
    os.environ.setdefault("SMARTSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    from streams.dashboard import History, Totals

    ring = History(Totals(100.0), points=3)
    labels = [
        {"ts": 101.0, "state": "labelled", "is_spam": True},
        {"ts": 101.5, "state": "unknown", "is_spam": None},
        {"ts": 103.0, "state": "labelled", "is_spam": False},
        {"ts": 104.0, "state": "labelled", "is_spam": True},
    ]
    for i, (t, count) in enumerate([(102.0, 10), (104.0, 30), (105.0, 30), (109.0, 70)]):
        ring.add(Totals(t, {"page-times": count}, 0.01 * (i + 1), i + 1), {"page-times": i}, labels)
    ring.add(Totals(109.0, {"page-times": 99}), {}, [])  # no time elapsed: no point
    columns = ring.columns()
    assert columns["t"] == [104.0, 105.0, 109.0] and columns["start"] == 102.0
    assert columns["events_per_s"] == {"page-times": [10.0, 0.0, 10.0]}
    assert columns["lag"] == {"page-times": [1, 2, 3]}
    assert columns["labels"] == [1, 1, 1]
    assert columns["label_latency_ms"] == pytest.approx([10.0, 10.0, 10.0])
    assert columns["spam_share"] == [0.5, None, None]
    for version in range(1, 60):
        ring.remember_version(version, {"A": version})
    sizes = ring.columns()["cluster_sizes"]
    assert sizes["versions"] == list(range(10, 60)) and sizes["sizes"]["A"] == sizes["versions"]
