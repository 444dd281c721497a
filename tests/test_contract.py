"""The machine-readable contract (streams.contract): the committed documents are the generated
ones; the OpenAPI document passes openapi-spec-validator, the AsyncAPI document the official
AsyncAPI 3.0.0 JSON Schema (tests/vendor/asyncapi, from the npm package @asyncapi/specs); every
schema is a valid draft 2020-12 (and draft-07) schema; the parsers and the schemas agree on
generated records; every registered route is documented and every documented route registered;
and a real worker serves the documents and writes only records its schemas accept."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator, Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from streams import contract as c
from streams import records as r
from streams.settings import Settings
from streams.topics import CONTRACT_TOPICS
from tests.conftest import ROOT, Stack, wait_for
from tests.spamdata import corpus, write_youtube_csv

DOCS = ROOT / "docs"
ASYNCAPI_SCHEMA = ROOT / "tests" / "vendor" / "asyncapi" / "3.0.0.json"
DEFAULTS = Settings.from_env({})
CREDENTIALED = Settings.from_env(
    {"SMARTSTREAM_API_TOKEN": "s", "SMARTSTREAM_TOPIC_PREFIX": "p-", "SMARTSTREAM_PARTITIONS": "3"}
)


def asyncapi_validator() -> Draft7Validator:
    """The official schema: draft-07, every definition (and the draft-07 meta-schema) bundled
    under its $id, so nothing is fetched."""
    return Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))


# ---------------------------------------------------------------------------------------------
# The documents


def test_committed_documents_are_the_generated_ones() -> None:
    """`python -m streams.contract --write docs` after any change to records, topics or routes."""
    generated = c.documents(DEFAULTS)
    for name, body in generated.items():
        path = DOCS / name
        assert path.exists(), f"docs/{name} is missing: run python -m streams.contract --write docs"
        assert path.read_bytes() == body, f"docs/{name} is stale: run the same command"
    committed = {f"schemas/{p.name}" for p in (DOCS / "schemas").glob("*.json")}
    assert committed == {n for n in generated if n.startswith("schemas/")}


def test_the_writer_writes_what_the_generator_makes(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "gone.json").write_text("{}")
    assert c.main(["--write", str(tmp_path)]) == 0
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json")}
    assert written == set(c.documents(DEFAULTS))
    assert json.loads((tmp_path / "schemas" / "page-times.json").read_text())["title"] == "PageTime"


@pytest.mark.parametrize("s", [DEFAULTS, CREDENTIALED], ids=["defaults", "credentials"])
def test_openapi_document_is_valid_openapi_3_1(s: Settings) -> None:
    document = c.openapi_document(s)
    validate_openapi(document)
    assert document["openapi"] == "3.1.0"
    broken = json.loads(json.dumps(document))
    broken["paths"]["/health"]["get"]["responses"]["200"] = {"content": {}}  # no description
    with pytest.raises(Exception, match="description"):
        validate_openapi(broken)


@pytest.mark.parametrize("s", [DEFAULTS, CREDENTIALED], ids=["defaults", "credentials"])
def test_asyncapi_document_is_valid_asyncapi_3(s: Settings) -> None:
    validator = asyncapi_validator()
    document = c.asyncapi_document(s)
    errors = [
        f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)
    ]
    assert errors == []
    # The validator does reach into channels, bindings and schemas.
    for path, bad in (
        (("channels", "page-times", "address"), 5),
        (("channels", "page-times", "bindings", "kafka", "partitions"), 0),
        (("components", "schemas", "PageTime", "type"), "date"),
        (("components", "messages", "page-times", "bindings", "kafka", "key"), {"type": 3}),
        (("operations", "send-comment-labels", "action"), "publish"),
    ):
        broken = json.loads(json.dumps(document))
        node = broken
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = bad
        assert not validator.is_valid(broken), path


def test_channels_follow_the_deployment() -> None:
    document = c.asyncapi_document(CREDENTIALED)
    channel = document["channels"]["comment-labels"]
    assert channel["address"] == "p-comment-labels"
    assert channel["bindings"]["kafka"]["partitions"] == 3
    assert document["channels"]["models"]["bindings"]["kafka"]["partitions"] == 1
    policy = document["channels"]["models"]["bindings"]["kafka"]["topicConfiguration"]
    assert policy["cleanup.policy"] == ["compact"]
    assert {spec.name for spec in CONTRACT_TOPICS} == set(document["channels"]) == set(c.TOPICS)
    actions = {op["action"] for op in document["operations"].values()}
    assert actions == {"send", "receive"}
    assert "receive-comment-labels" not in document["operations"]  # the system only writes it


def test_every_schema_is_a_valid_schema() -> None:
    for spec in CONTRACT_TOPICS:
        schema = c.topic_schema(spec.name)
        Draft202012Validator.check_schema(schema)
        Draft7Validator.check_schema(c.topic_doc(spec.name).value_schema())
        Draft7Validator.check_schema(schema["$defs"]["key"])
    for schema in c.openapi_document(DEFAULTS)["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_page_type_spellings_are_what_the_parser_accepts() -> None:
    accepted = {ch for ch in map(chr, range(0x110000)) if ch.upper() in r.PAGE_TYPES}
    assert accepted == set(r.PAGE_TYPE_SPELLINGS)


# ---------------------------------------------------------------------------------------------
# Parsers and schemas agree


def validators(topic: str) -> list[Any]:
    """The topic's value schema under draft 2020-12 and draft-07: the same verdicts."""
    schema = c.topic_schema(topic)
    return [Draft202012Validator(schema), Draft7Validator(c.topic_doc(topic).value_schema())]


def assert_agree(parse: Any, topic: str, obj: dict[str, Any]) -> None:
    try:
        parse(obj)
        accepted = True
    except r.Rejected:
        accepted = False
    for validator in validators(topic):
        errors = [e.message[:120] for e in validator.iter_errors(obj)]
        assert (not errors) == accepted, (obj, accepted, errors)


# Values of the kinds a hostile producer sends; what JSON Schema cannot see is left out (lone
# surrogates, NaN, integral floats where an integer is wanted, ids of more than 256 digits).
CHARS = st.characters(exclude_categories=("Cs",))
LONG = st.builds(lambda ch, n: ch * n, st.sampled_from("aé"), st.integers(255, 258))
NOT_INTEGRAL = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x))
IDS = st.one_of(
    st.text(CHARS, max_size=4), LONG, st.integers(-(10**9), 10**9), st.none(), st.booleans(),
    NOT_INTEGRAL, st.lists(st.integers(), max_size=1),
)
NUMBERS = st.one_of(
    st.floats(allow_nan=False), st.integers(-(10**6), 10**6), st.just(10**400), st.none(),
    st.booleans(), st.text(max_size=2),
)


def integers(low: int, high: int) -> st.SearchStrategy:
    return st.one_of(
        st.integers(low - 2, low + 2), st.integers(high - 2, high + 2), st.integers(low, high),
        NOT_INTEGRAL, st.booleans(), st.none(), st.text(max_size=2), st.just(10**400),
    )


TEXTS = st.one_of(
    st.text(CHARS, max_size=5), st.just("x" * r.MAX_TEXT_CHARS),
    st.just("x" * (r.MAX_TEXT_CHARS + 1)), st.none(), st.integers(0, 3),
)
BOOLS = st.one_of(st.booleans(), st.none(), st.integers(0, 1), st.text(max_size=2))
PAGE_TYPES = st.one_of(
    st.sampled_from([*r.PAGE_TYPE_SPELLINGS, "K", "AB", "", " A", "ß"]), st.none(), st.integers()
)
EXTRA = {"extra_field": st.integers()}
AGREE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def records(**fields: st.SearchStrategy) -> st.SearchStrategy:
    """Objects holding any subset of `fields` (an absent field is not a null one)."""
    return st.fixed_dictionaries({}, optional=fields)


@AGREE
@given(records(user_id=IDS, page_type=PAGE_TYPES, seconds=NUMBERS, event_id=IDS, ts=NUMBERS,
               **EXTRA))
def test_page_times(obj: dict[str, Any]) -> None:
    assert_agree(lambda o: r.parse_page_time(o, r.FLOAT_MAX), "page-times", obj)


@AGREE
@given(records(metric=st.sampled_from(["time_spent", "clicks", None]), user_id=IDS,
               page_type=PAGE_TYPES, time_spent=NUMBERS, ts=NUMBERS))
def test_page_time_beacons(obj: dict[str, Any]) -> None:
    assert_agree(lambda o: r.parse_page_time(o, r.FLOAT_MAX), "page-times", obj)


@AGREE
@given(records(user_id=IDS, age=integers(0, 150),
               sex=st.sampled_from(["M", "F", "m", "X", "", 0, 1, 2, -1, True, False, None]),
               avg1=NUMBERS, ts=NUMBERS, **EXTRA))
def test_new_users(obj: dict[str, Any]) -> None:
    assert_agree(r.parse_new_user, "new-users", obj)


@AGREE
@given(records(comment_id=IDS, text=TEXTS, user_id=IDS, filter=IDS, ts=NUMBERS, **EXTRA))
def test_comments(obj: dict[str, Any]) -> None:
    assert_agree(r.parse_comment, "comments", obj)


@AGREE
@given(records(comment_id=IDS, is_spam=BOOLS, reviewer=IDS, ts=NUMBERS))
def test_comment_reviews(obj: dict[str, Any]) -> None:
    assert_agree(r.parse_comment_review, "comment-reviews", obj)


COUNTS = integers(0, r.MAX_COUNT)
EXTRAS = st.one_of(
    st.none(), st.dictionaries(st.text(CHARS, max_size=3), COUNTS, max_size=3),
    st.dictionaries(st.text(CHARS, min_size=2, max_size=3), st.just(1), min_size=33),
    st.lists(st.integers(), max_size=1), st.text(max_size=1),
)


@AGREE
@given(records(model=IDS, partition=integers(0, 1_000_000), total=COUNTS, extra=EXTRAS))
def test_counter_totals(obj: dict[str, Any]) -> None:
    assert_agree(r.parse_counter_total, "counter-increments", obj)


ACTIONS = st.sampled_from(["run", "rollback", "reassign", "erase", "other", None])


@AGREE
@given(records(action=ACTIONS, model=IDS, reason=IDS, requests=integers(1, r.MAX_COUNT),
               version=integers(1, r.MAX_COUNT), ts=NUMBERS))
def test_control_requests(obj: dict[str, Any]) -> None:
    assert_agree(r.parse_control, "control", obj)


@AGREE
@given(records(action=ACTIONS, model=IDS, version=integers(1, r.MAX_COUNT), user_id=IDS,
               erasure_id=IDS))
def test_user_commands(obj: dict[str, Any]) -> None:
    # The previous release's form (the model document in `model`) is read but not in the schema.
    assert_agree(r.parse_user_command, "user-commands", obj)


@AGREE
@given(records(action=ACTIONS, user_id=IDS, erasure_id=IDS))
def test_comment_commands(obj: dict[str, Any]) -> None:
    assert_agree(r.parse_erase, "comment-commands", obj)


@AGREE
@given(records(filter=IDS, text=TEXTS, is_spam=BOOLS, source=TEXTS, comment_id=IDS,
               reviewer=IDS))
def test_training_examples(obj: dict[str, Any]) -> None:
    for topic in ("pretraining", "training-examples"):
        assert_agree(r.parse_training_example, topic, obj)


@pytest.mark.parametrize(
    ("topic", "parse", "obj"),
    [
        ("page-times", None, {"page_type": "A", "seconds": 3}),  # no user_id
        ("page-times", None, {"user_id": "u", "page_type": "K", "seconds": 3}),
        ("page-times", None, {"user_id": "u", "page_type": "A", "seconds": 0}),
        ("page-times", None, {"user_id": "u", "page_type": "A"}),
        ("page-times", None, {"metric": "clicks", "user_id": "u", "page_type": "A"}),
        ("new-users", r.parse_new_user, {"user_id": "u", "age": 151}),
        ("new-users", r.parse_new_user, {"user_id": "u", "sex": "X"}),
        ("comments", r.parse_comment, {"comment_id": "c"}),
        ("comment-reviews", r.parse_comment_review, {"comment_id": "c", "is_spam": "yes"}),
        ("control", r.parse_control, {"model": "clustering", "requests": 0}),
    ],
)
def test_rejected_records_break_their_schema(topic: str, parse: Any, obj: dict) -> None:
    parse = parse or (lambda o: r.parse_page_time(o, 86400))
    with pytest.raises(r.Rejected):
        parse(obj)
    for validator in validators(topic):
        assert not validator.is_valid(obj)


def test_records_the_system_writes_fit_their_schemas() -> None:
    from streams import moderation

    letter = json.loads(r.dead_letter("comments", 3, 17, "bad", b"\xff" * 2000))
    assert Draft202012Validator(c.topic_schema("dead-letters")).is_valid(letter)
    assert letter["payload_truncated"] and letter["payload"].startswith("\\xff")
    moderation.filters["comments"].model = None  # before the first model: "unknown" labels
    row = {"comment_id": "c1", "filter": "comments", "text": "hello"}
    ((key, value),) = moderation.classify([(row, SimpleNamespace(timestamp=0))])
    label = json.loads(value)
    assert key == b"c1" and label["state"] == "unknown" and label["is_spam"] is None
    labels = Draft202012Validator(c.topic_schema("comment-labels"))
    assert labels.is_valid(label)
    for state, is_spam, score in (("labelled", True, 0.9), ("pending", None, 0.5)):
        record = r.CommentLabel("c1", is_spam, score, "comments", 2, 1.0, state)
        assert labels.is_valid(json.loads(record.dumps()))
    for state, is_spam, score in (("labelled", None, 0.9), ("unknown", None, 0.2)):
        record = r.CommentLabel("c1", is_spam, score, "comments", 2, 1.0, state)
        assert not labels.is_valid(json.loads(record.dumps())), state
    assignment = r.ClusterAssignment("u1", "3", 2, None, 1.5)
    assert Draft202012Validator(c.topic_schema("cluster-assignments")).is_valid(
        json.loads(assignment.dumps())
    )


# ---------------------------------------------------------------------------------------------
# Routes


def view_methods(view_class: type) -> set[str]:
    from faust.web import View

    return {
        m for m in ("get", "post", "put", "patch", "delete")
        if getattr(view_class, m) is not getattr(View, m)
    }


def registered_routes() -> set[tuple[str, str]]:
    """(method, path) of every route a worker of this process's configuration registers: the
    modules' pages and the routes of Faust's enabled blueprints (read from the blueprints, not
    applied: applying them would add pages to this process's app)."""
    from mode.utils.imports import symbol_by_name

    from streams.cli import load_worker_modules

    app = load_worker_modules()
    out = {(m, path) for path, view in app.web.views.items() for m in view_methods(type(view))}
    for prefix, blueprint in app.web.blueprints._enabled:
        for route in symbol_by_name(blueprint).routes:
            out |= {(m, prefix + route.uri) for m in view_methods(route.handler)}
    return out


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    from streams.app import settings as app_settings

    documented = {
        (method, path)
        for path, item in c.openapi_document(app_settings).get("paths", {}).items()
        for method in item
    }
    assert registered_routes() == documented


# ---------------------------------------------------------------------------------------------
# A real worker

KEY, SERVER, ADMIN = "pub-key", "srv-token", "adm-token"
CREDENTIALS = {
    "ingest": ("?key=" + KEY, {}),
    "server": ("", {"Authorization": "Bearer " + SERVER}),
    "admin": ("", {"Authorization": "Bearer " + ADMIN}),
    None: ("", {}),
}
AS_SERVER = CREDENTIALS["server"][1]
EXAMPLES = {"user_id": "u1", "comment_id": "c0", "name": "comments", "page_type": "A",
            "topic": "page-times"}
BODIES = {
    "/events/page-time": {"user_id": "h1", "page_type": "B", "seconds": 2.5},
    "/events/new-user": {"user_id": "h1", "age": 33},
    "/comments": {"comment_id": "h-c1", "text": "hello there", "user_id": "h1"},
    "/comments/{comment_id}/review": {"is_spam": False, "reviewer": "mod"},
    "/models/{name}/rollback": {"version": 1},
}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def call(url: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body), redirects not followed."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=15) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


def response_validator(document: dict[str, Any], answer: dict[str, Any]) -> Any:
    schema = answer["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


def check_routes(worker: Any, document: dict[str, Any]) -> None:
    """With credentials configured: each documented route answers 401 without one when it has a
    role (and something else when it has none), and with its credential a documented status
    whose JSON body fits the documented schema."""
    for path, item in document["paths"].items():
        concrete = path.format(**EXAMPLES)
        for method, operation in item.items():
            body_doc = BODIES.get(path)
            body = json.dumps(body_doc).encode() if body_doc is not None else None
            headers = {"Content-Type": "application/json"}
            role = operation.get("x-smartstream-role")
            status, _, raw = call(worker.url + concrete, method.upper(), body, headers)
            where = (method, path, status, raw[:200])
            assert raw != b"404: Not Found" and status != 405, where  # aiohttp: no such route
            assert (status == 401) == (role is not None), where
            query, auth = CREDENTIALS[role]
            status, media, raw = call(
                worker.url + concrete + query, method.upper(), body, {**headers, **auth}
            )
            answer = operation["responses"].get(str(status))
            assert answer is not None, (method, path, status, raw[:200])
            if media == "application/json" and "application/json" in answer.get("content", {}):
                errors = list(response_validator(document, answer).iter_errors(json.loads(raw)))
                assert not errors, (method, path, errors[0].message[:300])


def produced(stack: Stack, topic: str, timeout: float = 30) -> list[Any]:
    """Every record of `topic` up to its end offsets now, tombstones left out (a consumer that
    only waits for silence may stop before its first fetch)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, **stack.settings.kafka_python_config())
    try:
        name = stack.settings.topic(topic)
        parts = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records: list[Any] = []
        wait_for(
            lambda: records.extend(
                m for batch in consumer.poll(timeout_ms=200).values() for m in batch
            )
            or all(consumer.position(tp) >= end[tp] for tp in parts),
            timeout,
            f"the end of {topic}",
        )
        return [m for m in records if m.value is not None]
    finally:
        consumer.close()


@pytest.mark.integration
def test_a_worker_serves_the_contract_and_writes_what_it_says(stack: Stack, tmp_path) -> None:
    stack.env.update(
        SMARTSTREAM_CLUSTERING_THRESHOLD="60",
        SMARTSTREAM_CLUSTERING_RESTARTS="2",
        SMARTSTREAM_PUBLIC_INGEST_KEY=KEY,
        SMARTSTREAM_API_TOKEN=SERVER,
        SMARTSTREAM_ADMIN_TOKEN=ADMIN,
    )
    s = Settings.from_env(stack.env)
    worker = stack.start_worker()

    # The documents it serves are this module's, for its configuration.
    expected = c.documents(s)
    for name in ("openapi.json", "asyncapi.json", "schemas/page-times.json"):
        status, media, raw = call(f"{worker.url}/{name}")
        assert (status, media) == (200, "application/json") and raw == expected[name], name
    assert call(f"{worker.url}/schemas/nope.json")[0] == 404
    assert json.loads(expected["asyncapi.json"])["channels"]["models"]["address"] == (
        stack.prefix + "models"
    )

    # Traffic: users over HTTP (the public key) and Kafka, a beacon, comments before and after
    # a spam filter exists, a review, and two records the worker must refuse.
    for i in range(12):
        user = {"user_id": f"u{i}", "age": 20 + i, "sex": "MF"[i % 2], "avg1": 5.0 + i % 4}
        status, _, raw = call(f"{worker.url}/events/new-user?key={KEY}", "POST",
                              json.dumps(user).encode(), {"Content-Type": "application/json"})
        assert status == 204, raw
    beacon = {"metric": "time_spent", "user_id": "u1", "page_type": "c", "time_spent": 4.5}
    assert call(f"{worker.url}/events/page-time?key={KEY}", "POST", json.dumps(beacon).encode(),
                {"Content-Type": "text/plain"})[0] == 204
    producer = stack.producer()
    for i in range(30):
        producer.page_time(f"u{i % 12}", "ABCDEFGHIJ"[i % 10], 1.0 + i % 7 + (i % 12) * 3)
    producer.comment("c0", "check out my channel for free gifts", user_id="u1")
    producer.send("page-times", "bad1", {"user_id": "bad1", "page_type": "K", "seconds": 2})
    producer.send("comments", "bad2", b"not json")
    producer.flush()
    path = write_youtube_csv(tmp_path / "Youtube01-Test.csv", *corpus(200, seed=4))
    stack.pretrain(path)

    def filter_version() -> int:
        status, _, raw = call(f"{worker.url}/spam-filters/comments", headers=AS_SERVER)
        return json.loads(raw)["version"] if status == 200 else 0

    wait_for(lambda: filter_version() >= 1, 120, "the pretrained spam filter")
    for i in range(1, 4):
        producer.comment(f"c{i}", f"great video number {i}, thanks", user_id="u2")
    producer.review("c0", True, reviewer="mod")
    producer.flush()
    producer.close()

    def states() -> set[str]:
        return {json.loads(m.value)["state"] for m in produced(stack, "comment-labels")}

    wait_for(lambda: {"unknown", "labelled"} <= states(), 90, "unknown and labelled labels")
    wait_for(lambda: produced(stack, "cluster-assignments"), 120, "cluster assignments")
    wait_for(lambda: len(produced(stack, "dead-letters")) >= 2, 60, "two dead letters")
    wait_for(lambda: produced(stack, "training-examples"), 60, "the review's example")

    # Every record on every topic fits its topic's schemas (key and value), but the two
    # refused ones; the topics the system writes are not empty.
    refused = {("page-times", b"bad1"), ("comments", b"bad2")}
    for spec in CONTRACT_TOPICS:
        schema = c.topic_schema(spec.name)
        values, keys = Draft202012Validator(schema), Draft202012Validator(schema["$defs"]["key"])
        messages = [m for m in produced(stack, spec.name) if (spec.name, m.key) not in refused]
        for m in messages:
            value = json.loads(m.value)
            errors = [e.message[:200] for e in values.iter_errors(value)]
            assert not errors, (spec.name, value if len(m.value) < 2000 else "(model)", errors)
            key = None if m.key is None else m.key.decode()
            assert keys.is_valid(key), (spec.name, key)
        if spec.name in ("cluster-assignments", "comment-labels", "dead-letters", "models",
                         "counter-increments", "control", "user-commands", "training-examples"):
            assert messages, f"nothing on {spec.name}"
    reasons = [json.loads(m.value)["error"] for m in produced(stack, "dead-letters")]
    assert any("page_type" in reason for reason in reasons), reasons

    check_routes(worker, json.loads(expected["openapi.json"]))
