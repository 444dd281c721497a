"""HTTP ingestion on a real network's terms: bodies that arrive in several TCP segments, and an
acknowledgement (204) that means the broker has the record, tested by stopping the broker."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.conftest import Stack, kafka_dir, start_broker, stop_broker, wait_for

pytestmark = pytest.mark.integration


def post_in_segments(
    port: int, path: str, body: bytes, content_type: str, parts: int = 3, pause: float = 0.3
) -> int:
    """POST `body` with its headers first, then the body in `parts` TCP segments `pause` seconds
    apart (as a slow or lossy network delivers it); returns the HTTP status."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    size = -(-len(body) // parts)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head)
        for i in range(0, len(body), size):
            time.sleep(pause)  # the network's pause between segments, not a synchronisation
            sock.sendall(body[i : i + size])
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_bodies_split_over_tcp_segments_are_read_whole(stack: Stack) -> None:
    worker = stack.start_worker()
    text = "This video brings back so many memories of summer. " * 56  # ~2.9 KB
    comment = json.dumps({"comment_id": "seg-c", "text": text, "user_id": "seg-u"}).encode()
    assert post_in_segments(worker.port, "/comments", comment, "application/json") == 204
    beacon = json.dumps(
        {"metric": "time_spent", "user_id": "seg-u", "page_type": "B", "time_spent": 7.25}
    ).encode()
    assert post_in_segments(worker.port, "/events/page-time", beacon, "text/plain") == 204
    row = wait_for(
        lambda: (r := worker.get("/comments/seg-c"))[0] == 200 and r[1], 60, "the comment's row"
    )
    assert row["text"] == text
    labels = wait_for(lambda: stack.labels_by_comment().get("seg-c"), 60, "the comment's label")
    assert labels[0]["comment_id"] == "seg-c"
    user = wait_for(lambda: (r := worker.get("/users/seg-u"))[0] == 200 and r[1], 60, "the user")
    assert user["visits_pages_b"] == 1 and user["avg_time_pages_b"] == 7.25


def test_acknowledged_means_durable_when_the_broker_stops(stack: Stack) -> None:
    directory = kafka_dir()
    stack.env["SMARTSTREAM_INGEST_TIMEOUT_SECONDS"] = "2"
    stack.env["SMARTSTREAM_CLUSTERING_THRESHOLD"] = "0"
    worker = stack.start_worker()
    answers: dict[str, int] = {}

    def post(user: str) -> int:
        body = json.dumps({"user_id": user, "page_type": "C", "seconds": 4.5}).encode()
        started = time.monotonic()
        status, _ = worker.post("/events/page-time", body)
        assert time.monotonic() - started < 10, "an answer within a bounded time"
        answers[user] = status
        return status

    for i in range(10):
        assert post(f"before{i}") == 204
    stop_broker(directory)
    try:
        during = [post(f"during{i}") for i in range(6)]
    finally:
        start_broker(directory, stack.env["SMARTSTREAM_KAFKA_BOOTSTRAP"])
    assert 503 in during, during
    assert set(during) <= {204, 503}, during
    try:
        wait_for(lambda: post(f"after{len(answers)}") == 204, 120, "a 204 once the broker is back")
    except AssertionError as exc:
        status = worker.proc.poll()
        raise AssertionError(f"{exc}; worker exit {status}:\n{worker.tail(80)}") from None

    # Every acknowledged event is in the table exactly once; an unacknowledged one may or may
    # not have reached the broker (the client would retry it), but never twice.
    for user, status in answers.items():
        if status == 204:
            body = wait_for(
                lambda u=user: (r := worker.get(f"/users/{u}"))[0] == 200 and r[1],
                120,
                f"acknowledged {user}",
            )
            assert body["visits_pages"] == 1, (user, body)
        else:
            code, body = worker.get(f"/users/{user}")
            assert code == 404 or body["visits_pages"] == 1, (user, body)
    print(f"\nanswers while the broker was down: {during}")


def raw_request(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_undecodable_authorization_header_is_401_not_500(stack: Stack) -> None:
    worker = stack.start_worker(SMARTSTREAM_API_TOKEN="s3cret")
    body = b'{"user_id": "auth-u", "page_type": "A", "seconds": 1.0}'
    head = (
        b"POST /events/page-time HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    )
    bad = head + b"Authorization: Bearer \xff\xfe\xc3(\r\n\r\n" + body
    assert raw_request(worker.port, bad) == 401
    good = head + b"Authorization: Bearer s3cret\r\n\r\n" + body
    assert raw_request(worker.port, good) == 204
