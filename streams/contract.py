"""The contract, machine-readable: a JSON Schema of every topic's key and value, an AsyncAPI 3.0
document of the topics and an OpenAPI 3.1 document of the HTTP routes.

Value schemas are generated from the typed records of streams.records (field types plus the
`spec` metadata the parsers' rules are written in), so a rule is written once, beside the code
that enforces it. Every worker serves the documents for its own configuration (topic prefix,
partitions, credentials): `GET /openapi.json`, `/asyncapi.json`, `/schemas/{topic}.json`.
`python -m streams.contract --write docs` writes them for the default configuration, and
tests/test_contract.py fails when the committed copies differ from what this module generates.

The generated schemas keep to the keywords draft-07 and draft 2020-12 read alike (type lists,
enum, const, bounds, if/then/else), so one schema is both the 2020-12 document of docs/schemas/
and an AsyncAPI Schema Object (a draft-07 superset) in the AsyncAPI document.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import re
import sys
import types
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from faust.web import Request, Response, View

from models import mixture, normal, spam
from models.documents import SUPPORTED_FORMATS
from streams import records as r
from streams import topics as t
from streams.app import app, settings
from streams.profiles import AVG_FIELDS, PUBLIC_FIELDS, VISIT_FIELDS
from streams.serving import CLUSTERING
from streams.settings import Settings

CONTRACT_VERSION = "1"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING = "0.5.0"
LICENSE = "LGPL-3.0-or-later"

# ---------------------------------------------------------------------------------------------
# Records -> JSON Schema

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
_REPLACES_TYPE = {"type", "enum", "const"}


def _without_none(hint: Any) -> tuple[Any, bool]:
    """(the hint without None, whether None was part of it)."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {hint}")
        return rest[0], len(rest) < len(get_args(hint))
    return hint, False


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a record field's Python type."""
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if get_origin(hint) is dict and get_args(hint)[0] is str:
        return {"type": "object", "additionalProperties": type_schema(get_args(hint)[1])}
    raise TypeError(f"no JSON Schema for {hint}")


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null."""
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    if isinstance(schema.get("type"), str | list) and "const" not in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return {**schema, "type": [*kinds, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def field_schema(f: Any, hint: Any) -> tuple[dict[str, Any], bool]:
    """(a record field's schema, whether it is required), from its type and `spec` metadata."""
    meta = f.metadata or {}
    own = meta.get("schema", {})
    bare, may_be_none = _without_none(hint)
    schema = {} if _REPLACES_TYPE & own.keys() else type_schema(bare)
    schema.update(own)
    has_default = f.default is not MISSING
    if has_default and f.default is not None:
        schema["default"] = f.default
    required = meta.get("required", not has_default)
    if meta.get("nullable", may_be_none or not required):
        schema = nullable(schema)
    return schema, required


def record_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of a record class's JSON value: what its parser accepts (or, for records
    the system writes, what it writes). Unknown fields are allowed: the parsers ignore them."""
    hints = get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in fields(cls):
        properties[f.name], needed = field_schema(f, hints[f.name])
        if needed:
            required.append(f.name)
    schema: dict[str, Any] = {
        "title": cls.__name__,
        "description": " ".join((inspect.getdoc(cls) or "").split()),
        "type": "object",
        "properties": properties,
        "required": required,
    }
    for key, value in getattr(cls, "SCHEMA_EXTRA", {}).items():
        schema[key] = {**properties, **value} if key == "properties" else value
    return schema


def _payload(kind: str, what: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{what}; its whole format is checked by models/documents.py",
        "required": ["kind"],
        "properties": {
            "kind": {"const": kind},
            "format_version": {"enum": sorted(SUPPORTED_FORMATS)},
        },
    }


MODEL_NAME = {
    "type": "string",
    "pattern": "^(clustering|spam:.+)$",
    "description": "the model's name: clustering, or spam:FILTER",
}
COUNT = {"type": "integer", "minimum": 0, "maximum": r.MAX_COUNT}


def model_document_schema() -> dict[str, Any]:
    """`models` values: an envelope (name, version, what requested the run) around the model
    kind's payloads. Written by hand: the documents are built by the trainers and validated
    field by field by the models' from_dict (models/documents.py) before a worker serves them."""
    return {
        "title": "ModelDocument",
        "description": "A versioned model state, JSON (never pickle). Every worker validates "
        "and probes a document before it serves it; a refused one is dead-lettered.",
        "type": "object",
        "required": ["name", "version"],
        "properties": {
            "name": MODEL_NAME,
            "version": {"type": "integer", "minimum": 1, "maximum": r.MAX_COUNT - 1},
            "reason": {"type": ["string", "null"], "description": "what requested the run"},
        },
        "allOf": [
            {
                "if": {"properties": {"name": {"const": CLUSTERING}}},
                "then": {
                    "required": ["mixture", "population"],
                    "properties": {
                        "mixture": _payload(mixture.KIND, "the Bayesian Gaussian mixture"),
                        "population": _payload(normal.KIND, "BN1's atypical-user model"),
                        "users": COUNT,
                        "warm_start": {"type": "boolean"},
                        "sample": {
                            "type": ["object", "null"],
                            "description": "the dashboard's snapshot of users",
                        },
                    },
                },
            },
            {
                "if": {"properties": {"name": {"pattern": "^spam:"}}},
                "then": {
                    "required": ["model"],
                    "properties": {
                        "model": _payload(spam.KIND, "the spam filter"),
                        "pretraining_size": COUNT,
                        "reviewed_size": COUNT,
                    },
                },
            },
        ],
    }


def _id_key(what: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": r.MAX_ID_CHARS,
        "description": f"the value's {what} (UTF-8)",
    }


@dataclass(frozen=True)
class TopicDoc:
    """What the contract says about a topic beyond its TopicSpec (which types its values): the
    key's schema, who reads and who writes it; `title` names a value that may be one of several
    records, `schema` is the source of a value that is not a record (model documents)."""

    topic: str
    key: dict[str, Any]
    summary: str
    received_by: str | None = None
    sent_by: str | None = None
    title: str | None = None
    schema: Callable[[], dict[str, Any]] | None = None

    def value_schema(self) -> dict[str, Any]:
        """The record class's schema; for several classes any of theirs (the parser tells
        them by their `action`); else the explicit schema source's."""
        if self.schema is not None:
            return self.schema()
        classes = t.SPECS[self.topic].value
        if len(classes) == 1:
            return record_schema(classes[0])
        return {"title": self.title, "anyOf": [record_schema(c) for c in classes]}


USER_KEY = _id_key("user_id")
COMMENT_KEY = _id_key("comment_id")
NO_KEY = {"type": "null", "description": "none: one record per partition"}
INTERNAL = "Internal: between workers."

TOPICS: dict[str, TopicDoc] = {
    doc.topic: doc
    for doc in (
        TopicDoc(
            t.PAGE_TIMES,
            USER_KEY,
            "One page view and the seconds spent on it.",
            received_by="every worker: the users pipeline, for its partitions",
            sent_by="POST /events/page-time (and any producer of the site)",
        ),
        TopicDoc(
            t.NEW_USERS,
            USER_KEY,
            "A user joined.",
            received_by="every worker: the users pipeline, for its partitions",
            sent_by="POST /events/new-user (and any producer of the site)",
        ),
        TopicDoc(
            t.CLUSTER_ASSIGNMENTS,
            USER_KEY,
            "A user's cluster and atypical flag, sent when either changes (compacted).",
            sent_by="the users pipeline, online and after each re-clustering",
        ),
        TopicDoc(
            t.COMMENTS,
            COMMENT_KEY,
            "A comment to moderate.",
            received_by="every worker: moderation, for its partitions",
            sent_by="POST /comments (and any producer of the site)",
        ),
        TopicDoc(
            t.COMMENT_LABELS,
            COMMENT_KEY,
            "The moderation topic: a comment's label, once per model version that processed it.",
            sent_by="moderation",
        ),
        TopicDoc(
            t.COMMENT_REVIEWS,
            COMMENT_KEY,
            "A moderator's verdict: a training label of the comment's filter.",
            received_by="every worker: moderation, for its partitions",
            sent_by="the site's moderation tools",
        ),
        TopicDoc(
            t.DEAD_LETTERS,
            {
                "type": ["string", "null"],
                "description": "the refused record's own key as it was (any bytes; null for a "
                "keyless record)",
            },
            "Every refused record, with the reason.",
            sent_by="every worker",
        ),
        TopicDoc(
            t.MODELS,
            MODEL_NAME,
            "Versioned model states (compacted); every worker hot-swaps the latest valid one.",
            received_by="every worker",
            sent_by="the trainer (the owner of `control`)",
            schema=model_document_schema,
        ),
        TopicDoc(
            t.MODEL_VERSIONS,
            {
                "type": "string",
                "pattern": "^(clustering|spam:.+)@[0-9]+$",
                "description": "NAME@VERSION: compaction keeps every version",
            },
            f"{INTERNAL} every published model document: the history a rollback republishes.",
            received_by="the trainer (history, rollbacks)",
            sent_by="the trainer, with each document it publishes",
            schema=model_document_schema,
        ),
        TopicDoc(
            t.COUNTER_INCREMENTS,
            MODEL_NAME,
            f"{INTERNAL} a partition's absolute counter total of a model.",
            received_by="the owner of its single partition (the counters)",
            sent_by="every worker",
        ),
        TopicDoc(
            t.CONTROL,
            MODEL_NAME,
            f"{INTERNAL} a request for a model run, or a rollback to a version.",
            received_by="the trainer (the owner of its single partition)",
            sent_by="the counters, crontabs, `smartstream recluster` / `retrain` / `pretrain`",
            title="ControlRequest",
        ),
        TopicDoc(
            t.USER_COMMANDS,
            NO_KEY,
            f"{INTERNAL} re-assign a partition's users once a model version serves; erase a user.",
            received_by="the owner of each partition",
            sent_by="the trainer, after a re-clustering; DELETE /users/{user_id}",
            title="UserCommand",
        ),
        TopicDoc(
            t.PRETRAINING,
            {
                "type": "string",
                "pattern": "^.+:[0-9a-f]{40}$",
                "description": "FILTER:sha1(text): a text is kept once per filter",
            },
            f"{INTERNAL} a spam filter's pretraining corpus (compacted).",
            received_by="the trainer, at each retraining",
            sent_by="`smartstream pretrain`",
        ),
        TopicDoc(
            t.TRAINING_EXAMPLES,
            COMMENT_KEY,
            f"{INTERNAL} reviewed comments, a spam filter's training labels (compacted).",
            received_by="the trainer, at each retraining",
            sent_by="moderation, for each reviewed comment",
        ),
        TopicDoc(
            t.MODERATION_QUEUE,
            COMMENT_KEY,
            f"{INTERNAL} the comments waiting for a moderator (compacted).",
            received_by="every worker (GET /moderation/queue)",
            sent_by="moderation, by the owner of the comment's partition",
        ),
        TopicDoc(
            t.COMMENT_COMMANDS,
            NO_KEY,
            f"{INTERNAL} erase a user's comments, sent to every partition.",
            received_by="the owner of each partition of the comments table",
            sent_by="DELETE /users/{user_id}",
        ),
        TopicDoc(
            t.ERASURES,
            {"type": "string", "minLength": 1, "description": "the erasure id"},
            "The record of erasures (compacted): when, without the user's id or data.",
            sent_by="DELETE /users/{user_id}",
        ),
    )
}


def topic_doc(name: str) -> TopicDoc:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"topic {name!r} of CONTRACT_TOPICS has no entry in TOPICS") from None


def topic_schema(name: str) -> dict[str, Any]:
    """docs/schemas/{name}.json: the value's schema, with the key's under $defs/key."""
    doc = topic_doc(name)
    return {
        "$schema": DIALECT,
        "$comment": f"The value of topic {name} (a UTF-8 JSON object); $defs/key: its key.",
        **doc.value_schema(),
        "$defs": {"key": doc.key},
    }


# ---------------------------------------------------------------------------------------------
# AsyncAPI 3.0


def _channel(spec: t.TopicSpec, s: Settings) -> dict[str, Any]:
    doc = topic_doc(spec.name)
    config: dict[str, Any] = {"cleanup.policy": ["compact" if spec.compacted else "delete"]}
    if spec.max_bytes:
        config["max.message.bytes"] = spec.max_bytes
    return {
        "address": s.topic(spec.name),
        "title": spec.name,
        "description": f"{doc.summary} Key: {spec.key}.",
        "messages": {spec.name: {"$ref": f"#/components/messages/{spec.name}"}},
        "bindings": {
            "kafka": {
                "partitions": spec.partitions or s.partitions,
                "topicConfiguration": config,
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _operations(spec: t.TopicSpec) -> dict[str, Any]:
    doc = topic_doc(spec.name)
    out = {}
    for action, verb, who in (
        ("receive", "read by", doc.received_by),
        ("send", "written by", doc.sent_by),
    ):
        if who is not None:
            out[f"{action}-{spec.name}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{spec.name}"},
                "summary": f"{verb} {who}",
                "messages": [{"$ref": f"#/channels/{spec.name}/messages/{spec.name}"}],
            }
    return out


def asyncapi_document(s: Settings) -> dict[str, Any]:
    """The topics as AsyncAPI 3.0: a channel per topic (address with the topic prefix), its
    message (JSON value, Kafka key in the message binding) and what the system receives and
    sends on it."""
    channels, operations, messages, schemas = {}, {}, {}, {}
    for spec in t.CONTRACT_TOPICS:
        doc = topic_doc(spec.name)
        value = doc.value_schema()
        channels[spec.name] = _channel(spec, s)
        operations.update(_operations(spec))
        schemas[value["title"]] = value
        messages[spec.name] = {
            "name": value["title"],
            "title": f"{spec.name} record",
            "summary": doc.summary,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{value['title']}"},
            "bindings": {"kafka": {"key": doc.key, "bindingVersion": KAFKA_BINDING}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "SmartStream topics",
            "version": CONTRACT_VERSION,
            "description": "Values are UTF-8 JSON objects; a record that breaks its schema is "
            "refused to `dead-letters` with the reason. Unknown fields are ignored. Topic "
            f"prefix of this deployment: {s.topic_prefix!r}.",
            "license": {"name": LICENSE},
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


# ---------------------------------------------------------------------------------------------
# OpenAPI 3.1


@dataclass(frozen=True)
class Answer:
    description: str
    schema: str | dict[str, Any] | None = "Error"  # a components schema name, or inline
    media: str = "application/json"


@dataclass(frozen=True)
class Route:
    """One documented HTTP operation. `role`: the streams.auth role it needs whenever any
    credential is configured (401 without one, 403 below it); `body`: the components schema of
    its JSON body; `beacon`: the body may come as text/plain (navigator.sendBeacon)."""

    method: str
    path: str
    summary: str
    tag: str
    answers: dict[int, Answer]
    role: str | None = None
    body: str | None = None
    beacon: bool = False
    query: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    faust_view: bool = False  # Faust's own router and table views: off with credentials


def ok(description: str, schema: str | dict[str, Any], media: str = "application/json") -> Answer:
    return Answer(description, schema, media)


ROUTED = Answer("the worker cannot route to the key's owner yet (its first seconds)")
BROKER = Answer("the broker did not acknowledge in time (or the owner did not answer)")
PRODUCED = Answer("done: the broker acknowledged the record", schema=None)
BAD = Answer("refused, with the reason")
NOT_JSON = Answer("the body is not declared as application/json")
HTML = {"type": "string"}
ANY_JSON = {"type": "object"}


def ingest(path: str, summary: str, role: str, body: str, beacon: bool = False) -> Route:
    answers = {204: PRODUCED, 400: BAD, 503: BROKER} | ({} if beacon else {415: NOT_JSON})
    return Route("post", path, summary, "ingestion", answers, role, body, beacon)


def faust(path: str, summary: str) -> Route:
    return Route("get", path, f"Faust: {summary}", "faust", {200: ok(summary, ANY_JSON)},
                 faust_view=True)


ROUTES: tuple[Route, ...] = (
    Route("get", "/health", "Liveness and readiness", "operations",
          {200: ok("processing", "Health"), 503: ok("not processing yet", "Health")}),
    Route("get", "/metrics", "Prometheus figures", "operations",
          {200: ok("Prometheus text format", HTML, "text/plain"),
           401: Answer("SMARTSTREAM_METRICS_REQUIRE_TOKEN set and no admin token")}),
    ingest("/events/page-time", "A page view (the contract's JSON or the beacon)", "ingest",
           "PageTime", beacon=True),
    ingest("/events/new-user", "A user joined", "ingest", "NewUser"),
    ingest("/comments", "A comment to moderate", "server", "Comment"),
    Route("get", "/users/{user_id}", "A user's record, from any worker", "reads",
          {200: ok("the user's record", "User"), 404: Answer("unknown user"), 503: ROUTED},
          "server"),
    Route("delete", "/users/{user_id}", "Erase a user: profile, assignment, comments, "
          "training examples, Redis keys", "privacy",
          {202: ok("accepted: the workers carry it out", "ErasureAccepted"), 503: BROKER},
          "admin"),
    Route("get", "/comments/{comment_id}", "A comment's row: label, score, version, review",
          "reads",
          {200: ok("the row", "CommentRow"), 404: Answer("unknown comment"), 503: ROUTED},
          "server"),
    Route("post", "/comments/{comment_id}/review", "A moderator's verdict on a known comment",
          "moderation",
          {204: PRODUCED, 400: BAD, 404: Answer("unknown comment"), 415: NOT_JSON,
           503: BROKER}, "server", "Review"),
    Route("get", "/moderation/queue", "Comments waiting for a moderator, oldest first",
          "moderation",
          {200: ok("a page of the queue", "ModerationQueue"), 400: BAD,
           503: Answer("the queue is still loading")}, "server",
          query=(("limit", "entries per page, 1..500 (50)",
                  {"type": "integer", "minimum": 1, "maximum": 500}),
                 ("after", "the `next` cursor of the previous page", {"type": "string"}))),
    Route("get", "/moderation", "The moderators' page (it asks for the server token)",
          "moderation", {200: ok("the page", HTML, "text/html")}),
    Route("get", "/counters", "Each model's counter and threshold", "reads",
          {200: ok("by model name", "Counters"), 503: ROUTED}, "server"),
    Route("get", "/clusters", "The current and previous clustering", "reads",
          {200: ok("current and previous", "Clusters")}, "server"),
    Route("get", "/spam-filters/{name}", "A spam filter's current and previous inference",
          "reads",
          {200: ok("the filter", "SpamFilter"), 404: Answer("unknown spam filter"),
           503: ROUTED}, "server"),
    Route("get", "/models", "Each model's version history", "operators",
          {200: ok("models and their versions", ANY_JSON)}, "server"),
    Route("post", "/models/{name}/rollback", "Republish a version of the model's history as "
          "a new version", "operators",
          {202: ok("requested: the trainer publishes it shortly", "RollbackAccepted"),
           400: BAD, 404: Answer("unknown model, or a version not in its history"),
           415: NOT_JSON, 503: BROKER}, "admin", "Rollback"),
    Route("get", "/dashboard", "The operators' page (it asks for the admin token)",
          "operators", {200: ok("the page", HTML, "text/html")}),
    Route("get", "/dashboard/data", "What the dashboard draws that no other route serves",
          "operators", {200: ok("the dashboard's figures", ANY_JSON)}, "admin"),
    Route("get", "/pages/{page_type}/{user_id}", "A demo site page", "demo site",
          {200: ok("the page", HTML, "text/html")}),
    Route("get", "/pages", "The demo site: the latest user's page A", "demo site",
          {302: Answer("to /pages/A/{user_id}", schema=None)}),
    Route("get", "/site/data", "The demo site's latest users and comments", "demo site",
          {200: ok("users, comments, the filter", ANY_JSON)}, "admin"),
    Route("get", "/openapi.json", "This document", "contract",
          {200: ok("OpenAPI 3.1", ANY_JSON)}),
    Route("get", "/asyncapi.json", "The topics", "contract", {200: ok("AsyncAPI 3.0", ANY_JSON)}),
    Route("get", "/schemas/{topic}.json", "A topic's JSON Schema (value; key under $defs)",
          "contract",
          {200: ok("JSON Schema draft 2020-12", ANY_JSON), 404: Answer("unknown topic")}),
    Route("get", "/", "Faust's index", "faust", {200: ok("status", ANY_JSON)}),
    faust("/router/", "every table's routes"),
    faust("/router/topics", "external topics' routes"),
    faust("/router/{name}/", "a table's routes"),
    faust("/router/{name}/{key}/", "the host of a table key"),
    faust("/table/", "the tables"),
    faust("/table/{name}/", "a table"),
    faust("/table/{name}/{key}/", "a table row (raw key)"),
)

PARAMETERS = {
    "user_id": "a user id",
    "comment_id": "a comment id",
    "name": "a spam filter's name; a model's (`clustering`, `spam:FILTER`); Faust: a table's",
    "page_type": "A..J",
    "topic": "a topic of the contract, without the deployment's prefix",
    "key": "a table key",
}
BEARER = "as `Authorization: Bearer`"
ROLES = {
    "ingest": "the public ingest key as `?key=` (it may appear in page source), or any "
    f"credential {BEARER}",
    "server": f"the server token (SMARTSTREAM_API_TOKEN) or the admin token, {BEARER}",
    "admin": f"the admin token (SMARTSTREAM_ADMIN_TOKEN; without one, the server token), {BEARER}",
}


def routes(s: Settings) -> list[Route]:
    """The routes a worker with settings `s` serves: Faust's router and table views are off
    whenever credentials are configured (streams.app)."""
    return [x for x in ROUTES if not (x.faust_view and s.credentials_configured)]


def _ref(schema: str | dict[str, Any]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema


def _parameters(route: Route) -> list[dict[str, Any]]:
    path = [
        {"name": n, "in": "path", "required": True, "description": PARAMETERS[n],
         "schema": {"type": "string"}}
        for n in re.findall(r"{(\w+)}", route.path)
    ]
    query = [
        {"name": n, "in": "query", "required": False, "description": d, "schema": schema}
        for n, d, schema in route.query
    ]
    return path + query


def _guard(route: Route, operation: dict[str, Any], answers: dict[int, Answer]) -> None:
    """What a route's role adds: its security requirement, 401 and (above ingest) 403."""
    if route.role is None:
        return
    operation["description"] = f"When any credential is configured: {ROLES[route.role]}."
    operation["security"] = [{"ingestKey": []}] if route.role == "ingest" else []
    operation["security"].append({"bearerToken": []})
    operation["x-smartstream-role"] = route.role
    answers[401] = Answer("no valid credential")
    if route.role != "ingest":
        answers[403] = Answer("the credential's role is too low")


def _operation(route: Route) -> dict[str, Any]:
    answers = dict(route.answers)
    operation: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": re.sub(r"\W+", "_", f"{route.method}{route.path}").strip("_"),
    }
    if parameters := _parameters(route):
        operation["parameters"] = parameters
    _guard(route, operation, answers)
    if route.body:
        media = ["application/json", "text/plain"] if route.beacon else ["application/json"]
        operation["requestBody"] = {
            "required": True,
            "description": "JSON; text/plain: the beacon's JSON" if route.beacon else "JSON",
            "content": {m: {"schema": _ref(route.body)} for m in media},
        }
    operation["responses"] = {
        str(status): {
            "description": answers[status].description,
            **(
                {"content": {answers[status].media: {"schema": _ref(answers[status].schema)}}}
                if answers[status].schema is not None
                else {}
            ),
        }
        for status in sorted(answers)
    }
    return operation


def _user_schema() -> dict[str, Any]:
    """GET /users/{user_id}: the original UserInfo names (streams.profiles.PUBLIC_FIELDS)."""
    kinds: dict[str, Any] = {
        "user_id": {"type": "string"},
        **{name: {"type": "number", "minimum": 0} for name in AVG_FIELDS},
        **{name: {"type": "integer", "minimum": 0} for name in VISIT_FIELDS},
        "age": {"type": ["integer", "null"]},
        "sex": {"enum": ["M", "F", None]},
        "avg1": {"type": ["number", "null"]},
        "cluster": {"type": ["string", "null"]},
        "atypical": {"type": ["boolean", "null"]},
        "model_version": {"type": ["integer", "null"]},
    }
    return {
        "type": "object",
        "properties": {name: kinds[name] for name in PUBLIC_FIELDS},
        "required": list(PUBLIC_FIELDS),
    }


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


NULLABLE_OBJECT = {"type": ["object", "null"]}
NULLABLE_STRING = {"type": ["string", "null"]}


def _review_schema() -> dict[str, Any]:
    """POST /comments/{comment_id}/review: a comment review whose id is the path's."""
    review = record_schema(r.CommentReview)
    return {
        **review,
        "title": "Review",
        "description": "A moderator's verdict; `comment_id`, when given, must be the path's.",
        "required": [x for x in review["required"] if x != "comment_id"],
    }


def http_schemas() -> dict[str, Any]:
    """Request bodies (from the records) and responses (their main fields: a view may add
    more)."""
    counter = _object(
        ["model", "total", "count", "threshold", "requests"],
        model={"type": "string"},
        total=COUNT,
        count=COUNT,
        threshold={"type": ["integer", "null"]},
        requests=COUNT,
    )
    return {
        "PageTime": record_schema(r.PageTime),
        "NewUser": record_schema(r.NewUser),
        "Comment": record_schema(r.Comment),
        "Review": _review_schema(),
        "Rollback": _object(["version"], version={"type": "integer", "minimum": 1}),
        "Error": _object(["error"], error={"type": "string"}),
        "Health": _object(
            ["status"],
            status={"enum": ["ok", "starting"]},
            uptime_s={"type": "number"},
            assigned_partitions=COUNT,
            paused_partitions={"type": "array", "items": {"type": "string"}},
        ),
        "User": _user_schema(),
        "CommentRow": _object(
            ["comment_id"],
            comment_id={"type": "string"},
            filter=NULLABLE_STRING,
            text=NULLABLE_STRING,
            label={"type": ["boolean", "null"]},
            score={"type": ["number", "null"]},
            model_version={"type": ["integer", "null"]},
            review={"type": ["boolean", "null"]},
        ),
        "ModerationQueue": _object(
            ["entries", "next", "pending"],
            entries={"type": "array", "items": record_schema(r.PendingComment)},
            next=NULLABLE_STRING,
            pending=COUNT,
        ),
        "Counters": {"type": "object", "additionalProperties": counter},
        "Clusters": _object(
            ["current", "previous"], current=NULLABLE_OBJECT, previous=NULLABLE_OBJECT
        ),
        "SpamFilter": _object(
            ["name", "version", "current", "previous", "reviews", "counter"],
            name={"type": "string"},
            preset={"type": "string"},
            version=COUNT,
            current=NULLABLE_OBJECT,
            previous=NULLABLE_OBJECT,
            reviews={"type": "object", "additionalProperties": COUNT},
            counter={"type": "object"},
            trainer={"type": "object"},
        ),
        "ErasureAccepted": _object(
            ["erasure_id", "status"], erasure_id={"type": "string"}, status={"const": "accepted"}
        ),
        "RollbackAccepted": _object(
            ["model", "rollback_to", "requested"],
            model={"type": "string"},
            rollback_to={"type": "integer", "minimum": 1},
            requested={"const": True},
        ),
    }


def openapi_document(s: Settings) -> dict[str, Any]:
    """Every HTTP route a worker with settings `s` registers, as OpenAPI 3.1."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes(s):
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SmartStream HTTP",
            "version": CONTRACT_VERSION,
            "description": "Each worker's web server. With no credential configured every "
            "route is open; with any, each route wants its role (`x-smartstream-role`). Table "
            "reads are routed by Faust to the worker owning the key, so any worker answers.",
            "license": {"name": LICENSE, "identifier": LICENSE},
        },
        "paths": paths,
        "components": {
            "schemas": http_schemas(),
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "SMARTSTREAM_API_TOKEN (server role) or "
                    "SMARTSTREAM_ADMIN_TOKEN (admin role)",
                },
                "ingestKey": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "key",
                    "description": "SMARTSTREAM_PUBLIC_INGEST_KEY: beacons and new users only",
                },
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# Files and views


def render(document: dict[str, Any]) -> bytes:
    """The one serialisation of a document: what is served is what is committed."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def documents(s: Settings) -> dict[str, bytes]:
    """Every document by its path under docs/ (and under the worker's web root)."""
    out = {
        "openapi.json": render(openapi_document(s)),
        "asyncapi.json": render(asyncapi_document(s)),
    }
    for spec in t.CONTRACT_TOPICS:
        out[f"schemas/{spec.name}.json"] = render(topic_schema(spec.name))
    return out


def write(directory: Path, s: Settings) -> list[Path]:
    """Write the documents under `directory`; stale schema files are removed."""
    docs = documents(s)
    (directory / "schemas").mkdir(parents=True, exist_ok=True)
    for stale in (directory / "schemas").glob("*.json"):
        if f"schemas/{stale.name}" not in docs:
            stale.unlink()
    written = []
    for name, body in docs.items():
        path = directory / name
        path.write_bytes(body)
        written.append(path)
    return written


@functools.cache
def served() -> dict[str, bytes]:
    """This worker's documents, built once (after every module registered its routes)."""
    return documents(settings)


def _document(view: View, name: str) -> Response:
    return view.bytes(served()[name], content_type="application/json")


@app.page("/openapi.json")
class OpenAPIView(View):
    async def get(self, request: Request) -> Response:
        return _document(self, "openapi.json")


@app.page("/asyncapi.json")
class AsyncAPIView(View):
    async def get(self, request: Request) -> Response:
        return _document(self, "asyncapi.json")


@app.page("/schemas/{topic}.json")
class TopicSchemaView(View):
    async def get(self, request: Request, topic: str) -> Response:
        if f"schemas/{topic}.json" not in served():
            return self.json({"error": f"unknown topic {topic[:80]!r}"}, status=404)
        return _document(self, f"schemas/{topic}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.contract",
        description="Write the contract's documents (default configuration) under a directory.",
    )
    parser.add_argument("--write", metavar="DIR", required=True, type=Path)
    args = parser.parse_args(argv)
    for path in write(args.write, Settings.from_env({})):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
