"""The clustering model version a worker serves, and online assignment with it (SPEC §6.6).

Kept apart from the trainer so the users agent (the only writer of a user's row and of the user's
`cluster-assignments` records) can assign without depending on the trainer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.mixture import BayesianGaussianMixture
from models.normal import NormalPopulation
from streams.app import settings
from streams.monitoring import MODEL_VERSION
from streams.records import ClusterAssignment

CLUSTERING = "clustering"
FEATURES = tuple(f.strip() for f in settings.clustering_features.split(",") if f.strip())


@dataclass
class ServingModel:
    """The version every worker assigns with, and the one before it (for GET /clusters)."""

    mixture: BayesianGaussianMixture | None = None
    population: NormalPopulation | None = None
    document: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None

    @property
    def version(self) -> int:
        return int(self.document["version"]) if self.document else 0

    def load(self, document: dict[str, Any]) -> bool:
        """Hot-swap to `document` if it is newer; True when it was."""
        if int(document["version"]) <= self.version:
            return False
        self.mixture = BayesianGaussianMixture.from_dict(document["mixture"])
        self.population = NormalPopulation.from_dict(document["population"])
        self.previous, self.document = self.document, document
        MODEL_VERSION.labels(model=CLUSTERING).set(self.version)
        return True


serving = ServingModel()


def observe_metric(values: list[float]) -> None:
    """New users' metric values move the atypical band between batch fits: BN1's exact online
    update of the same posterior (models.normal)."""
    if values and serving.population is not None and serving.population.n:
        serving.population.partial_fit(np.asarray(values, dtype=float))


def features_of(profiles: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[float(p.get(f) or 0.0) for f in FEATURES] for p in profiles], dtype=float)


def assign(profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Label and atypical flag of each profile under the serving model (one vectorised predict).

    Only profiles whose label or flag changes are updated (their `model_version` is the version
    that last changed them); their `cluster-assignments` records are returned.
    """
    if serving.mixture is None or serving.population is None or not profiles:
        return []
    labels = serving.mixture.predict(features_of(profiles))
    metric = [p.get(settings.atypical_metric) for p in profiles]
    known = np.array([m is not None for m in metric])
    flags = np.zeros(len(profiles), dtype=bool)
    if known.any():
        flags[known] = serving.population.predict(np.array([m for m in metric if m is not None]))
    changed = []
    now = time.time()
    for profile, label, flag, has in zip(profiles, labels, flags, known, strict=True):
        atypical = bool(flag) if has else None
        if profile.get("cluster") == label and profile.get("atypical") == atypical:
            continue
        profile.update(cluster=str(label), atypical=atypical, model_version=serving.version)
        record = ClusterAssignment(profile["user_id"], str(label), serving.version, atypical, now)
        changed.append(asdict(record))
    return changed
