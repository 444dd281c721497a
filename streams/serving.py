"""The clustering model version a worker serves, and online assignment with it (SPEC §6.6).

Kept apart from the trainer so the users agent (the only writer of a user's row and of the user's
`cluster-assignments` records) can assign without depending on the trainer.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.mixture import BayesianGaussianMixture
from models.normal import NormalPopulation
from streams.app import settings
from streams.monitoring import MODEL_VERSION
from streams.records import MAX_COUNT, ClusterAssignment, Rejected

CLUSTERING = "clustering"
# How long a re-assign command waits for the model version it names to arrive on `models`.
MODEL_WAIT_SECONDS = 30.0
FEATURES = tuple(f.strip() for f in settings.clustering_features.split(",") if f.strip())


@dataclass
class ServingModel:
    """The version every worker assigns with, and the one before it (for GET /clusters)."""

    mixture: BayesianGaussianMixture | None = None
    population: NormalPopulation | None = None
    document: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None

    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def version(self) -> int:
        return int(self.document["version"]) if self.document else 0

    async def wait_version(self, version: int, timeout: float = MODEL_WAIT_SECONDS) -> bool:
        """Wait until `version` (or a newer one) serves; False after `timeout` seconds (its
        document was refused, or never came)."""
        try:
            async with asyncio.timeout(timeout):
                while self.version < version:
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    def load(self, document: dict[str, Any]) -> bool:
        """Hot-swap to `document` if it is newer; True when it was. The whole document is
        validated (and its models probed) before the swap: raises Rejected or DocumentError,
        and the serving version stays, on anything wrong."""
        version = _version(document.get("version"))
        if version <= self.version:
            return False
        mixture = BayesianGaussianMixture.from_dict(document["mixture"])
        population = NormalPopulation.from_dict(document["population"])
        if tuple(mixture.features) != FEATURES:
            raise Rejected(f"features {list(mixture.features)[:4]} are not {list(FEATURES)}")
        if mixture.version != version:
            raise Rejected(f"mixture version {mixture.version} is not the document's {version}")
        check_sample(document.get("sample"))
        self.mixture, self.population = mixture, population
        self.previous, self.document = self.document, document
        MODEL_VERSION.labels(model=CLUSTERING).set(self.version)
        self.changed.set()
        self.changed = asyncio.Event()
        return True


def _version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < MAX_COUNT:
        raise Rejected(f"version must be a positive integer, got {str(value)[:40]}")
    return value


SAMPLE_MAX = 5000


def check_sample(sample: Any) -> None:
    """The dashboard's snapshot (streams.clustering.snapshot): bounded lists of the right types,
    so a document cannot break the page or blow up its payload."""
    if sample is None:
        return
    if not isinstance(sample, dict):
        raise Rejected("sample must be an object")
    users, points, labels = sample.get("users"), sample.get("points"), sample.get("labels")
    if not all(isinstance(x, list) and len(x) <= SAMPLE_MAX for x in (users, points, labels)):
        raise Rejected(f"sample users, points and labels must be lists of at most {SAMPLE_MAX}")
    if not len(users) == len(points) == len(labels):  # type: ignore[arg-type]
        raise Rejected("sample users, points and labels differ in length")
    if not all(isinstance(u, str) for u in users + labels):  # type: ignore[operator]
        raise Rejected("sample users and labels must be strings")
    for point in points:  # type: ignore[union-attr]
        if not isinstance(point, list) or len(point) != len(FEATURES) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in point
        ):
            raise Rejected("sample points must be finite feature vectors")
    atypical = sample.get("atypical", [])
    if not isinstance(atypical, list) or len(atypical) > 100:
        raise Rejected("sample atypical must be a list of at most 100 users")
    if not all(isinstance(a, dict) and isinstance(a.get("user_id"), str) for a in atypical):
        raise Rejected("sample atypical entries need a user_id")
    count = sample.get("atypical_count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < MAX_COUNT:
        raise Rejected("sample atypical_count must be a count")


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
