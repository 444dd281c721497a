"""Clustering and atypical users (SPEC §5-§6) as streaming services.

A run (requested by the counter, the crontab or `smartstream recluster`; see streams.trainer)
reads and fits in the helper process (streams.fitting), so the worker's event loop never holds
the population: the helper reads every user's latest row itself, from the trainer's own RocksDB
partitions or the users changelog, and fits the mixture on a bounded sample and BN1 on exact
sums over everyone. The run then publishes the new version to `models` (compacted JSON)
and Redis, and sends a re-assign command to every partition of `user-commands`: each partition's
owner re-assigns its users with the new version in slices (streams.serving) and publishes the
changed ones to `cluster-assignments` (one writer per user).

Warm starts from the serving model keep re-clusterings fast; a cold multi-restart fit, which can
find new clusters, runs every `COLD_EVERY`-th time (streams.fitting) and whenever the data grew
by half since the last one. A failed fit, or one that outlives
SMARTSTREAM_CLUSTERING_FIT_TIMEOUT_SECONDS, leaves the previous version serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from faust.web import Request, Response, View
from prometheus_client.core import GaugeMetricFamily

from streams.adapter import stores
from streams.app import app, settings, user_commands_topic
from streams.auth import Role, requires
from streams.counters import counter_state, request_run
from streams.fitting import Source, recluster
from streams.records import (
    Reassign,
    count_or_none,
    finite_or_none,
    object_or_empty,
)
from streams.serving import (
    CLUSTERING,
    FEATURES,
    ServingModel,
    clustering_models,
    reassigner,
    serving,
)
from streams.trainer import (
    ModelKind,
    in_helper_process,
    next_version,
    publish_model,
    refuse,
    register,
)
from streams.users import assigned_user_partitions, mirror, users_table

log = logging.getLogger(__name__)


async def run_clustering(reason: str) -> None:
    start = time.perf_counter()
    params = {
        "components": settings.clustering_components,
        "restarts": settings.clustering_restarts,
        "seed": settings.clustering_seed + trainer.runs,
        "features": FEATURES,
    }
    served = serving.document
    current = {k: served.get(k, 0) for k in ("warm_runs", "cold_weight")} if served else None
    result = await in_helper_process(
        recluster,
        settings,
        Source(
            topic=users_table.changelog_topic.get_topic_name(),
            partitions=users_table.partitions or settings.partitions,
            local=local_databases(),
            offset_key=stores.OFFSET_KEY,
        ),
        params,
        serving.mixture.to_dict() if serving.mixture else None,
        current,
        timeout=settings.clustering_fit_timeout_seconds,
    )
    await refuse([(SimpleNamespace(**record), reason) for record, reason in result["refused"]])
    if result["users"] < 2:
        log.info("clustering: %d users, nothing to fit", result["users"])
        return
    version = await next_version(CLUSTERING)
    fitted, warm, weight = result["fitted"], result["warm"], result["weight"]
    for state in ("mixture", "population"):  # versions are assigned here, not by the fits
        fitted[state]["version"] = version
    # A warm run continues the serving version's counts (there is none to warm from without one).
    if warm and current:
        cold_weight, warm_runs = current["cold_weight"], current["warm_runs"] + 1
    else:
        cold_weight, warm_runs = weight, 0
    document = {
        "cold_weight": cold_weight,
        "warm_runs": warm_runs,
        "name": CLUSTERING,
        "version": version,
        "reason": reason,
        "warm_start": warm,
        "users": result["users"],
        "fit_users": result["fit_users"],
        **fitted,
        "sample": result["sample"],
    }
    await publish_model(document)
    await serve_published(document)
    mixture = serving.mixture
    assert mixture is not None
    log.warning(
        "clustering v%d (%s, %s) on %d users (%d sampled; read %.1f s, fit %.1f s) in %.1f s: "
        "%d clusters, %.1f%% labels changed",
        version,
        reason,
        "warm" if warm else "cold",
        result["users"],
        result["fit_users"],
        result["read_s"],
        result["fit_s"],
        time.perf_counter() - start,
        len(mixture.labels_),
        100 * (mixture.label_change_share_ or 0),
    )


def local_databases() -> dict[int, str]:
    """The RocksDB database of each users partition this worker owns (none with the memory
    store): the helper reads those rather than their changelog."""
    store = users_table.data
    databases = stores.partition_databases(store)
    owned = assigned_user_partitions()
    return {p: str(Path(store.partition_path(p)).resolve()) for p in databases if p in owned}


async def serve_published(document: dict[str, Any]) -> None:
    """Once `models` acknowledged a version (a run's or a rollback's): serve it here, mirror its
    summary to Redis, and ask every partition's owner to re-assign its users with it."""
    serving.load(document)
    mirror.stage(f"model:{CLUSTERING}", clusters_view())
    command = Reassign(model=CLUSTERING, version=document["version"]).dumps()
    for partition in range(settings.partitions):
        await user_commands_topic.send(value=command, partition=partition)


# Above this share of users relabelled by the serving version, its drift gauge alerts.
LABEL_CHANGE_SHARE = 0.3


def figures(document: dict[str, Any]) -> dict[str, Any]:
    """A version's figures in the model history (GET /models)."""
    mixture = object_or_empty(document.get("mixture"))
    labels = mixture.get("labels")
    return {
        "trained_at": finite_or_none(mixture.get("trained_at")),
        "clusters": len(labels) if isinstance(labels, dict) else None,
        "lower_bound": finite_or_none(object_or_empty(mixture.get("posterior")).get("lower_bound")),
        "label_change_share": finite_or_none(mixture.get("label_change_share")),
        "users": count_or_none(document.get("users")),
        "warm_start": document.get("warm_start") is True,
    }


def drift() -> dict[str, Any]:
    share = serving.mixture.label_change_share_ if serving.mixture else None
    return {"label_change_share": share, "alert": share is not None and share > LABEL_CHANGE_SHARE}


def gauges() -> Iterator[GaugeMetricFamily]:
    changed = GaugeMetricFamily(
        "smartstream_cluster_label_change_share",
        "Share of users whose cluster label the serving clustering version changed",
    )
    share = drift()["label_change_share"]
    if share is not None:
        changed.add_metric([], share)
    yield changed


def before_rollback(document: dict[str, Any], probe: ServingModel) -> None:
    """A rollback's label-change share: of the serving version's sampled users, those whose
    label the rolled-back mixture changes (the old document's was against its own
    predecessor)."""
    points = object_or_empty((serving.document or {}).get("sample")).get("points")
    share = None
    if serving.mixture is not None and probe.mixture is not None and points:
        X = np.asarray(points, dtype=float)
        share = float(np.mean(serving.mixture.predict(X) != probe.mixture.predict(X)))
    document["mixture"]["label_change_share"] = share


trainer = register(
    ModelKind(
        name=CLUSTERING,
        state="mixture",
        run=run_clustering,
        load=serving.load,
        version=lambda: serving.version,
        fresh=ServingModel,
        serve=serve_published,
        figures=figures,
        drift=drift,
        gauges=gauges,
        before_rollback=before_rollback,
        threshold=lambda: settings.clustering_threshold,
    )
)

if settings.clustering_cron:

    @app.crontab(settings.clustering_cron)
    async def scheduled_clustering() -> None:
        await request_run(CLUSTERING, "crontab")


def clusters_view() -> dict[str, Any]:
    return {"current": _summary(serving.document), "previous": _summary(serving.previous)}


def _summary(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    m, pop, stamps = clustering_models(document)
    return {
        "version": document["version"],
        "features": list(m.features),
        "clusters": m.clusters(),
        "lower_bound": m.posterior.lower_bound if m.posterior else None,
        "restarts": len(m.restart_bounds_),
        "restart_bounds": m.restart_bounds_,
        "warm_start": document.get("warm_start"),
        "duration_s": stamps.get("duration_s"),
        "trained_at": stamps.get("trained_at"),
        "label_change_share": m.label_change_share_,
        "users": document.get("users"),
        "fit_users": document.get("fit_users"),
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
            {
                **clusters_view(),
                "trainer": trainer.state(),
                "counter": counter_state(CLUSTERING),
                "reassignment": reassigner.state(),
            }
        )
