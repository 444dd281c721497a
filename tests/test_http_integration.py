"""HTTP ingestion through a real worker: the contract's JSON and the browser beacon are produced
to Kafka (204) and land in the user's record; bad input gets 400 with the reason."""

from __future__ import annotations

import pytest

from tests.conftest import Stack, Worker, http, wait_for

pytestmark = pytest.mark.integration


def test_page_time_beacon_new_user_and_comment_routes(stack: Stack) -> None:
    worker = stack.start_worker()
    assert (
        worker.post("/events/new-user", b'{"user_id": "42", "age": 31, "sex": "F", "avg1": 7.5}')[0]
        == 204
    )
    beacon = b'{"metric": "time_spent", "user_id": 42, "page_type": "C", "time_spent": 12.5}'
    assert (
        worker.post("/events/page-time", beacon, content_type="text/plain;charset=UTF-8")[0] == 204
    )
    contract = b'{"user_id": "42", "page_type": "A", "seconds": 7.5}'
    assert worker.post("/events/page-time", contract)[0] == 204
    user = wait_for(
        lambda: (r := worker.get("/users/42"))[0] == 200 and r[1]["visits_pages"] == 2 and r[1],
        60,
        "the posted events in the user's record",
    )
    assert user["avg_time_pages"] == pytest.approx(10.0)
    assert (user["visits_pages_c"], user["avg_time_pages_c"]) == (1, 12.5)
    assert (user["visits_pages_a"], user["avg_time_pages_a"]) == (1, 7.5)
    assert (user["age"], user["sex"], user["avg1"]) == (31, "F", 7.5)

    assert worker.post("/comments", b'{"comment_id": "x1", "text": "<b>hello</b>"}')[0] == 204
    row = wait_for(lambda: (r := worker.get("/comments/x1"))[0] == 200 and r[1], 60, "the comment")
    assert row["text"] == "<b>hello</b>" and row["filter"] == "comments"

    bad = [
        ("/events/page-time", b'{"user_id": "1", "page_type": "AB", "seconds": 3}', "page_type"),
        ("/events/page-time", b'{"user_id": "1", "page_type": "A", "seconds": -1}', "positive"),
        (
            "/events/page-time",
            b'{"metric": "time_spent", "user_id": 1, "page_type": "Z"}',
            "page_type",
        ),
        ("/events/page-time", b"not json", "malformed JSON"),
        ("/events/page-time", b"x" * 70000, "too large"),
        ("/events/new-user", b'{"user_id": "1", "age": "x"}', "age"),
        ("/comments", b'{"comment_id": "1"}', "text"),
    ]
    for route, body, reason in bad:
        status, answer = worker.post(route, body)
        assert status == 400, (route, body[:40], answer)
        assert reason in answer["error"]
    health = worker.get("/health")[1]
    assert health["status"] == "ok"
    # Outside recovery Faust's Kafka client fetches no changelog, or records nobody takes would
    # defer every fetch by aiokafka's prefetch backoff: the users and comments changelogs (4
    # partitions each) and the counters changelog (1) are paused in it. So are the six bulk
    # topics (4 partitions each), read by their fetchers on the event loop; nothing else is.
    paused = health["paused_partitions"]
    bulk = ("page-times", "new-users", "user-commands", "comments", "comment-reviews")
    bulk += ("comment-commands",)
    changelogs = [p for p in paused if p.split("[")[0].endswith("-changelog")]
    assert len(changelogs) == 4 + 4 + 1, paused
    expected = sorted(f"{stack.settings.topic(t)}[{p}]" for t in bulk for p in range(4))
    assert sorted(set(paused) - set(changelogs)) == expected


def test_bearer_token_guards_writes_and_dashboard(stack: Stack) -> None:
    """The server token alone (SMARTSTREAM_API_TOKEN, no admin token, no public key) guards
    every write and read, in the Authorization header only; without an admin token it holds
    the admin role (the dashboard's data)."""
    stack.env["SMARTSTREAM_API_TOKEN"] = "s3cret"
    worker = stack.start_worker()
    body = b'{"user_id": "9", "page_type": "A", "seconds": 3}'
    assert worker.post("/events/page-time", body)[0] == 401
    status, answer = http(
        "POST",
        worker.url + "/events/page-time",
        body,
        {"Content-Type": "application/json", "Authorization": "Bearer wrong"},
    )
    assert status == 401 and "credential" in answer["error"]
    bearer = {"Authorization": "Bearer s3cret"}
    json_type = {"Content-Type": "application/json"}
    status, _ = http("POST", worker.url + "/events/page-time", body, {**json_type, **bearer})
    assert status == 204
    beacon = b'{"metric": "time_spent", "user_id": 9, "page_type": "B", "time_spent": 5}'
    status, _ = http(
        "POST", worker.url + "/events/page-time", beacon, {"Content-Type": "text/plain", **bearer}
    )
    assert status == 204
    # Tokens travel only in headers: the old ?token= opens nothing.
    assert http("POST", worker.url + "/events/page-time?token=s3cret", beacon)[0] == 401
    assert worker.get("/dashboard/data")[0] == 401
    assert http("GET", worker.url + "/dashboard/data", headers=bearer)[0] == 200
    assert worker.get("/health")[0] == 200  # health stays open
    assert worker.get("/users/9")[0] == 401  # personal data does not
    user = wait_for(
        lambda: (r := http("GET", worker.url + "/users/9", headers=bearer))[0] == 200
        and r[1]["visits_pages"] == 2
        and r[1],
        60,
        "the two authorised events",
    )
    assert user["avg_time_pages"] == 4.0


def test_routed_views_answer_503_not_500_while_starting(stack: Stack) -> None:
    """From the first answer on, table-routed views say 503 until they can route (then 404 for
    unknown keys): never an error of the worker's own."""
    worker = Worker(stack, len(stack.workers), {})
    stack.workers.append(worker)
    routed = ("/users/nobody", "/comments/none", "/counters", "/spam-filters/comments")
    answers: dict[str, list[int]] = {path: [] for path in routed}

    def settled() -> bool:
        assert worker.proc.poll() is None, worker.tail()
        for path in routed:
            status = worker.get(path)[0]
            if status:  # 0: the web server is not listening yet
                answers[path].append(status)
        return all(codes and codes[-1] in (200, 404) for codes in answers.values())

    wait_for(settled, 90, "routed views answering", interval=0.01)
    for path, codes in answers.items():
        assert set(codes) <= {503, 200, 404}, (path, codes)
