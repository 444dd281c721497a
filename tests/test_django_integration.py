"""The Django integration (producers.django) through Django's test client, against the real broker,
Redis and a worker with credentials configured: views' events reach the worker's tables, a
comment's label and the user's cluster come back from Redis in one round trip, the beacon tag
carries the public key (never the server token) and escapes what it renders, real Chromium's
beacon from a rendered page is counted, sends stay bounded when the broker does not answer, and
buffered events are flushed at exit."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

SITE = Path(__file__).resolve().parent / "django_site"
if not settings.configured:
    settings.configure(
        SECRET_KEY="tests-only",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "producers.django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        ROOT_URLCONF="tests.django_site.urls",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [SITE / "templates"],
                "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
            }
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
        SMARTSTREAM={},
    )
    django.setup()

import redis  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.checks import run_checks  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from producers.django import events, readers  # noqa: E402
from producers.django.conf import build  # noqa: E402
from tests.conftest import ROOT, Stack, Worker, http, wait_for  # noqa: E402
from tests.spamdata import corpus  # noqa: E402

PUBLIC = "pub-key-Q7"
SERVER = "server-token-Z9"
setup_test_environment()


@pytest.fixture(scope="module", autouse=True)
def database() -> None:
    call_command("migrate", verbosity=0)


@pytest.fixture(scope="module")
def live(broker: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One worker for the module, with the credentials a production site would configure."""
    stack = Stack(
        broker,
        redis_url,
        tmp_path_factory.mktemp("django"),
        SMARTSTREAM_PUBLIC_INGEST_KEY=PUBLIC,
        SMARTSTREAM_API_TOKEN=SERVER,
    )
    try:
        yield stack, stack.start_worker()
    finally:
        stack.stop()


def site_settings(stack: Stack, worker: Worker, **extra: Any) -> dict[str, Any]:
    """The SMARTSTREAM dict of the site's settings.py, pointing at the stack."""
    return {
        "KAFKA_BOOTSTRAP": stack.env["SMARTSTREAM_KAFKA_BOOTSTRAP"].split(","),
        "REDIS_URL": stack.env["SMARTSTREAM_REDIS_URL"],
        "TOPIC_PREFIX": stack.prefix,
        "PUBLIC_INGEST_KEY": PUBLIC,
        "API_TOKEN": SERVER,
        "BEACON_ENDPOINT": f"{worker.url}/events/page-time",
        **extra,
    }


def worker_get(worker: Worker, path: str) -> tuple[int, Any]:
    return http("GET", worker.url + path, headers={"Authorization": f"Bearer {SERVER}"})


def logged_in(pk: int) -> Client:
    user, _ = User.objects.get_or_create(pk=pk, defaults={"username": f"user{pk}"})
    client = Client()
    client.force_login(user)
    return client


def latest_by_key(stack: Stack, topic: str) -> dict[bytes, dict]:
    return {m.key: json.loads(m.value) for m in stack.consume_all(topic, 0)}


def test_views_send_events_the_worker_applies(live) -> None:
    stack, worker = live
    before = events.stats()
    with override_settings(SMARTSTREAM=site_settings(stack, worker)):
        client = logged_in(1001)
        answer = client.post("/signup/", {"age": 41, "sex": "F", "avg1": 12.5})
        assert answer.status_code == 200 and answer.json() == {"sent": True}
        views = [("A", 12.0), ("C", 30.5), ("a", 7.25)]
        for page, seconds in views:
            answer = client.post(f"/pages/{page}/time/", {"seconds": seconds})
            assert answer.json() == {"sent": True}
        # Refused in the view's process, with a reason: nothing reaches the topic.
        assert client.post("/pages/Z/time/", {"seconds": 3}).json() == {"sent": False}
        assert client.post("/pages/B/time/", {"seconds": -1}).json() == {"sent": False}

        user = wait_for(
            lambda: (
                (u := worker_get(worker, "/users/1001"))[0] == 200
                and u[1]["visits_pages"] == 3
                and u[1]
            ),
            60,
            "the user's page views on the worker",
        )
    assert (user["age"], user["sex"], user["avg1"]) == (41, "F", 12.5)
    assert user["avg_time_pages"] == pytest.approx((12.0 + 30.5 + 7.25) / 3)
    assert (user["visits_pages_a"], user["visits_pages_c"]) == (2, 1)
    assert user["avg_time_pages_a"] == pytest.approx((12.0 + 7.25) / 2)
    assert user["avg_time_pages_c"] == pytest.approx(30.5)

    records = [r for r in stack.consume_all("page-times", 3) if r.key == b"1001"]
    assert len(records) == 3  # the refused views were never produced
    assert sorted(json.loads(r.value)["seconds"] for r in records) == [7.25, 12.0, 30.5]
    joined = [json.loads(r.value) for r in stack.consume_all("new-users", 1) if r.key == b"1001"]
    assert [(v["user_id"], v["age"], v["sex"]) for v in joined] == [("1001", 41, "F")]
    after = wait_for(
        lambda: (s := events.stats())["acknowledged"] - before["acknowledged"] == 4 and s,
        30,
        "the broker's acknowledgements",
    )
    assert after["sent"] - before["sent"] == 4
    assert after["refused"] - before["refused"] == 2
    assert after["failed"] == before["failed"]


def background(stack: Stack) -> None:
    """Sixty users in two clear groups of reading time (avg1 ~ 10 +- 1), and a pretraining
    corpus for the spam filter."""
    producer = stack.producer()
    rng = random.Random(7)
    for i in range(60):
        uid = f"bg{i}"
        producer.new_user(uid, age=20 + i % 40, sex="MF"[i % 2], avg1=rng.gauss(10, 1))
        for _ in range(4):
            producer.page_time(uid, "AB"[i % 2], rng.gauss(15 if i % 3 else 60, 2))
    texts, labels = corpus(300, seed=4)
    for text, spam in zip(texts, labels, strict=True):
        producer.pretraining("comments", text, spam)
    producer.flush()
    producer.close()


def run_models(stack: Stack, worker: Worker) -> None:
    producer = stack.producer()
    for model in ("clustering", "spam:comments"):
        producer.request_run(model, "test")
    producer.flush()
    producer.close()
    wait_for(
        lambda: (
            worker_get(worker, "/clusters")[1]["current"]
            and worker_get(worker, "/spam-filters/comments")[1]["version"] >= 1
        ),
        180,
        "a clustering and a trained spam filter",
    )


class RoundTrips:
    """Counts what redis-py writes to its sockets: one write per round trip (a command, or a
    whole pipeline)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[bytes] = []
        original = redis.connection.AbstractConnection.send_packed_command

        def counting(conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
            parts = [command] if isinstance(command, bytes | str) else list(command)
            self.sent.append(
                b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in parts)
            )
            return original(conn, command, *args, **kwargs)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)


def test_cluster_atypical_and_label_read_from_redis_in_one_round_trip(live, monkeypatch) -> None:
    stack, worker = live
    background(stack)
    with override_settings(SMARTSTREAM=site_settings(stack, worker)):
        outlier, typical = logged_in(1002), logged_in(1003)
        for client, avg1 in ((outlier, 95.0), (typical, 10.2)):
            assert client.post("/signup/", {"age": 30, "sex": "M", "avg1": avg1}).json()["sent"]
            for page, seconds in (("A", 14.0), ("B", 16.0)):
                client.post(f"/pages/{page}/time/", {"seconds": seconds})
        wait_for(
            lambda: all(
                (u := worker_get(worker, f"/users/{uid}"))[0] == 200 and u[1]["visits_pages"]
                for uid in ("1002", "1003", "bg59")
            ),
            60,
            "the users on the worker",
        )
        run_models(stack, worker)

        spam_id, ham_id = f"c-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
        for cid, text in (
            (spam_id, "free money click subscribe to my channel win cash"),
            (ham_id, "beautiful song I love the chorus and the lyrics"),
        ):
            answer = outlier.post("/comments/", {"comment_id": cid, "text": text})
            assert answer.json() == {"comment_id": cid, "sent": True}

        def me(client: Client, comment: str = "") -> dict:
            return client.get("/me/", {"comment": comment} if comment else {}).json()

        def settled(client: Client, uid: str, comment: str = "") -> dict | None:
            """The view's answer once it agrees with the topics (independent ground truth)."""
            seen = me(client, comment)
            assigned = latest_by_key(stack, "cluster-assignments").get(uid.encode())
            if not assigned or seen["cluster"] != assigned["cluster"]:
                return None
            if comment and seen["comment"] != latest_by_key(stack, "comment-labels").get(
                comment.encode()
            ):
                return None
            return {**seen, "assigned": assigned}

        for cid in (spam_id, ham_id):
            got = wait_for(lambda c=cid: settled(outlier, "1002", c), 90, f"{cid} in Redis")
            assert got["comment"]["state"] == "labelled"
            assert got["comment"]["model_version"] >= 1
        status, row = worker_get(worker, f"/comments/{spam_id}")
        assert status == 200 and row["label"] is True
        assert me(outlier, spam_id)["is_spam"] is True
        assert me(outlier, ham_id)["is_spam"] is False

        # avg1 = 95 among sixty users at 10 +- 1 lies outside mean +- 2 sigma; 10.2 inside.
        first = wait_for(lambda: settled(outlier, "1002"), 60, "the outlier's assignment")
        second = wait_for(lambda: settled(typical, "1003"), 60, "the typical user's assignment")
        assert (first["atypical"], second["atypical"]) == (True, False)
        assert first["assigned"]["atypical"] is True and second["assigned"]["atypical"] is False
        assert first["cluster"] == worker_get(worker, "/users/1002")[1]["cluster"] is not None

        me(outlier, spam_id)  # the connection exists: what follows is the read alone
        trips = RoundTrips(monkeypatch)
        answer = me(outlier, spam_id)
    assert len(trips.sent) == 1, trips.sent
    prefix = stack.settings.redis_prefix.encode()
    assert trips.sent[0].startswith(b"*3\r\n$4\r\nMGET\r\n")
    assert (
        prefix + b"user:1002" in trips.sent[0]
        and prefix + b"comment:" + spam_id.encode() in (trips.sent[0])
    )
    assert (answer["cluster"], answer["atypical"], answer["is_spam"]) == (
        first["cluster"],
        True,
        True,
    )


class Scripts(HTMLParser):
    """The <script> elements of a page: attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[dict[str, str | None], str]] = []
        self._open = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.found.append((dict(attrs), ""))
            self._open = True

    def handle_data(self, data: str) -> None:
        if self._open:
            attrs, text = self.found[-1]
            self.found[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        self._open = False if tag == "script" else self._open


def scripts(html: str) -> list[tuple[dict[str, str | None], str]]:
    parser = Scripts()
    parser.feed(html)
    return parser.found


SITE_ONLY = {
    "KAFKA_BOOTSTRAP": "127.0.0.1:9",
    "TOPIC_PREFIX": "unused-",
    "PUBLIC_INGEST_KEY": PUBLIC,
    "API_TOKEN": SERVER,
    "BEACON_ENDPOINT": "https://worker.example:6066/events/page-time?src=site",
}


@override_settings(SMARTSTREAM=SITE_ONLY)
def test_beacon_tag_carries_the_public_key_only_and_escapes() -> None:
    page = logged_in(1001).get("/article/d/").content.decode()
    assert SERVER not in page
    [(attrs, text)] = scripts(page)
    endpoint = urlsplit(attrs["data-endpoint"] or "")
    assert (endpoint.netloc, endpoint.path) == ("worker.example:6066", "/events/page-time")
    assert parse_qs(endpoint.query) == {"src": ["site"], "key": [PUBLIC]}
    assert (attrs["data-user-id"], attrs["data-page-type"]) == ("1001", "D")
    beacon = (ROOT / "producers" / "web" / "smartstream-beacon.js").read_text()
    assert text == beacon.replace("</", "<\\/") and "</" not in text

    hostile = '1"><script>window.pwned=1</script><img src=x onerror=alert(1)>&amp;'
    page = Client().get("/article/A/", {"visitor": hostile}).content.decode()
    [(attrs, _)] = scripts(page)
    assert attrs["data-user-id"] == hostile  # the same text back, as an attribute value
    assert "<img" not in page and "window.pwned=1</script>" not in page
    assert "&quot;&gt;&lt;script&gt;" in page

    assert scripts(Client().get("/article/A/").content.decode()) == []  # anonymous: no beacon
    assert scripts(logged_in(1001).get("/article/Z/").content.decode()) == []
    with override_settings(SMARTSTREAM={**SITE_ONLY, "BEACON_SRC": "/static/b.js?v=1&x=2"}):
        page = logged_in(1001).get("/article/A/").content.decode()
    [(attrs, text)] = scripts(page)
    assert (attrs["src"], text) == ("/static/b.js?v=1&x=2", "")
    assert 'src="/static/b.js?v=1&amp;x=2"' in page


def ours(messages: list) -> list:
    return [m for m in messages if m.id.startswith("smartstream.")]


def test_settings_dict_maps_onto_the_settings_object() -> None:
    config = build(
        {"KAFKA_BOOTSTRAP": ["k1:9092", "k2:9092"], "PARTITIONS": 12, "KAFKA_EMBEDDED": True},
        environ={"SMARTSTREAM_REDIS_URL": "redis://r:6379/1", "SMARTSTREAM_PARTITIONS": "3"},
    )
    assert config.settings.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert config.settings.partitions == 12  # the dict wins over the environment
    assert config.settings.redis_url == "redis://r:6379/1"  # which fills in the rest
    assert config.settings.kafka_embedded is True
    with override_settings(SMARTSTREAM={"KAFKA_BOOTSRAP": "typo:9092"}):
        [error] = ours(run_checks())
    assert error.id == "smartstream.E001" and "KAFKA_BOOTSRAP" in error.msg
    with override_settings(SMARTSTREAM={"PARTITIONS": "many"}):
        [error] = ours(run_checks())
    assert "SMARTSTREAM_PARTITIONS" in error.msg


@contextlib.contextmanager
def serving(pages: dict[str, str]) -> Iterator[str]:
    """The site's rendered pages over HTTP on loopback, another origin than the worker's (a page
    Chromium cannot place on the network may not send to loopback addresses)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_browser_beacon_with_the_public_key_is_counted(live) -> None:
    from tests.conftest import CHROMIUM, FLAGS

    if CHROMIUM is None:
        pytest.skip("no chromium executable (scripts/test.sh installs Debian's package)")
    playwright = pytest.importorskip("playwright.sync_api")
    stack, worker = live
    refused, counted = f"b-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    pages = {}
    for visitor, key in ((refused, "wrong-key"), (counted, PUBLIC)):
        with override_settings(SMARTSTREAM=site_settings(stack, worker, PUBLIC_INGEST_KEY=key)):
            pages[visitor] = Client().get("/article/A/", {"visitor": visitor}).content.decode()
    served = {f"/{v}": html for v, html in pages.items()} | {"/bye": "<p>bye</p>"}
    with serving(served) as origin, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        for path in (f"/{refused}", f"/{counted}", "/bye"):  # leaving a page sends its beacon
            page.goto(origin + path)
        seen = wait_for(
            lambda: (u := worker_get(worker, f"/users/{counted}"))[0] == 200 and u[1],
            30,
            "the beacon's visit",
        )
        browser.close()
    assert (seen["visits_pages"], seen["visits_pages_a"]) == (1, 1)
    assert 0 < seen["avg_time_pages_a"] < 30
    assert worker_get(worker, f"/users/{refused}")[0] == 404  # the wrong key was refused


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A port that accepts connections and never answers: the worst broker to wait for."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def timed(client: Client, path: str, data: dict) -> tuple[float, Any]:
    start = time.monotonic()
    answer = client.post(path, data) if data else client.get(path)
    return time.monotonic() - start, answer.json()


def test_sends_and_reads_stay_bounded_when_nothing_answers(silent_broker: str) -> None:
    options = {
        "KAFKA_BOOTSTRAP": silent_broker,
        "REDIS_URL": f"redis://{silent_broker}/0",
        "SEND_TIMEOUT_SECONDS": 0.5,
        "READ_TIMEOUT_SECONDS": 0.5,
    }
    before = events.stats()
    with override_settings(SMARTSTREAM=options):
        client = logged_in(1004)
        first, answer = timed(client, "/pages/A/time/", {"seconds": 5})
        assert answer == {"sent": False} and first < 2.0
        again, answer = timed(client, "/pages/A/time/", {"seconds": 5})
        assert answer == {"sent": False} and again < 0.2  # no new wait before the retry time
        read, answer = timed(client, "/me/", {})
        assert answer["ok"] is False and answer["cluster"] is None and read < 2.0
    after = events.stats()
    assert after["dropped"] - before["dropped"] == 2
    assert readers.reader.failures >= 1


EXIT_SCRIPT = """
import sys, django
from django.conf import settings
producer = {"linger_ms": 60000, "delivery_timeout_ms": 120000}  # nothing leaves before exit
settings.configure(INSTALLED_APPS=["producers.django"], SMARTSTREAM=dict(
    KAFKA_BOOTSTRAP=sys.argv[1], TOPIC_PREFIX=sys.argv[2], PRODUCER=producer))
django.setup()
from producers.django.events import send_page_time, stats
assert all(send_page_time(sys.argv[3], "B", float(i + 1)) for i in range(20))
print(stats()["acknowledged"])  # 0: everything waits in the buffer; exit must flush it
"""


def test_buffered_events_are_flushed_at_exit(live) -> None:
    stack, _ = live
    uid = f"exit-{uuid.uuid4().hex[:8]}"
    args = [stack.env["SMARTSTREAM_KAFKA_BOOTSTRAP"], stack.prefix, uid]
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    mine = [
        json.loads(r.value) for r in stack.consume_all("page-times", 0) if r.key == uid.encode()
    ]
    assert sorted(v["seconds"] for v in mine) == [float(i + 1) for i in range(20)]
