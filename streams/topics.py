"""The contract's topics: names, partitions, cleanup policies, the codec of their values, and
their creation.

Keyed topics (`page-times`, `new-users`, `comments`, ...) share the configured partition count so
a user's events and the user's table row live in the same partition: no repartition topic.
Latest-state topics (`cluster-assignments`, `models`) are compacted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from streams import records as r
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic and the codec of its values: the record classes a value may be (`value`, empty
    for model documents, which models.documents validates) and the validating reader of a
    decoded JSON object (`parse`). Producers, workers, the CLI and tests encode and decode
    through it, so a topic's values are typed in one place."""

    name: str
    key: str
    value: tuple[type, ...] = ()
    parse: Callable[..., Any] | None = None
    compacted: bool = False
    # None: the configured partition count; 1 for topics one owner must read in order.
    partitions: int | None = None
    max_bytes: int | None = None

    def encode(self, record: Any) -> bytes:
        """A record's JSON value; a record of another type is a programming error."""
        if not isinstance(record, self.value):
            raise TypeError(f"{self.name} values are {self.value}, not {type(record).__name__}")
        return record.dumps()

    def decode(self, raw: bytes | None, max_bytes: int, *limits: Any) -> Any:
        """The record a value holds; raises records.Rejected (the dead letter's reason) on
        anything else. `limits`: the parser's configured bounds (page-times: max_seconds),
        positional: this is the users pipeline's per-event path."""
        if self.parse is None:
            raise TypeError(f"{self.name} values are model documents: models.documents reads them")
        return self.parse(r.loads_object(raw or b"", max_bytes), *limits)


def read_written(cls: type) -> Callable[[dict[str, Any]], Any]:
    """The reader of a record only workers write (assignments, labels, dead letters): its
    fields by name, unknown ones ignored; a missing field is refused."""
    names = frozenset(f.name for f in fields(cls))

    def parse(obj: dict[str, Any]) -> Any:
        try:
            return cls(**{k: v for k, v in obj.items() if k in names})
        except TypeError as exc:
            raise r.Rejected(f"not a {cls.__name__}: {exc}") from None

    return parse


# Spam filters with large vocabularies serialise to a few MB of JSON.
MODEL_MAX_BYTES = 32 * 1024 * 1024

PAGE_TIMES = "page-times"
NEW_USERS = "new-users"
CLUSTER_ASSIGNMENTS = "cluster-assignments"
COMMENTS = "comments"
COMMENT_LABELS = "comment-labels"
COMMENT_REVIEWS = "comment-reviews"
DEAD_LETTERS = "dead-letters"
MODELS = "models"
# Internal: weighted counter increments and model-run requests, one partition so that one
# worker owns the counters and the trainer.
COUNTER_INCREMENTS = "counter-increments"
CONTROL = "control"
# Internal, user-keyed partitions: commands to the owner of each partition (re-assign with a new
# model version).
USER_COMMANDS = "user-commands"
# Internal, compacted: spam filters' training data. Pretraining corpora (`smartstream pretrain`)
# and moderators' reviewed comments; retraining reads both, never the filter's own predictions.
PRETRAINING = "pretraining"
TRAINING_EXAMPLES = "training-examples"
# Internal, compacted: the comments waiting for a moderator (key comment id; a tombstone once
# decided). Every worker follows it, so any worker answers GET /moderation/queue (streams.review).
MODERATION_QUEUE = "moderation-queue"
# Internal, compacted, key `NAME@VERSION`: every published model document under its own key, so
# compaction (which keeps one value per key) keeps each version: the history and what a rollback
# republishes. Apart from `models` so a starting worker reads only the latest documents.
MODEL_VERSIONS = "model-versions"
# Internal, comment-keyed partitions: commands to every partition's owner of the comments table
# (erase a user's comments). Compacted: the record of erasures, without personal data.
COMMENT_COMMANDS = "comment-commands"
ERASURES = "erasures"

CONTRACT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(PAGE_TIMES, "user_id", (r.PageTime,), r.parse_page_time),
    TopicSpec(NEW_USERS, "user_id", (r.NewUser,), r.parse_new_user),
    TopicSpec(
        CLUSTER_ASSIGNMENTS,
        "user_id",
        (r.ClusterAssignment,),
        read_written(r.ClusterAssignment),
        compacted=True,
    ),
    TopicSpec(COMMENTS, "comment_id", (r.Comment,), r.parse_comment),
    TopicSpec(COMMENT_LABELS, "comment_id", (r.CommentLabel,), read_written(r.CommentLabel)),
    TopicSpec(COMMENT_REVIEWS, "comment_id", (r.CommentReview,), r.parse_comment_review),
    TopicSpec(DEAD_LETTERS, "original key", (r.DeadLetter,), read_written(r.DeadLetter)),
    TopicSpec(MODELS, "model name", compacted=True, partitions=1, max_bytes=MODEL_MAX_BYTES),
    TopicSpec(
        MODEL_VERSIONS, "NAME@VERSION", compacted=True, partitions=1, max_bytes=MODEL_MAX_BYTES
    ),
    TopicSpec(
        COUNTER_INCREMENTS, "model name", (r.CounterTotal,), r.parse_counter_total, partitions=1
    ),
    TopicSpec(
        CONTROL,
        "model name",
        (r.RunRequest, r.RollbackRequest),
        r.parse_control,
        partitions=1,
    ),
    TopicSpec(
        USER_COMMANDS,
        "none (one record per partition)",
        (r.Reassign, r.Erase),
        r.parse_user_command,
    ),
    TopicSpec(
        PRETRAINING,
        "filter:sha1(text)",
        (r.PretrainingExample,),
        r.parse_training_example,
        compacted=True,
        partitions=1,
    ),
    TopicSpec(
        TRAINING_EXAMPLES,
        "comment_id",
        (r.PretrainingExample,),
        r.parse_training_example,
        compacted=True,
        partitions=1,
    ),
    TopicSpec(
        MODERATION_QUEUE,
        "comment_id",
        (r.PendingComment,),
        r.parse_pending_comment,
        compacted=True,
        partitions=1,
    ),
    TopicSpec(COMMENT_COMMANDS, "none (one record per partition)", (r.Erase,), r.parse_erase),
    TopicSpec(
        ERASURES, "erasure id", (r.Erasure,), read_written(r.Erasure), compacted=True, partitions=1
    ),
)
SPECS: dict[str, TopicSpec] = {spec.name: spec for spec in CONTRACT_TOPICS}


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as Faust, kafka-python and aiokafka
    use it) gives a key: where a keyed record, and so its table row, lives."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def new_topics(settings: Settings) -> list[NewTopic]:
    out = []
    for spec in CONTRACT_TOPICS:
        configs = {"cleanup.policy": "compact"} if spec.compacted else {}
        if spec.max_bytes:
            configs["max.message.bytes"] = str(spec.max_bytes)
        out.append(
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=spec.partitions or settings.partitions,
                replication_factor=-1,
                topic_configs=configs,
            )
        )
    return out


def ensure_topics(settings: Settings, timeout_s: float = 60.0) -> list[str]:
    """Create the missing contract topics and return their names; waits for the broker."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                client_id="smartstream-admin", **settings.kafka_python_config()
            )
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for Kafka at %s: %s", settings.kafka_bootstrap, exc)
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in new_topics(settings) if t.name not in existing]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def delete_prefixed_topics(settings: Settings) -> list[str]:
    """Delete every topic of this deployment's prefix (the contract's topics and Faust's
    changelogs): what a benchmark run leaves behind on a shared broker."""
    if not settings.topic_prefix:
        raise ValueError("refusing to delete topics without a topic prefix")
    admin = KafkaAdminClient(client_id="smartstream-admin", **settings.kafka_python_config())
    try:
        names = [n for n in admin.list_topics() if n.startswith(settings.topic_prefix)]
        if names:
            admin.delete_topics(names)
        return names
    finally:
        admin.close()
