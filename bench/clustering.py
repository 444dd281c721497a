"""Clustering: fit time, lower bound and ARI for growing populations, against the plain original
procedure and scikit-learn, plus label stability on refits.

    python bench/clustering.py                       # N = 200, 2,000, 20,000, 200,000
    python bench/clustering.py --sizes 200 2000      # a quicker run

Data: the original generator (SPEC §2.3) with ~2% outliers (uniform on [0, 40]²). ARI is against
the generator's four groups, outliers excluded. Rows:
  ours-cold     BayesianGaussianMixture as the trainer runs it cold (15 restarts, on a 4,000-row
                subsample above that size, then one full-data run), one process
  ours-cold-x2  the same with the restarts in 2 processes
  ours-warm     a re-clustering after 1% new users, warm-started from ours-cold
  plain         the original procedure: 15 cold BayesPy restarts on all rows, one after the other
                (above 20,000 rows: one restart timed, x15 estimated)
  sklearn       sklearn.mixture.BayesianGaussianMixture(n_components=10, n_init=15,
                covariance_prior=I, weight_concentration_prior=1e-5)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture as SkBGM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.mixture import BayesianGaussianMixture, vb_run
from producers.population import generate


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    p = generate(n)
    X, truth = p.features(), p.group.copy()
    rng = np.random.default_rng(seed)
    k = max(1, n // 50)
    X = np.vstack([X, rng.uniform(0, 40, (k, 2))])
    truth = np.concatenate([truth, np.full(k, -1)])
    return X, truth


def ari(truth: np.ndarray, labels: np.ndarray) -> float:
    keep = truth >= 0
    return float(adjusted_rand_score(truth[keep], labels[keep]))


def row(
    name: str, n: int, seconds: float, bound: float | None, score: float, extra: str = ""
) -> None:
    lb = f"{bound:,.1f}" if bound is not None else "-"
    print(
        f"| {n:>7,} | {name:<12} | {seconds:8.2f} | {lb:>14} | {score:5.3f} | {extra} |", flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 20000, 200000])
    args = parser.parse_args()
    print("| N | method | seconds | lower bound | ARI | notes |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        X, truth = data(n)
        t = time.perf_counter()
        cold = BayesianGaussianMixture().fit(X)
        row(
            "ours-cold",
            n,
            time.perf_counter() - t,
            cold.posterior.lower_bound,
            ari(truth, cold.predict(X)),
            f"{len(cold.labels_)} clusters",
        )
        t = time.perf_counter()
        cold2 = BayesianGaussianMixture(n_jobs=2).fit(X)
        row(
            "ours-cold-x2",
            n,
            time.perf_counter() - t,
            cold2.posterior.lower_bound,
            ari(truth, cold2.predict(X)),
        )
        same = BayesianGaussianMixture(seed=99).fit(X, previous=cold, warm_start=True)
        rng = np.random.default_rng(1)
        new = X[rng.choice(len(X), max(1, n // 100))] + rng.normal(0, 0.3, (max(1, n // 100), 2))
        X_new = np.vstack([X, new])
        t = time.perf_counter()
        warm = BayesianGaussianMixture(seed=7).fit(X_new, previous=cold, warm_start=True)
        truth_new = np.concatenate([truth, np.full(len(new), -1)])
        row(
            "ours-warm",
            n,
            time.perf_counter() - t,
            warm.posterior.lower_bound,
            ari(truth_new, warm.predict(X_new)),
            f"+1% users: {100 * warm.label_change_share_:.2f}% labels changed; "
            f"refit of unchanged data: {100 * same.label_change_share_:.2f}% changed",
        )
        t = time.perf_counter()
        if n <= 20000:
            plain = BayesianGaussianMixture(subsample=None).fit(X)
            row(
                "plain",
                n,
                time.perf_counter() - t,
                plain.posterior.lower_bound,
                ari(truth, plain.predict(X)),
            )
        else:
            one = vb_run(X, 10, cold.priors, 1, 1000, 1e-5)
            row(
                "plain",
                n,
                15 * (time.perf_counter() - t),
                one.lower_bound,
                float("nan"),
                "estimated: one restart x15",
            )
        t = time.perf_counter()
        sk = SkBGM(
            n_components=10,
            n_init=15,
            covariance_prior=np.eye(2),
            weight_concentration_prior=1e-5,
            max_iter=1000,
            random_state=0,
        ).fit(X)
        row(
            "sklearn",
            n,
            time.perf_counter() - t,
            None,
            ari(truth, sk.predict(X)),
            f"{len(set(sk.predict(X)))} clusters used",
        )


if __name__ == "__main__":
    main()
