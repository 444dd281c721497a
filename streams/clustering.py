"""Clustering and atypical users (SPEC §5-§6) as streaming services.

A run (requested by the counter, the crontab or `smartstream recluster`; see streams.trainer)
reads the users changelog from the start, so it sees ALL users whatever partitions this worker
owns, fits the mixture and BN1 in the helper process, and publishes the new version to `models`
(compacted JSON) and Redis. It then sends a re-assign command to every partition of
`user-commands`: each partition's owner re-assigns its users with the new version and publishes
the changed ones to `cluster-assignments` (one writer per user). Warm starts from the serving
model keep re-clusterings fast; a cold multi-restart fit, which can find new clusters, runs every
`COLD_EVERY`-th time and whenever the data grew by half since the last one. A failed fit leaves
the previous version serving.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from faust.web import Request, Response, View

from models.mixture import BayesianGaussianMixture
from models.normal import NormalPopulation
from streams.app import app, settings, user_commands_topic
from streams.auth import Role, requires
from streams.metrics import counter_state, request_run
from streams.records import Reassign, Rejected
from streams.serving import CLUSTERING, FEATURES, features_of, serving
from streams.trainer import in_helper_process, publish_model, read_latest, register
from streams.users import mirror, users_table

log = logging.getLogger(__name__)
COLD_EVERY = 10
COLD_GROWTH = 1.5


def warm_start_ok(current: dict[str, Any] | None, weight: int) -> bool:
    """Warm-start from the serving model unless it is missing, COLD_EVERY warm runs have passed,
    or the data grew by half since the last cold fit (counter weight over all users): a warm
    run cannot create clusters, so a model fitted on early, partial data must not be kept."""
    if current is None:
        return False
    if current.get("warm_runs", 0) + 1 >= COLD_EVERY:
        return False
    return weight < COLD_GROWTH * max(current.get("cold_weight", 0), 1)


def fit_models(X: np.ndarray, avg1: np.ndarray, previous: dict | None, warm: bool, s: dict) -> dict:
    """Runs in the helper process: the mixture and BN1, returned as JSON-able dicts."""
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


def profile_row(obj: dict[str, Any]) -> dict[str, Any]:
    """A users-changelog row as the fit reads it: it needs a string user id."""
    if not isinstance(obj.get("user_id"), str):
        raise Rejected("a users row needs a string user_id")
    return obj


async def run_clustering(reason: str) -> None:
    start = time.perf_counter()
    topic = users_table.changelog_topic.get_topic_name()
    latest = await read_latest(topic, users_table.partitions or settings.partitions, profile_row)
    # A fixed order (ids in natural order: "2" before "10") makes a fit independent of how the
    # partitions' records interleaved; with the original ids 1..N it is the original data order.
    profiles = sorted(latest.values(), key=lambda p: (len(p["user_id"]), p["user_id"]))
    if len(profiles) < 2:
        log.info("clustering: %d users, nothing to fit", len(profiles))
        return
    metric = [p.get(settings.atypical_metric) for p in profiles]
    avg1 = np.array([m for m in metric if m is not None], dtype=float)
    previous = serving.mixture.to_dict() if serving.mixture else None
    weight = sum(p.get("weight", 0) for p in profiles)
    warm = warm_start_ok(serving.document, weight)
    params = {
        "components": settings.clustering_components,
        "restarts": settings.clustering_restarts,
        "seed": settings.clustering_seed + trainer.runs,
        "features": FEATURES,
    }
    fitted = await in_helper_process(
        fit_models, features_of(profiles), avg1, previous, warm, params
    )
    version = serving.version + 1
    fitted["mixture"]["version"] = version
    cold_weight = serving.document.get("cold_weight", 0) if warm and serving.document else weight
    document = {
        "cold_weight": cold_weight,
        "warm_runs": (serving.document or {}).get("warm_runs", 0) + 1 if warm else 0,
        "name": CLUSTERING,
        "version": version,
        "reason": reason,
        "warm_start": warm,
        "users": len(profiles),
        **fitted,
    }
    document["sample"] = snapshot(profiles, fitted)
    await publish_model(document)
    await serve_published(document)
    mixture = serving.mixture
    assert mixture is not None
    log.warning(
        "clustering v%d (%s, %s) on %d users in %.2f s: %d clusters, %.1f%% labels changed",
        version,
        reason,
        "warm" if warm else "cold",
        len(profiles),
        time.perf_counter() - start,
        len(mixture.labels_),
        100 * (mixture.label_change_share_ or 0),
    )


async def serve_published(document: dict[str, Any]) -> None:
    """Once `models` acknowledged a version (a run's or a rollback's): serve it here, mirror its
    summary to Redis, and ask every partition's owner to re-assign its users with it."""
    serving.load(document)
    mirror.stage(f"model:{CLUSTERING}", clusters_view())
    command = Reassign(model=CLUSTERING, version=document["version"]).dumps()
    for partition in range(settings.partitions):
        await user_commands_topic.send(value=command, partition=partition)


def snapshot(profiles: list[dict[str, Any]], fitted: dict[str, Any], size: int = 1500) -> dict:
    """What the dashboard draws: up to `size` users in feature space with their new labels, and
    the users BN1 flags as atypical (at most 100)."""
    rng = np.random.default_rng(0)
    picked = [
        profiles[i]
        for i in sorted(rng.choice(len(profiles), min(size, len(profiles)), replace=False))
    ]
    X = features_of(picked)
    labels = BayesianGaussianMixture.from_dict(fitted["mixture"]).predict(X)
    population = NormalPopulation.from_dict(fitted["population"])
    metric = settings.atypical_metric
    atypical = [
        {"user_id": p["user_id"], metric: p[metric]}
        for p in profiles
        if p.get(metric) is not None and population.n and bool(population.predict(p[metric]))
    ]
    return {
        "users": [p["user_id"] for p in picked],
        "points": X.round(3).tolist(),
        "labels": [str(x) for x in labels],
        "atypical": atypical[:100],
        "atypical_count": len(atypical),
    }


trainer = register(CLUSTERING, run_clustering, serving.load)

if settings.clustering_cron:

    @app.crontab(settings.clustering_cron)
    async def scheduled_clustering() -> None:
        await request_run(CLUSTERING, "crontab")


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
            "users": (document.get("sample") or {}).get("atypical_count"),
        },
    }


@app.page("/clusters")
class ClustersView(View):
    @requires(Role.SERVER)
    async def get(self, request: Request) -> Response:
        return self.json(
            {**clusters_view(), "trainer": trainer.state(), "counter": counter_state(CLUSTERING)}
        )
