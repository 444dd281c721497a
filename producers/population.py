"""The original UserInfo generator (SPEC §2.3), reproduced draw for draw.

Each step reseeds numpy's legacy RNG (a private ``RandomState``, so callers' global state is
untouched) and draws vectorised, in the original order. The original crashes when N is not a
multiple of 4; here the remainder of N/4 goes to the last group (y3) on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 123456
# (mean, covariance) of (avg_time_pages_a, avg_time_pages): first coordinate goes to _a.
GROUPS: tuple[tuple[tuple[float, float], tuple[tuple[float, float], tuple[float, float]]], ...] = (
    ((20.0, 20.0), ((2.0, 0.0), (0.0, 0.1))),
    ((20.0, 20.0), ((0.1, 0.0), (0.0, 2.0))),
    ((25.0, 25.0), ((2.0, -1.5), (-1.5, 2.0))),
    ((16.0, 16.0), ((0.5, 0.0), (0.0, 0.5))),
)


@dataclass(frozen=True)
class Population:
    """Column arrays of N users; user i has id str(i + 1) like the original auto primary key."""

    sex: np.ndarray  # 1 = "F", 0 = "M" (the original choices)
    age: np.ndarray
    avg1: np.ndarray
    avg_time_pages: np.ndarray
    avg_time_pages_a: np.ndarray
    visits_pages: np.ndarray
    visits_pages_a: np.ndarray
    group: np.ndarray  # 0..3: y0..y3, the generator's truth

    @property
    def size(self) -> int:
        return int(self.sex.shape[0])

    def user_ids(self) -> list[str]:
        return [str(i + 1) for i in range(self.size)]

    def features(self) -> np.ndarray:
        """(avg_time_pages, avg_time_pages_a): the clustering model's column order."""
        return np.column_stack([self.avg_time_pages, self.avg_time_pages_a])


def group_sizes(n: int) -> list[int]:
    g = n // 4
    return [g, g, g, n - 3 * g]


def generate(n: int = 200, seed: int = SEED) -> Population:
    rng = np.random.RandomState(seed)
    sex = rng.binomial(1, 0.7, n)
    age = np.floor(rng.normal(30, 2, n)).astype(int)
    avg1 = rng.normal(10, 5, n)

    rng = np.random.RandomState(seed)
    points, labels = [], []
    for k, ((mean, cov), size) in enumerate(zip(GROUPS, group_sizes(n), strict=True)):
        points.append(rng.multivariate_normal(mean, cov, size))
        labels.append(np.full(size, k))
    xy = np.vstack(points) if n else np.empty((0, 2))

    rng = np.random.RandomState(seed)
    visits = np.floor(rng.normal(100, 5, n)).astype(int)
    visits_a = np.floor(rng.normal(40, 2, n)).astype(int)
    return Population(
        sex=sex,
        age=age,
        avg1=avg1,
        avg_time_pages=xy[:, 1],
        avg_time_pages_a=xy[:, 0],
        visits_pages=visits,
        visits_pages_a=visits_a,
        group=np.concatenate(labels) if n else np.empty(0, dtype=int),
    )
