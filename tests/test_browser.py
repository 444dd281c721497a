"""End-to-end in real headless Chromium (Debian's package, driven by Playwright): the dashboard
shows what the JSON routes say, a demo page's beacon adds one visit, and a comment with HTML is
shown escaped and labelled. Screenshots go to $TEST_ARTIFACTS (default run/test/artifacts)."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from pathlib import Path

import pytest

from producers.population import generate
from producers.traffic import Traffic
from tests.conftest import ROOT, Stack, wait_for
from tests.spamdata import corpus

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "run" / "test" / "artifacts"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium executable (scripts/test.sh installs Debian's package)")
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def live(stack: Stack):
    """A worker with a clustering model of the original population and a trained spam filter."""
    worker = stack.start_worker()
    producer = stack.producer()
    traffic = Traffic(generate(200), seed=5)
    for event in itertools.chain(traffic.new_users(), traffic.history()):
        producer.send(event.topic, event.key, event.value)
    texts, labels = corpus(300, seed=4)
    for text, spam in zip(texts, labels, strict=True):
        key = f"comments:{hashlib.sha1(text.encode()).hexdigest()}"
        producer.send("pretraining", key, {"filter": "comments", "text": text, "is_spam": spam})
    producer.flush()
    wait_for(
        lambda: (
            worker.get("/users/200")[0] == 200 and worker.get("/users/200")[1]["visits_pages"] > 80
        ),
        120,
        "the population's history",
    )
    for model in ("clustering", "spam:comments"):
        producer.send("control", model, {"action": "run", "model": model, "reason": "test"})
    producer.flush()
    wait_for(
        lambda: (
            worker.get("/clusters")[1]["current"]
            and worker.get("/spam-filters/comments")[1]["version"]
        ),
        120,
        "both models",
    )
    yield worker, producer
    producer.close()


def test_dashboard_shows_the_json_figures(browser, live) -> None:
    worker, _ = live
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(worker.url + "/dashboard")
    page.wait_for_selector("#clusters-current tr:nth-child(2)", timeout=20000)
    page.wait_for_function("document.querySelectorAll('#scatter circle').length > 0", timeout=20000)
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
    assert page.locator("#scatter circle").count() == len(sample["points"])
    assert page.locator("#scatter polyline").count() == len(clusters["clusters"])
    version = worker.get("/spam-filters/comments")[1]["version"]
    assert f"v{version}" in page.locator("#filters").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.close()


def test_demo_page_beacon_adds_a_visit_and_comments_are_escaped(browser, live) -> None:
    worker, _ = live
    before = worker.get("/users/7")[1]
    page = browser.new_page()
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
