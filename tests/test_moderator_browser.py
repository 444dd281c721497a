"""The moderator page in real headless Chromium (tests/conftest.py's `browser` fixture): a
doubtful comment appears in the queue, shown as text; one click approves it, the verdict reaches
`comment-reviews` and the queue empties. Screenshots go to $TEST_ARTIFACTS (default
run/test/artifacts)."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ARTIFACTS, Stack, http, wait_for
from tests.spamdata import corpus, write_youtube_csv

pytestmark = pytest.mark.integration
TOKEN = "moderator-page-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Words the filter never saw (a score near the prior, inside the band), and markup that must
# stay text.
DOUBTFUL = 'hello there <img src=x onerror="window.pwned=1"><b>friend</b>'


def queue(worker) -> list[dict]:
    status, body = http("GET", worker.url + "/moderation/queue", None, AUTH)
    return body["entries"] if status == 200 else []


def test_one_click_approves_a_doubtful_comment(browser, stack: Stack, tmp_path) -> None:
    stack.env.update(
        SMARTSTREAM_API_TOKEN=TOKEN,
        SMARTSTREAM_MODERATION_PENDING_LOW="0.35",
        SMARTSTREAM_MODERATION_PENDING_HIGH="0.65",
    )
    worker = stack.start_worker()
    stack.pretrain(write_youtube_csv(tmp_path / "Youtube01-Test.csv", *corpus(300, seed=3)))
    wait_for(
        lambda: http("GET", worker.url + "/spam-filters/comments", None, AUTH)[1]["version"],
        120,
        "the pretrained filter",
    )
    producer = stack.producer()
    producer.comment("doubtful", DOUBTFUL, user_id="u7")
    producer.comment("obvious", "free money click subscribe cash win", user_id="u8")
    producer.flush()
    entries = wait_for(lambda: queue(worker), 60, "the doubtful comment in the queue")
    assert [e["comment_id"] for e in entries] == ["doubtful"]
    wait_for(lambda: "obvious" in stack.labels_by_comment(), 30, "the obvious comment's label")

    page = browser.new_page(viewport={"width": 1100, "height": 600})
    problems: list[str] = []
    # Script errors and CSP refusals; not the expected 401 of the first load (nor the favicon).
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(worker.url + "/moderation")
    page.wait_for_selector("#login:not([hidden])", timeout=20000)  # 401: the page asks once
    page.fill("#token", TOKEN)
    page.fill("#reviewer", "alice")
    page.click("#login button[type=submit]")
    item = page.locator("li.entry", has_text="hello there")
    item.wait_for(timeout=20000)
    assert item.locator(".text").inner_text() == DOUBTFUL  # shown as text ...
    assert page.locator("li.entry b, li.entry img").count() == 0  # ... never as HTML
    assert page.evaluate("window.pwned") is None
    assert f"{entries[0]['score']:.3f}" in item.locator(".meta").inner_text()
    assert page.locator("li.entry").count() == 1  # the obvious spam was labelled at once
    page.screenshot(path=str(ARTIFACTS / "moderation-queue.png"), full_page=True)

    item.locator("button.approve").click()
    page.wait_for_selector("#empty:not([hidden])", timeout=20000)
    review = json.loads(stack.consume_all("comment-reviews", 1)[0].value)
    assert (review["comment_id"], review["is_spam"], review["reviewer"]) == (
        "doubtful",
        False,
        "alice",
    )
    wait_for(lambda: queue(worker) == [], 30, "the queue to empty")
    # A refresh from the server (not only the click's own removal) shows the empty queue.
    page.locator("#status", has_text=re.compile(r"^0 pending")).wait_for(timeout=20000)
    assert page.locator("li.entry").count() == 0
    final = wait_for(
        lambda: (v := stack.labels_by_comment().get("doubtful")) and len(v) == 2 and v,
        30,
        "the reviewed label",
    )
    assert [v["state"] for v in final] == ["pending", "reviewed"]
    assert final[1]["is_spam"] is False
    page.screenshot(path=str(ARTIFACTS / "moderation-empty.png"), full_page=True)
    assert problems == []
    page.close()
    producer.close()
