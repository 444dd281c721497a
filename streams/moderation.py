"""Comment moderation (SPEC §7) as a streaming service.

* `comments` and `comment-reviews` (both keyed by comment id, co-partitioned with the `comments`
  table) are delivered in bulk, each fetch at once (streams/adapter: no wait for a batch to fill,
  none of Faust's per-message overhead): the new comments of a fetch are classified with one
  vectorised call per filter and labelled on `comment-labels` with the filter's model version.
  Before a filter's first model exists, comments get an explicit "unknown" label (version 0).
* A moderator's review becomes a training example (`training-examples`, compacted, keyed by
  comment id) and counts towards the filter's confusion figures; a review that contradicts the
  published label is a misclassification. Reviews drive the filter's counter: every
  SMARTSTREAM_MODERATION_REVIEW_THRESHOLD reviews request a retraining.
* Retraining (streams.trainer: counter, crontab, `smartstream retrain`) uses the pretraining
  corpus plus reviewed comments, never the filter's own predictions (fixes SPEC §11.7). The new
  version reaches every worker through `models` and is hot-swapped between batches: a comment is
  labelled once per version that processed it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import sklearn
from faust.web import Request, Response, View

from models.spam import METRIC_NAMES, PRESETS, SpamFilter
from streams import topics as t
from streams.adapter.bulk import gathered
from streams.app import (
    app,
    batch_producer,
    models_ready,
    settings,
    store_rows,
)
from streams.auth import Role, requires
from streams.counters import (
    counter_state,
    counters_table,
    request_run,
    send_total,
)
from streams.deadletters import letter, send_letters
from streams.fitting import train_filter
from streams.monitoring import BATCH_SECONDS, CLASSIFY_SECONDS, EVENTS
from streams.records import (
    CommentLabel,
    PendingComment,
    PretrainingExample,
    Rejected,
    count_or_none,
    finite_or_none,
    object_or_empty,
    parse_training_example,
    unstamp,
)
from streams.served import Served
from streams.serving import CLUSTERING
from streams.trainer import (
    ModelKind,
    forget_history,
    in_helper_process,
    next_version,
    publish_model,
    read_latest,
    register,
)
from streams.users import mirror, row_partition

log = logging.getLogger(__name__)
# The worker only predicts, on vectoriser output it made itself: scikit-learn's parameter and
# finiteness checks cost ~0.5 ms per call (a third of labelling a one-comment fetch).
sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
COMMENTS = settings.topic(t.COMMENTS)
LABELS = settings.topic(t.COMMENT_LABELS)
EXAMPLES = settings.topic(t.TRAINING_EXAMPLES)
REVIEWS = settings.topic(t.COMMENT_REVIEWS)
QUEUE = settings.topic(t.MODERATION_QUEUE)
STAT_NAMES = ("reviews", "misclassified", "tp", "fp", "tn", "fn")

COMMANDS = settings.topic(t.COMMENT_COMMANDS)
moderation_events = app.topic(
    COMMENTS, REVIEWS, COMMANDS, key_serializer="raw", value_serializer="raw"
)
# The erasure scan of the comments table yields to the event loop after this many rows.
ERASE_SLICE = 5_000
comments_table = app.Table(
    "comments",
    default=None,
    partitions=settings.partitions,
    key_type=bytes,
    help="Comments: text, filter, published label and score, moderator's review.",
)


@dataclass
class ServingFilter(Served):
    """A filter's serving model and the inference records of its current and previous
    versions (the admin's "current inference" block, SPEC §7.5)."""

    name: str
    preset: str
    model: SpamFilter | None = None
    inference: dict[str, Any] | None = None
    previous_inference: dict[str, Any] | None = None

    @property
    def model_name(self) -> str:
        return f"spam:{self.name}"

    def build(self, document: dict[str, Any], version: int) -> tuple[SpamFilter, dict]:
        """SpamFilter.from_dict validates the state and probes a prediction."""
        state, stamps = unstamp(document.get("model"), "model", version, name=self.name)
        model = SpamFilter.from_dict(state)
        record = {
            **model.inference_record(),
            **stamps,
            "reason": document.get("reason"),
            "pretraining_size": document.get("pretraining_size"),
            "reviewed_size": document.get("reviewed_size"),
        }
        return model, record

    def kept(self, document: dict[str, Any]) -> dict[str, Any]:
        """The document without its model (up to MODEL_MAX_BYTES of vocabulary): the loaded
        filter and its inference record hold what is served and shown."""
        return {k: v for k, v in document.items() if k != "model"}

    def adopt(self, built: tuple[SpamFilter, dict], document: dict[str, Any]) -> None:
        self.model, record = built
        self.previous_inference, self.inference = self.inference, record


# The last comments this worker labelled, for the dashboard.
latest_comments: deque[dict[str, Any]] = deque(maxlen=20)
# Called with each filter's scores of a fetch (None: no score): streams.lifecycle's drift window.
label_observers: list[Callable[[str, list[float | None]], None]] = []
filters = {
    name: ServingFilter(name, preset) for name, preset in settings.spam_filter_presets.items()
}
# (filter, partition) -> confusion figures of the reviewed comments whose rows live there
review_stats: dict[tuple[str, int], dict[str, int]] = defaultdict(
    lambda: dict.fromkeys(STAT_NAMES, 0)
)
# (filter, outcome) -> labels and verdicts this worker published: "pending" labels, moderators'
# "approved" (ham) and "rejected" (spam) verdicts, "overturned" published labels (streams.review
# shows them on /metrics and the dashboard).
moderation_outcomes: Counter[tuple[str, str]] = Counter()


def contribution(row: dict[str, Any] | None) -> dict[str, int]:
    """What one comment row adds to its filter's review figures."""
    out = dict.fromkeys(STAT_NAMES, 0)
    if not row or row.get("review") is None or row.get("filter") is None:
        return out
    out["reviews"] = 1
    label, review = row.get("label"), row["review"]
    if label is not None:
        key = ("t" if label == review else "f") + ("p" if label else "n")
        out[key] = 1
        out["misclassified"] = int(label != review)
    return out


def _account(partition: int, old: dict | None, new: dict) -> str | None:
    """Move a row's contribution from `old` to `new`; return the filter whose figures changed."""
    before, after = contribution(old), contribution(new)
    if before == after:
        return None
    for row, figures, sign in ((old, before, -1), (new, after, 1)):
        if row and row.get("filter"):
            stats = review_stats[(row["filter"], partition)]
            for name, value in figures.items():
                stats[name] += sign * value
    return new.get("filter") or (old or {}).get("filter")


@app.bulk(moderation_events)
async def moderate(partition: int, records: list[Any]) -> Awaitable[None] | None:
    """One partition's comments and reviews of one fetch (bulk delivery): label the new comments
    with one vectorised call per filter, store the rows, account the reviews."""
    await models_ready.wait()
    start = time.perf_counter()
    rows: dict[bytes, dict[str, Any]] = {}
    originals: dict[bytes, dict[str, Any] | None] = {}
    fresh: list[tuple[dict[str, Any], Any]] = []
    letters = []
    erased_users: set[str] = set()
    for msg in records:
        if msg.topic == COMMANDS:
            _erase_command(msg, erased_users, letters)
            continue
        try:
            record = _parse(msg, partition)
        except Rejected as exc:
            letters.append(letter(msg, str(exc)))
            continue
        key = record.comment_id.encode()
        if key not in rows:
            stored = comments_table.get(key)
            originals[key] = stored
            rows[key] = copy.deepcopy(stored) or {"comment_id": record.comment_id}
        row = rows[key]
        if msg.topic == REVIEWS:
            if row.get("review_offset", -1) < msg.offset:
                row.update(review=record.is_spam, reviewer=record.reviewer)
                row["review_offset"] = msg.offset
            continue
        if row.get("offset", -1) >= msg.offset:
            continue  # a replay: labelled already
        refusal = _refusal(row, record)
        if refusal:
            letters.append(letter(msg, refusal))
            continue
        row.update(filter=record.filter, text=record.text, user_id=record.user_id, ts=record.ts)
        row["offset"] = msg.offset
        fresh.append((row, msg))
    # Labels and training examples first, rows second: a crash in between labels the comment
    # again on replay (the same verdict, an idempotent repeat), while the other order could
    # store a row whose label or example was never published.
    await send_letters(letters)
    erased = await _erase(partition, erased_users, rows, originals)
    fresh = [(row, msg) for row, msg in fresh if row["comment_id"].encode() not in erased]
    labels = classify(fresh) + verdict_labels(rows, originals)
    examples = [
        example
        for key, row in rows.items()
        if (example := _example_of(key, originals[key], row)) is not None
    ]
    # The three topics at once: one broker round trip per fetch instead of three in a row.
    await gathered(
        [
            batch_producer.send_keyed(topic, records)
            for topic, records in (
                (LABELS, labels),
                (QUEUE, queue_records(rows, originals)),
                (EXAMPLES, examples),
            )
            if records
        ]
    )
    mirror_labels(labels)
    changed_filters = {_account(partition, originals[key], row or {}) for key, row in rows.items()}
    rows_written = None
    if rows:  # the changelog write starts now; the records are acked once it is done
        rows_written = store_rows(comments_table, partition, list(rows.items()), coalesce=True)
    for name in changed_filters - {None}:
        stats = review_stats[(name, partition)]
        send_total(f"spam:{name}", partition, stats["reviews"], stats)
    for name in sorted({f for f in erased.values() if f}):  # filters that learnt from them
        await request_run(f"spam:{name}", "erasure")
    for topic, count in Counter(r.topic for r in records).items():
        EVENTS.labels(topic=topic).inc(count)
    BATCH_SECONDS.labels(agent="moderation").observe(time.perf_counter() - start)
    return rows_written  # the next fetch is labelled meanwhile


def _example_of(
    key: bytes, old: dict[str, Any] | None, row: dict[str, Any] | None
) -> tuple[bytes, bytes | None] | None:
    """The `training-examples` record a row's change makes: a tombstone for an erased row, the
    example of a newly reviewed text, or None."""
    if row is None:
        return key, None
    if row.get("review") is None or row.get("text") is None:
        return None
    if old is not None and (old.get("review"), old.get("text")) == (row["review"], row["text"]):
        return None
    return training_example(row)


def _erase_command(msg: Any, users: set[str], letters: list) -> None:
    try:
        erase = t.SPECS[t.COMMENT_COMMANDS].decode(msg.value, settings.max_payload_bytes)
        users.add(erase.user_id)
    except Rejected as exc:
        letters.append(letter(msg, f"bad comment command: {exc}"))


async def _erase(
    partition: int,
    users: set[str],
    rows: dict[bytes, dict[str, Any] | None],
    originals: dict[bytes, dict[str, Any] | None],
) -> dict[bytes, str | None]:
    """Mark the erased users' comments of this partition deleted in `rows` (the batch writes
    their tombstones); returns {comment key: the filter that learnt from it, or None}. The table
    is scanned in slices, the event loop running between them."""
    if not users:
        return {}
    store = comments_table.data
    keys = list(store.keys())  # a snapshot: other partitions' handlers add rows meanwhile
    for start in range(0, len(keys), ERASE_SLICE):
        for key in keys[start : start + ERASE_SLICE]:
            row = store.get(key)
            mine = row and row.get("user_id") in users and row_partition(key) == partition
            if mine and key not in rows:
                originals[key], rows[key] = row, copy.deepcopy(row)
        await asyncio.sleep(0)
    erased: dict[bytes, str | None] = {}
    for key, row in list(rows.items()):
        if row is not None and row.get("user_id") in users:
            erased[key] = row.get("filter") if row.get("review") is not None else None
            rows[key] = None
            mirror.stage_delete(f"{mirror.prefix}comment:{key.decode()}")
    if erased:
        forget = {key.decode() for key in erased}
        kept = [c for c in latest_comments if c["comment_id"] not in forget]
        latest_comments.clear()
        latest_comments.extend(kept)
    return erased


def _parse(msg: Any, partition: int) -> Any:
    """A comment or review, or :class:`Rejected`; keyed by its comment id, in the partition of
    the id's row (co-partitioned with the comments table)."""
    codec = t.SPECS[t.COMMENTS if msg.topic == COMMENTS else t.COMMENT_REVIEWS]
    record = codec.decode(msg.value, settings.max_payload_bytes)
    key = record.comment_id.encode()
    if msg.key != key:
        given = "null" if msg.key is None else repr(msg.key[:40])
        raise Rejected(f"key {given} is not the comment_id {record.comment_id[:40]!r}")
    if row_partition(key) != partition:
        raise Rejected(f"key's partition is {row_partition(key)}, not {partition}")
    return record


def _refusal(row: dict[str, Any], comment: Any) -> str | None:
    """Why a comment cannot take its id's row: first write wins, so a reviewed training
    example (bound to the text its moderator judged) cannot be rewritten by whoever knows its
    id. The same text again is a resubmission and is labelled anew."""
    if comment.filter not in filters:
        return f"unknown spam filter {comment.filter[:40]!r}"
    if row.get("text") is not None and row["text"] != comment.text:
        return "comment id already holds another text (first write wins)"
    if row.get("filter") is not None and row["filter"] != comment.filter:
        return f"comment id already belongs to filter {row['filter'][:40]!r}"
    return None


def mirror_labels(labels: list[tuple[bytes, bytes]]) -> None:
    """Published labels go to Redis too, the latest per comment at
    ``{prefix}smartstream:comment:{comment_id}``, so a site reads a comment's label and its
    author's cluster in one round trip (producers.django.readers). Within the mirror's bound:
    during a long Redis outage labels beyond max_pending are not staged (the topic has them)."""
    if not labels or not mirror.enabled:
        return
    room = max(0, mirror.max_pending - len(mirror.pending))
    for key, value in labels[:room]:
        mirror.stage(f"comment:{key.decode()}", json.loads(value))
    if len(labels) > room:
        mirror.dropped += len(labels) - room
        log.warning("Redis backlog full: %d comment labels not mirrored", len(labels) - room)
    mirror.flush_soon()


def classify(fresh: list[tuple[dict[str, Any], Any]]) -> list[tuple[bytes, bytes]]:
    """Label new comments (with their source records): one vectorised prediction per filter.
    Returns the `comment-labels` records (key, value)."""
    out: list[tuple[bytes, bytes]] = []
    by_filter: dict[str, list[tuple[dict[str, Any], Any]]] = defaultdict(list)
    for row, msg in fresh:
        by_filter[row["filter"]].append((row, msg))
    for name, items in by_filter.items():
        serving = filters[name]
        model = serving.model
        if model is None:
            labels: list[bool | None] = [None] * len(items)
            scores: list[float | None] = [None] * len(items)
        else:
            predicted, calibrated = model.predict_with_scores([row["text"] for row, _ in items])
            labels, scores = predicted.tolist(), calibrated.tolist()
            for i, score in enumerate(scores):  # no NaN can reach the topic (invalid JSON)
                if not math.isfinite(score):
                    labels[i] = scores[i] = None
        for observe in label_observers:
            observe(name, scores)
        now = time.time()
        for (row, msg), label, score in zip(items, labels, scores, strict=True):
            state = label_state(row, score, now)
            if state == "pending":
                label = None
            row.update(label=label, score=score, model_version=serving.version, state=state)
            record = CommentLabel(
                row["comment_id"], label, score, name, serving.version, now, state
            )
            value = record.to_dict()
            latest_comments.appendleft(
                {**value, "text": row["text"][:500], "user_id": row.get("user_id")}
            )
            out.append((row["comment_id"].encode(), record.dumps()))
            CLASSIFY_SECONDS.observe(max(0.0, now - msg.timestamp / 1000))  # Kafka's ms
    return out


def label_state(row: dict[str, Any], score: float | None, now: float) -> str:
    """The label's state: "unknown" without a score, "pending" inside the uncertain band
    [low, high) (a person decides; the row keeps since when), else "labelled" (is_spam =
    score >= 1/2)."""
    if score is None:
        return "unknown"
    if not settings.moderation_pending_low <= score < settings.moderation_pending_high:
        return "labelled"
    if row.get("state") != "pending":
        row["pending_since"] = now
    moderation_outcomes[(row["filter"], "pending")] += 1
    return "pending"


def verdict_labels(
    rows: dict[bytes, dict[str, Any] | None], originals: dict[bytes, dict[str, Any] | None]
) -> list[tuple[bytes, bytes]]:
    """The batch's moderators' verdicts: counted, and for a pending comment (or a reviewed one
    whose verdict changed) the final `comment-labels` record: state "reviewed", `is_spam` the
    verdict, the model's score and version kept."""
    out = []
    now = time.time()
    for key, row in rows.items():
        if row is None or row.get("review") is None or row.get("filter") is None:
            continue  # erased, not reviewed, or a review whose comment has not arrived
        verdict = row["review"]
        changed = (originals[key] or {}).get("review") != verdict
        if changed:
            outcome = "rejected" if verdict else "approved"
            moderation_outcomes[(row["filter"], outcome)] += 1
            if row.get("label") is not None and row["label"] != verdict:
                moderation_outcomes[(row["filter"], "overturned")] += 1
        if row.get("state") == "pending" or (changed and row.get("state") == "reviewed"):
            row["state"] = "reviewed"
            label = CommentLabel(
                comment_id=row["comment_id"],
                is_spam=verdict,
                score=row.get("score"),
                filter=row["filter"],
                model_version=row.get("model_version", 0),
                ts=now,
                state="reviewed",
            )
            out.append((key, label.dumps()))
    return out


def queue_entry(row: dict[str, Any] | None) -> PendingComment | None:
    """A pending comment's `moderation-queue` value (what a moderator needs to decide)."""
    if not row or row.get("state") != "pending":
        return None
    return PendingComment(
        comment_id=row["comment_id"],
        text=row["text"],
        user_id=row.get("user_id"),
        filter=row["filter"],
        score=row["score"],
        model_version=row["model_version"],
        pending_since=row["pending_since"],
    )


def queue_records(
    rows: dict[bytes, dict[str, Any] | None], originals: dict[bytes, dict[str, Any] | None]
) -> list[tuple[bytes, bytes | None]]:
    """The batch's `moderation-queue` records: the entry of a comment that became (or stays,
    changed) pending; a tombstone for one decided or erased."""
    out: list[tuple[bytes, bytes | None]] = []
    for key, row in rows.items():
        entry = queue_entry(row)
        if entry != queue_entry(originals[key]):
            out.append((key, None if entry is None else entry.dumps()))
    return out


def training_example(row: dict[str, Any]) -> tuple[bytes, bytes]:
    """The `training-examples` record of a reviewed comment (key: comment id)."""
    example = PretrainingExample(
        filter=row["filter"],
        text=row["text"],
        is_spam=row["review"],
        comment_id=row["comment_id"],
        reviewer=row.get("reviewer"),
    )
    return row["comment_id"].encode(), example.dumps()


@comments_table.on_recover
async def recount_reviews() -> None:
    """Rebuild this worker's partitions' review figures from the table and resend them."""
    active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == COMMENTS}
    for key in [k for k in review_stats if k[1] in active]:
        del review_stats[key]
    touched = set()
    for key, row in comments_table.items():
        partition = row_partition(key)
        if partition in active and row.get("filter"):
            stats = review_stats[(row["filter"], partition)]
            for name, value in contribution(row).items():
                stats[name] += value
            touched.add((row["filter"], partition))
    for name, partition in sorted(touched):
        stats = review_stats[(name, partition)]
        send_total(f"spam:{name}", partition, stats["reviews"], stats)


# ---------------------------------------------------------------------------------------------
# Retraining


async def training_data(name: str) -> tuple[list[str], list[bool], int, int]:
    """The filter's pretraining corpus plus its reviewed comments (reviews win on equal text)."""
    parse = parse_training_example
    pre = await read_latest(settings.topic(t.PRETRAINING), 1, parse)
    reviewed = await read_latest(settings.topic(t.TRAINING_EXAMPLES), 1, parse)
    by_text: dict[str, bool] = {}
    n_pre = n_rev = 0
    for example in pre.values():
        if example.filter == name:
            by_text[example.text] = example.is_spam
            n_pre += 1
    for example in reviewed.values():
        if example.filter == name:
            by_text[example.text] = example.is_spam
            n_rev += 1
    return list(by_text), list(by_text.values()), n_pre, n_rev


def make_run(name: str) -> Any:
    async def run_retrain(reason: str) -> None:
        serving = filters[name]
        erasures = retrainers[name].erasures  # requested before the training data is read
        texts, labels, n_pre, n_rev = await training_data(name)
        if len(set(labels)) < 2:
            raise ValueError(f"filter {name!r} needs spam and ham examples (pretrain it first)")
        config = asdict(PRESETS[serving.preset])
        version = await next_version(f"spam:{name}")
        fitted = await in_helper_process(train_filter, texts, labels, config, name, version)
        document = {
            "name": f"spam:{name}",
            "version": version,
            "reason": reason,
            "model": fitted,
            "pretraining_size": n_pre,
            "reviewed_size": n_rev,
            # The baseline of the drift gauges (streams.lifecycle).
            "training_spam_share": sum(labels) / len(labels),
        }
        await publish_model(document)
        serving.load(document)
        if erasures:  # earlier versions learnt from erased comments
            await forget_history(f"spam:{name}", version)
            retrainers[name].erasures -= erasures
        cv = serving.inference["cross_validation"] if serving.inference else None
        log.warning(
            "spam filter %s v%d (%s): %d texts (%d pretraining, %d reviewed); %s",
            name,
            version,
            reason,
            len(texts),
            n_pre,
            n_rev,
            cv,
        )

    return run_retrain


def figures(document: dict[str, Any]) -> dict[str, Any]:
    """A filter version's figures in the model history (GET /models)."""
    model = object_or_empty(document.get("model"))
    cv = object_or_empty(model.get("cv"))
    mean, two_std = finite_or_none(cv.get("mean")), finite_or_none(cv.get("two_std"))
    folds = cv.get("folds")
    metric = cv.get("metric") if cv.get("metric") in METRIC_NAMES else None
    shown = None
    if metric and mean is not None and two_std is not None and count_or_none(folds):
        shown = f"{METRIC_NAMES[metric]} metric ({folds} folds): {mean:.3f} ± {two_std:.3f}"
    return {
        "trained_at": finite_or_none(model.get("trained_at")),
        "cross_validation": shown,
        "cv_metric": metric,
        "cv_mean": mean,
        "cv_two_std": two_std,
        "training_size": count_or_none(model.get("training_size")),
        "pretraining_size": count_or_none(document.get("pretraining_size")),
        "reviewed_size": count_or_none(document.get("reviewed_size")),
        "training_spam_share": finite_or_none(document.get("training_spam_share")),
    }


def filter_kind(serving_filter: ServingFilter) -> ModelKind:
    """A spam filter as a model kind: its own key `spam:NAME`, trainer and serving object."""

    async def serve(document: dict[str, Any]) -> None:
        serving_filter.load(document)

    return ModelKind(
        name=f"spam:{serving_filter.name}",
        state="model",
        run=make_run(serving_filter.name),
        load=serving_filter.load,
        version=lambda: serving_filter.version,
        fresh=lambda: ServingFilter(serving_filter.name, serving_filter.preset),
        serve=serve,
        figures=figures,
        threshold=lambda: settings.moderation_review_threshold,
    )


retrainers = {name: register(filter_kind(f)) for name, f in filters.items()}

if settings.moderation_cron:

    @app.crontab(settings.moderation_cron)
    async def scheduled_retraining() -> None:
        for name in filters:
            await request_run(f"spam:{name}", "crontab")


# ---------------------------------------------------------------------------------------------
# Web views


@app.page("/spam-filters/{name}")
class SpamFilterView(View):
    """Current and previous inference (the original admin block) plus reviews' confusion counts;
    served by the owner of the counters so the figures are complete."""

    # The counters table has one partition: any of its keys routes to its owner.
    @requires(Role.SERVER)
    @app.table_route(table=counters_table, exact_key=CLUSTERING)
    async def get(self, request: Request, name: str) -> Response:
        serving = filters.get(name)
        if serving is None:
            return self.json({"error": f"unknown spam filter {name!r}"}, status=404)
        counter = counter_state(f"spam:{name}")
        reviews = {k: counter["summed"].get(k, 0) for k in STAT_NAMES}
        return self.json(
            {
                "name": name,
                "preset": serving.preset,
                "version": serving.version,
                "current": serving.inference,
                "previous": serving.previous_inference,
                "reviews": reviews,
                "counter": {k: counter[k] for k in ("total", "count", "threshold", "requests")},
                "trainer": retrainers[name].state(),
            }
        )


@app.page("/comments/{comment_id}")
class CommentView(View):
    """A comment's row (label, score, version, review), from the worker owning its partition."""

    @requires(Role.SERVER)
    @app.table_route(table=comments_table, match_info="comment_id")
    async def get(self, request: Request, comment_id: str) -> Response:
        row = comments_table.get(comment_id.encode())
        if row is None:
            return self.json({"error": f"unknown comment {comment_id!r}"}, status=404)
        return self.json({k: v for k, v in row.items() if not k.endswith("offset")})
