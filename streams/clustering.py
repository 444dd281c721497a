"""Clustering and atypical users (SPEC §5-§6) as streaming services.

* The trainer is the agent of the single-partition `control` topic, so exactly one worker runs it.
  A request (counter, crontab, `smartstream recluster`) starts a run; requests arriving during a
  run are coalesced into one follow-up run.
* A run reads the users changelog from the start (every partition: the features of ALL users),
  fits the mixture and BN1 in a separate process (the event loop only awaits), publishes the new
  version to `models` (compacted, JSON) and Redis, and every changed assignment to
  `cluster-assignments`. A failed fit leaves the previous version serving.
* Every worker follows `models` with its own group-less consumer and hot-swaps the current model;
  the users agent assigns new and updated users online with it (:func:`assign_online`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.web import Request, Response, View

from models.mixture import BayesianGaussianMixture
from models.normal import NormalPopulation
from streams import topics as t
from streams.app import app, control_topic, models_topic, settings, user_commands_topic
from streams.metrics import counter_state, request_run, send_dead_letter
from streams.monitoring import MODEL_RUN_SECONDS, MODEL_RUNS
from streams.serving import CLUSTERING, FEATURES, features_of, serving
from streams.users import mirror, users_table

log = logging.getLogger(__name__)


trainer_state: dict[str, Any] = {
    "running": False,
    "pending": False,
    "runs": 0,
    "failures": 0,
    "last": None,
    "cold_every": 10,
}


# ---------------------------------------------------------------------------------------------
# Trainer


def fit_models(X: np.ndarray, avg1: np.ndarray, previous: dict | None, warm: bool, s: dict) -> dict:
    """Runs in a child process: the mixture and BN1, returned as JSON-able dicts."""
    model = BayesianGaussianMixture(
        n_components=s["components"],
        n_restarts=s["restarts"],
        seed=s["seed"],
        features=s["features"],
    )
    prev = BayesianGaussianMixture.from_dict(previous) if previous else None
    model.fit(X, previous=prev, warm_start=warm)
    population = NormalPopulation().fit(avg1) if avg1.size >= 2 else NormalPopulation()
    return {"mixture": model.to_dict(), "population": population.to_dict()}


_pool: ProcessPoolExecutor | None = None


def _single_threaded_blas() -> None:
    """The fit uses one core: BLAS threads on every core would starve the worker's event loop."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def pool() -> ProcessPoolExecutor:
    """One spawned helper process: BayesPy's numpy work never holds the worker's GIL."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_single_threaded_blas,
        )
    return _pool


async def read_all_users() -> list[dict[str, Any]]:
    """Latest value of every key of the users changelog, across all partitions."""
    topic = users_table.changelog_topic.get_topic_name()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        **_aiokafka_security(),
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p) for p in range(users_table.partitions or settings.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        latest: dict[bytes, Any] = {}
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for tp, records in batches.items():
                for r in records:
                    latest[r.key] = None if r.value is None else json.loads(r.value)
                    if r.offset + 1 >= end[tp]:
                        remaining.discard(tp)
        return [v for v in latest.values() if v is not None]
    finally:
        await consumer.stop()


def _aiokafka_security() -> dict[str, Any]:
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    from aiokafka.helpers import create_ssl_context

    cfg: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        cfg["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_sasl_mechanism:
        cfg.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return cfg


async def run_clustering(reason: str) -> None:
    start = time.perf_counter()
    profiles = await read_all_users()
    if len(profiles) < 2:
        log.info("clustering: %d users, nothing to fit", len(profiles))
        return
    X = features_of(profiles)
    avg1 = np.array(
        [
            p[settings.atypical_metric]
            for p in profiles
            if p.get(settings.atypical_metric) is not None
        ],
        dtype=float,
    )
    previous = serving.mixture.to_dict() if serving.mixture else None
    warm = previous is not None and trainer_state["runs"] % trainer_state["cold_every"] != 0
    params = {
        "components": settings.clustering_components,
        "restarts": settings.clustering_restarts,
        "seed": settings.clustering_seed + trainer_state["runs"],
        "features": FEATURES,
    }
    fitted = await asyncio.get_running_loop().run_in_executor(
        pool(), fit_models, X, avg1, previous, warm, params
    )
    version = serving.version + 1
    fitted["mixture"]["version"] = version
    document = {
        "name": CLUSTERING,
        "version": version,
        "reason": reason,
        "warm_start": warm,
        "users": len(profiles),
        **fitted,
    }
    payload = json.dumps(document).encode()
    await models_topic.send(key=CLUSTERING.encode(), value=payload)
    serving.load(document)
    mirror.stage(f"model:{CLUSTERING}", clusters_view())
    # Each partition's owner re-assigns its users with the new version: one writer per user.
    command = json.dumps({"action": "reassign", "model": document}).encode()
    for partition in range(settings.partitions):
        await user_commands_topic.send(value=command, partition=partition)
    duration = time.perf_counter() - start
    MODEL_RUN_SECONDS.labels(model=CLUSTERING).observe(duration)
    log.warning(
        "clustering v%d (%s, %s) on %d users in %.2f s: %d clusters, %.1f%% labels changed",
        version,
        reason,
        "warm" if warm else "cold",
        len(profiles),
        duration,
        len(serving.mixture.labels_),
        100 * (serving.mixture.label_change_share_ or 0),  # type: ignore[union-attr]
    )


async def trainer_loop(reason: str) -> None:
    """Run, then run once more if requests arrived meanwhile (coalesced)."""
    trainer_state["running"] = True
    try:
        while True:
            trainer_state["pending"] = False
            try:
                await run_clustering(reason)
                trainer_state["runs"] += 1
                MODEL_RUNS.labels(model=CLUSTERING, outcome="ok").inc()
            except Exception as exc:  # a failed fit leaves the previous model serving
                trainer_state["failures"] += 1
                MODEL_RUNS.labels(model=CLUSTERING, outcome="error").inc()
                log.exception(
                    "clustering run failed; version %s keeps serving: %s",
                    serving.document and serving.document["version"],
                    exc,
                )
            trainer_state["last"] = time.time()
            if not trainer_state["pending"]:
                return
            reason = "coalesced"
    finally:
        trainer_state["running"] = False


@app.agent(control_topic)
async def control_agent(stream: Any) -> None:
    async for event in stream.events():
        try:
            request = json.loads(event.message.value)
            model = request["model"]
        except (ValueError, KeyError, TypeError):
            await send_dead_letter(event, "bad control request")
            continue
        if model != CLUSTERING:
            continue
        if trainer_state["running"]:
            trainer_state["pending"] = True
        else:
            app.add_future(trainer_loop(str(request.get("reason", "request"))))


if settings.clustering_cron:

    @app.crontab(settings.clustering_cron)
    async def nightly_clustering() -> None:
        await request_run(CLUSTERING, "crontab")


@app.task
async def follow_models() -> None:
    """Every worker: hot-swap the latest model version from the compacted `models` topic."""
    topic = settings.topic(t.MODELS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **_aiokafka_security(),
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning(TopicPartition(topic, 0))
        async for record in consumer:
            if record.key != CLUSTERING.encode() or record.value is None:
                continue
            try:
                serving.load(json.loads(record.value))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("ignoring unreadable model at offset %d: %s", record.offset, exc)
    finally:
        await consumer.stop()


def clusters_view() -> dict[str, Any]:
    return {"current": _summary(serving.document), "previous": _summary(serving.previous)}


def _summary(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    m = BayesianGaussianMixture.from_dict(document["mixture"])
    pop = NormalPopulation.from_dict(document["population"])
    return {
        "version": document["version"],
        "features": list(m.features),
        "clusters": m.clusters(),
        "lower_bound": m.posterior.lower_bound if m.posterior else None,
        "restarts": len(m.restart_bounds_),
        "restart_bounds": m.restart_bounds_,
        "warm_start": document.get("warm_start"),
        "duration_s": m.duration_s,
        "trained_at": m.trained_at,
        "label_change_share": m.label_change_share_,
        "users": document.get("users"),
        "reason": document.get("reason"),
        "atypical": {
            "metric": settings.atypical_metric,
            "mean": pop.mean,
            "precision": pop.precision,
            "band": list(pop.band) if pop.n else None,
        },
    }


@app.page("/clusters")
class ClustersView(View):
    async def get(self, request: Request) -> Response:
        view = clusters_view()
        view["trainer"] = {k: v for k, v in trainer_state.items()}
        view["counter"] = counter_state(CLUSTERING)
        view["counter"].pop("sources", None)
        return self.json(view)
