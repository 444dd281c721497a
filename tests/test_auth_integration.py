"""Least privilege on every HTTP route: with credentials configured, each route answers 401
without a credential, 403 with one of too low a role, and works with the right one; writes need a
JSON content type (except the beacon route); the public ingest key reads nothing and posts no
comment; Faust's own router and table views are off; pages carry a CSP and no-referrer."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import Stack, http, wait_for

KEY, SERVER, ADMIN = "pub-key", "srv-token", "adm-token"
# (method, path as registered, a concrete path) -> the lowest credential that may use it;
# None: open to anyone.
ROUTES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("GET", "/health"): ("/health", None),
    ("POST", "/events/page-time"): ("/events/page-time", "key"),
    ("POST", "/events/new-user"): ("/events/new-user", "key"),
    ("POST", "/comments"): ("/comments", "server"),
    ("GET", "/users/{user_id}"): ("/users/au1", "server"),
    ("GET", "/comments/{comment_id}"): ("/comments/ac1", "server"),
    ("GET", "/counters"): ("/counters", "server"),
    ("GET", "/clusters"): ("/clusters", "server"),
    ("GET", "/spam-filters/{name}"): ("/spam-filters/comments", "server"),
    ("GET", "/metrics"): ("/metrics", None),
    ("GET", "/dashboard"): ("/dashboard", None),
    ("GET", "/dashboard/data"): ("/dashboard/data", "admin"),
    ("GET", "/site/data"): ("/site/data", "admin"),
    ("GET", "/pages/{page_type}/{user_id}"): ("/pages/A/au1", None),
    ("GET", "/pages"): ("/pages", None),
    ("GET", "/moderation"): ("/moderation", None),
    ("GET", "/moderation/queue"): ("/moderation/queue", "server"),
    ("POST", "/comments/{comment_id}/review"): ("/comments/ac1/review", "server"),
    ("DELETE", "/users/{user_id}"): ("/users/au1", "admin"),
    ("GET", "/models"): ("/models", "server"),
    ("POST", "/models/{name}/rollback"): ("/models/clustering/rollback", "admin"),
    ("GET", "/openapi.json"): ("/openapi.json", None),
    ("GET", "/asyncapi.json"): ("/asyncapi.json", None),
    ("GET", "/schemas/{topic}.json"): ("/schemas/page-times.json", None),
}
BODIES = {
    "/events/page-time": {"user_id": "au1", "page_type": "A", "seconds": 2.0},
    "/events/new-user": {"user_id": "au1", "age": 40},
    "/comments": {"comment_id": "ac1", "text": "a song I love", "user_id": "au1"},
    "/comments/ac1/review": {"is_spam": False, "reviewer": "mod"},
    "/models/clustering/rollback": {"version": 1},
}
RANK = {None: 0, "key": 1, "server": 2, "admin": 3}


def registered_routes() -> set[tuple[str, str]]:
    """Every (method, path) the worker's modules register."""
    os.environ.setdefault("SMARTSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    from faust.web import View

    from streams.cli import load_worker_modules

    app = load_worker_modules()
    return {
        (method.upper(), path)
        for path, view in app.web.views.items()
        for method in ("get", "post", "put", "delete", "patch")
        if getattr(type(view), method) is not getattr(View, method)
    }


def test_every_route_has_a_declared_credential() -> None:
    assert registered_routes() == set(ROUTES)


def call(worker, method: str, path: str, who: str | None, content_type: str = "application/json"):
    headers = {"Content-Type": content_type}
    url = worker.url + path
    if who == "key":
        url += "?key=" + KEY
    elif who is not None:
        headers["Authorization"] = "Bearer " + {"server": SERVER, "admin": ADMIN}[who]
    body = json.dumps(BODIES[path]).encode() if method == "POST" else None
    return http(method, url, body, headers)


@pytest.mark.integration
def test_each_route_wants_its_role(stack: Stack) -> None:
    stack.env.update(
        SMARTSTREAM_PUBLIC_INGEST_KEY=KEY,
        SMARTSTREAM_API_TOKEN=SERVER,
        SMARTSTREAM_ADMIN_TOKEN=ADMIN,
        SMARTSTREAM_METRICS_REQUIRE_TOKEN="false",
    )
    worker = stack.start_worker()
    assert call(worker, "POST", "/events/new-user", "key")[0] == 204
    wait_for(lambda: call(worker, "GET", "/users/au1", "server")[0] == 200, 60, "the user row")
    for (method, _), (path, needed) in ROUTES.items():
        for who in (None, "key", "server", "admin"):
            status, answer = call(worker, method, path, who)
            if RANK[who] >= RANK[needed]:
                assert status not in (401, 403), (method, path, who, status, answer)
            else:
                expected = 401 if who is None else 403
                assert status == expected, (method, path, who, status, answer)
    # Tokens only in headers: the server token as ?key= or ?token= opens nothing.
    assert http("GET", f"{worker.url}/users/au1?key={SERVER}")[0] == 401
    assert http("GET", f"{worker.url}/users/au1?token={SERVER}")[0] == 401


@pytest.mark.integration
def test_cross_site_posts_and_faust_views_are_refused(stack: Stack) -> None:
    stack.env.update(SMARTSTREAM_PUBLIC_INGEST_KEY=KEY, SMARTSTREAM_API_TOKEN=SERVER)
    worker = stack.start_worker()
    # A page on another site can make a browser post text/plain without a preflight.
    assert call(worker, "POST", "/comments", "server", "text/plain")[0] == 415
    assert call(worker, "POST", "/events/new-user", "key", "text/plain")[0] == 415
    # The beacon route takes text/plain (navigator.sendBeacon) with the public key.
    assert call(worker, "POST", "/events/page-time", "key", "text/plain")[0] == 204
    assert call(worker, "POST", "/comments", "key")[0] == 403
    for path in ("/router/", "/table/", "/table/users/"):
        assert worker.get(path)[0] == 404, path
    for path in ("/dashboard", "/pages/A/x"):
        req_headers = http_headers(worker.url + path)
        assert req_headers["Referrer-Policy"] == "no-referrer"
        policy = req_headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy.split(";")[1]


def http_headers(url: str) -> dict[str, str]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(resp.headers)
