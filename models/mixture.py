"""Bayesian Gaussian mixture of SPEC §6 on BayesPy, with labels that stay stable across refits.

Pure and Kafka-free, with a scikit-learn-like API: ``fit(X)``, ``predict(X)``,
``predict_proba(X)``, ``to_dict()`` / ``from_dict()`` (plain JSON, never pickle).

Inference: K_max components with the original vague priors; ``n_restarts`` VB runs, each from its
own seeded random state (so restarts can run in parallel processes and a run is reproducible),
keeping the run with the highest lower bound. After the fit, only the posterior moments are kept:
prediction is the closed-form responsibility of SPEC §6.6, vectorised in numpy.

Labels: components no observation belongs to get no label. The first fit names clusters "A", "B",
... by the norm of their mean (the original's order, without its empty-cluster sink "A"). A refit
matches its components to the previous model's clusters by the overlap of their Gaussians
(optimal assignment on the Bhattacharyya distance): a matched component keeps the old label, an
unmatched one gets a fresh label. Matching on the users' old labels instead is fooled when a new
group first lands in an old cluster (it then outnumbers the cluster's own members).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

from models import documents as doc
from models.documents import DocumentError
from models.processes import spawn_pool

log = logging.getLogger(__name__)
LOG_2PI = math.log(2 * math.pi)
KIND = "bayesian_gaussian_mixture"
# Load-time bounds (models/documents.py): a document must not declare what a fit never writes.
MAX_COMPONENTS = 1000
MAX_DIMENSIONS = 64
MAX_LABEL_CHARS = 64


@dataclass(frozen=True)
class Posterior:
    """The moments of one VB run that prediction needs (K components, D dimensions)."""

    log_pi: np.ndarray  # E[log pi_k], (K,)
    mu: np.ndarray  # E[mu_k], (K, D)
    mu_outer: np.ndarray  # E[mu_k mu_k^T], (K, D, D)
    lam: np.ndarray  # E[Lambda_k], (K, D, D)
    logdet_lam: np.ndarray  # E[log |Lambda_k|], (K,)
    lower_bound: float
    iterations: int

    def log_resp(self, X: np.ndarray) -> np.ndarray:
        """Unnormalised log responsibilities, (N, K): E[log pi_k] + E[log N(x | mu_k, Lambda_k)]."""
        d = X.shape[1]
        xx = np.einsum("ni,nj->nij", X, X)
        # tr(Lambda (x x^T - x mu^T - mu x^T + E[mu mu^T])) for every (n, k)
        quad = (
            np.einsum("kij,nij->nk", self.lam, xx)
            - 2 * np.einsum("kij,ni,kj->nk", self.lam, X, self.mu)
            + np.einsum("kij,kij->k", self.lam, self.mu_outer)[None, :]
        )
        return (
            self.log_pi[None, :] + 0.5 * self.logdet_lam[None, :] - 0.5 * d * LOG_2PI - 0.5 * quad
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_pi": self.log_pi.tolist(),
            "mu": self.mu.tolist(),
            "mu_outer": self.mu_outer.tolist(),
            "lam": self.lam.tolist(),
            "logdet_lam": self.logdet_lam.tolist(),
            "lower_bound": self.lower_bound,
            "iterations": self.iterations,
        }

    @classmethod
    def from_dict(cls, d: Any, shape: tuple[int, int] | None = None) -> Posterior:
        """Moments of K components in D dimensions (`shape`, else read from log_pi and mu),
        checked: consistent shapes, finite values, each E[Lambda_k] symmetric positive
        definite (prediction and label matching invert it)."""
        with doc.loading("posterior"):
            return cls._load(d, shape)

    @classmethod
    def _load(cls, d: Any, shape: tuple[int, int] | None) -> Posterior:
        where = "posterior"
        keys = ("log_pi", "mu", "mu_outer", "lam", "logdet_lam", "lower_bound", "iterations")
        d = doc.mapping(d, where, keys)
        k, dim = shape if shape else (None, None)
        mu = doc.array(d["mu"], f"{where}.mu", (k, dim))
        k, dim = mu.shape
        if not (1 <= k <= MAX_COMPONENTS and 1 <= dim <= MAX_DIMENSIONS):
            raise DocumentError(f"{where}.mu: shape {mu.shape} out of range")
        lam = doc.array(d["lam"], f"{where}.lam", (k, dim, dim))
        _check_precisions(lam, f"{where}.lam")
        return cls(
            log_pi=doc.array(d["log_pi"], f"{where}.log_pi", (k,)),
            mu=mu,
            mu_outer=doc.array(d["mu_outer"], f"{where}.mu_outer", (k, dim, dim)),
            lam=lam,
            logdet_lam=doc.array(d["logdet_lam"], f"{where}.logdet_lam", (k,)),
            lower_bound=doc.lower_bound(d["lower_bound"], f"{where}.lower_bound"),
            iterations=doc.integer(d["iterations"], f"{where}.iterations", 0, 10**9),
        )


def _check_precisions(lam: np.ndarray, where: str) -> None:
    if not np.allclose(lam, lam.transpose(0, 2, 1), rtol=1e-6, atol=1e-12):
        raise DocumentError(f"{where}: not symmetric")
    try:
        np.linalg.cholesky(lam)
    except np.linalg.LinAlgError as exc:
        raise DocumentError(f"{where}: not positive definite") from exc


@dataclass(frozen=True)
class Priors:
    """The original example's (very vague) priors, configurable."""

    alpha: float = 1e-5
    mu_precision: float = 1e-5
    wishart_scale: float = 1e-5


def vb_run(
    X: np.ndarray,
    k_max: int,
    priors: Priors,
    seed: int,
    max_iter: int,
    tol: float,
    init: np.ndarray | None = None,
) -> Posterior:
    """One VB run of the SPEC §6.2 network: Z starts from `init` (component indices, a warm
    start) or from a seeded random initialisation."""
    from bayespy.inference import VB
    from bayespy.nodes import Categorical, Dirichlet, Gaussian, Mixture, Wishart

    n, d = X.shape
    np.random.seed(seed)  # BayesPy draws Z's initialisation from numpy's global RNG
    alpha = Dirichlet(priors.alpha * np.ones(k_max), name="alpha")
    z = Categorical(alpha, plates=(n,), name="z")
    mu = Gaussian(np.zeros(d), priors.mu_precision * np.identity(d), plates=(k_max,), name="mu")
    lam = Wishart(d, priors.wishart_scale * np.identity(d), plates=(k_max,), name="Lambda")
    y = Mixture(z, Gaussian, mu, lam, name="Y")
    if init is None:
        z.initialize_from_random()
    else:
        z.initialize_from_value(init)
    y.observe(X)
    q = VB(y, mu, lam, z, alpha)
    q.update(repeat=max_iter, tol=tol, verbose=False)
    finite = q.L[: q.iter][np.isfinite(q.L[: q.iter])]
    mu_m = mu.get_moments()
    lam_m = lam.get_moments()
    return Posterior(
        log_pi=np.asarray(alpha.get_moments()[0], dtype=float),
        mu=np.asarray(mu_m[0], dtype=float),
        mu_outer=np.asarray(mu_m[1], dtype=float),
        lam=np.asarray(lam_m[0], dtype=float),
        logdet_lam=np.asarray(lam_m[1], dtype=float),
        lower_bound=float(finite.max()) if finite.size else -math.inf,
        iterations=int(q.iter),
    )


def _vb_run_star(args: tuple) -> Posterior:
    return vb_run(*args)


# Bhattacharyya distance below ln 2: the two Gaussians' overlap coefficient is above 1/2.
MATCH_DISTANCE = math.log(2)


def bhattacharyya(p: Posterior, k: int, q: Posterior, j: int) -> float:
    """Distance of component k of p to component j of q (posterior means, inverse E[Lambda])."""
    s1, s2 = np.linalg.inv(p.lam[k]), np.linalg.inv(q.lam[j])
    s = (s1 + s2) / 2
    delta = p.mu[k] - q.mu[j]
    _, logdet = np.linalg.slogdet(s)
    _, logdet1 = np.linalg.slogdet(s1)
    _, logdet2 = np.linalg.slogdet(s2)
    return float(delta @ np.linalg.solve(s, delta) / 8 + 0.5 * (logdet - 0.5 * (logdet1 + logdet2)))


def letters(i: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA": fresh labels never run out."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


@dataclass
class BayesianGaussianMixture:
    """The clustering model; see the module docstring."""

    n_components: int = 10
    n_restarts: int = 15
    max_iter: int = 1000
    tol: float = 1e-5
    seed: int = 123456
    n_jobs: int = 1
    subsample: int | None = 4000
    priors: Priors = field(default_factory=Priors)
    features: tuple[str, ...] = ("avg_time_pages", "avg_time_pages_a")
    # Fitted state
    posterior: Posterior | None = None
    labels_: dict[int, str] = field(default_factory=dict)  # component -> label (non-empty only)
    sizes_: dict[str, int] = field(default_factory=dict)
    next_label: int = 0
    restart_bounds_: list[float] = field(default_factory=list)
    label_change_share_: float | None = None

    def fit(
        self,
        X: np.ndarray,
        previous: BayesianGaussianMixture | None = None,
        warm_start: bool = False,
    ) -> BayesianGaussianMixture:
        """Fit on X (N x D); name clusters consistently with `previous` if given.

        Cold: `n_restarts` seeded random starts. Above `subsample` rows, the restarts run on a
        seeded random subsample and the best one seeds a single run on all of X (the restarts
        only have to find the right basin; the full data then refines it). Warm (`warm_start`
        with a `previous` model of the same K): one VB run started from the previous model's
        assignment of X, which converges in a few iterations to the nearby optimum; a cold run
        now and then finds new clusters.
        """
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[0] < 2 or not np.isfinite(X).all():
            raise ValueError("X must be a finite (N >= 2, D) array")
        warm = warm_start and previous is not None and previous.posterior is not None
        if warm and previous.n_components == self.n_components:  # type: ignore[union-attr]
            runs = [self._run_from(previous.posterior, X)]  # type: ignore[union-attr]
        elif self.subsample and X.shape[0] > self.subsample:
            rows = np.random.RandomState(self.seed).choice(
                X.shape[0], self.subsample, replace=False
            )
            best = max(self._restarts(X[rows]), key=lambda r: r.lower_bound)
            runs = [self._run_from(best, X)]
        else:
            runs = self._restarts(X)
        self.restart_bounds_ = [r.lower_bound for r in runs]
        self.posterior = max(runs, key=lambda r: r.lower_bound)  # ties keep the first
        components = self._components(X)
        if previous is not None and previous.posterior is not None:
            self._match_labels(X, components, previous)
        else:
            self._label_by_norm(components)
        self.sizes_ = {self.labels_[k]: int((components == k).sum()) for k in self.labels_}
        return self

    def _run_from(self, posterior: Posterior, X: np.ndarray) -> Posterior:
        """One VB run on X whose assignments start from `posterior`'s."""
        init = np.argmax(posterior.log_resp(X), axis=1)
        return vb_run(X, self.n_components, self.priors, self.seed, self.max_iter, self.tol, init)

    def _restarts(self, X: np.ndarray) -> list[Posterior]:
        jobs = [
            (X, self.n_components, self.priors, self.seed + i, self.max_iter, self.tol)
            for i in range(self.n_restarts)
        ]
        if self.n_jobs > 1 and len(jobs) > 1:
            with spawn_pool(self.n_jobs) as pool:
                return list(pool.map(_vb_run_star, jobs))
        return [vb_run(*job) for job in jobs]

    def _components(self, X: np.ndarray) -> np.ndarray:
        assert self.posterior is not None
        return np.argmax(self.posterior.log_resp(X), axis=1)

    def _label_by_norm(self, components: np.ndarray) -> None:
        assert self.posterior is not None
        used = sorted(
            set(components.tolist()), key=lambda k: float(np.linalg.norm(self.posterior.mu[k]))
        )
        self.labels_ = {k: letters(i) for i, k in enumerate(used)}
        self.next_label = len(used)

    def _match_labels(
        self, X: np.ndarray, components: np.ndarray, previous: BayesianGaussianMixture
    ) -> None:
        """Give each used component the label of the previous cluster whose Gaussian it overlaps
        most (optimal assignment on the Bhattacharyya distance); below an overlap of 1/2 it is a
        new cluster and gets a fresh label."""
        assert self.posterior is not None and previous.posterior is not None
        used = sorted(set(components.tolist()))
        old_ks = list(previous.labels_)
        cost = np.array(
            [
                [bhattacharyya(self.posterior, k, previous.posterior, j) for j in old_ks]
                for k in used
            ]
        )
        rows, cols = linear_sum_assignment(cost)
        self.next_label = previous.next_label
        self.labels_ = {}
        for r, c in zip(rows, cols, strict=True):
            if cost[r, c] < MATCH_DISTANCE:
                self.labels_[used[r]] = previous.labels_[old_ks[c]]
        for k in used:
            if k not in self.labels_:
                self.labels_[k] = letters(self.next_label)
                self.next_label += 1
        self.labels_ = dict(sorted(self.labels_.items()))
        old = previous.predict(X)
        new = np.array([self.labels_[k] for k in components])
        self.label_change_share_ = float(np.mean(new != old))

    # -- prediction ---------------------------------------------------------------------------

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Responsibilities over the labelled components (columns: :attr:`cluster_labels`)."""
        if self.posterior is None:
            raise RuntimeError("model is not fitted")
        lr = self.posterior.log_resp(np.atleast_2d(np.asarray(X, dtype=float)))
        ks = list(self.labels_)
        lr = lr[:, ks]
        return np.exp(lr - logsumexp(lr, axis=1, keepdims=True))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The label of the most responsible labelled component, for each row of X."""
        ks = list(self.labels_)
        proba = self.predict_proba(X)
        return np.array([self.labels_[ks[i]] for i in np.argmax(proba, axis=1)], dtype=object)

    @property
    def cluster_labels(self) -> list[str]:
        return list(self.labels_.values())

    def clusters(self) -> list[dict[str, Any]]:
        """Label, size, posterior mean and covariance (inverse of E[Lambda]) of each cluster."""
        assert self.posterior is not None
        out = []
        for k, lab in sorted(self.labels_.items(), key=lambda kv: kv[1]):
            out.append(
                {
                    "label": lab,
                    "size": self.sizes_.get(lab, 0),
                    "mean": self.posterior.mu[k].tolist(),
                    "covariance": np.linalg.inv(self.posterior.lam[k]).tolist(),
                }
            )
        return out

    # -- safe serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "format_version": doc.FORMAT_VERSION,
            "features": list(self.features),
            "params": {
                "subsample": self.subsample,
                "n_components": self.n_components,
                "n_restarts": self.n_restarts,
                "max_iter": self.max_iter,
                "tol": self.tol,
                "seed": self.seed,
                "priors": vars(self.priors),
            },
            "posterior": None if self.posterior is None else self.posterior.to_dict(),
            "labels": {str(k): v for k, v in self.labels_.items()},
            "sizes": self.sizes_,
            "next_label": self.next_label,
            "restart_bounds": self.restart_bounds_,
            "label_change_share": self.label_change_share_,
        }

    @classmethod
    def from_dict(cls, d: Any) -> BayesianGaussianMixture:
        """Load a document written by :meth:`to_dict`; anything else raises DocumentError (the
        document may come from anyone who can produce to the models topic)."""
        with doc.loading(KIND):
            return cls._load(d).probe()

    @classmethod
    def _load(cls, d: Any) -> BayesianGaussianMixture:
        d = doc.header(d, KIND, _DOCUMENT_KEYS)
        model = _params_from(d["params"])
        model.features = tuple(
            doc.strings(d["features"], f"{KIND}.features", MAX_DIMENSIONS, 200, min_len=1)
        )
        shape = (model.n_components, len(model.features))
        model.posterior = Posterior.from_dict(d["posterior"], shape)
        model.labels_ = _labels_from(d["labels"], model.n_components)
        model.sizes_ = _sizes_from(d["sizes"], set(model.labels_.values()))
        model.next_label = doc.integer(
            d["next_label"], f"{KIND}.next_label", len(model.labels_), 10**9
        )
        bounds = doc.sequence(d["restart_bounds"], f"{KIND}.restart_bounds", MAX_COMPONENTS)
        model.restart_bounds_ = [doc.lower_bound(b, f"{KIND}.restart_bounds") for b in bounds]
        share = d["label_change_share"]
        model.label_change_share_ = (
            None if share is None else doc.number(share, f"{KIND}.label_change_share", 0.0, 1.0)
        )
        return model

    def probe(self) -> BayesianGaussianMixture:
        """Predict the labelled components' means: every answer must be a known label with
        finite responsibilities (checked at load time, so a document that loads is servable)."""
        if self.posterior is None or not self.labels_:
            raise DocumentError(f"{KIND}: not fitted")
        means = self.posterior.mu[list(self.labels_)]
        finite = np.isfinite(self.predict_proba(means)).all()
        if not finite or not set(self.predict(means)) <= set(self.labels_.values()):
            raise DocumentError(f"{KIND}: the probe gets no valid prediction")
        return self


_DOCUMENT_KEYS = (
    "features",
    "params",
    "posterior",
    "labels",
    "sizes",
    "next_label",
    "restart_bounds",
    "label_change_share",
)
_PARAM_KEYS = ("subsample", "n_components", "n_restarts", "max_iter", "tol", "seed", "priors")


def _params_from(value: Any) -> BayesianGaussianMixture:
    where = f"{KIND}.params"
    p = doc.mapping(value, where, _PARAM_KEYS)
    subsample = p["subsample"]
    priors = doc.mapping(p["priors"], f"{where}.priors", ("alpha", "mu_precision", "wishart_scale"))
    return BayesianGaussianMixture(
        n_components=doc.integer(p["n_components"], f"{where}.n_components", 1, MAX_COMPONENTS),
        n_restarts=doc.integer(p["n_restarts"], f"{where}.n_restarts", 1, 1000),
        max_iter=doc.integer(p["max_iter"], f"{where}.max_iter", 1, 10**6),
        tol=doc.number(p["tol"], f"{where}.tol", 0.0, 1e6),
        seed=doc.integer(p["seed"], f"{where}.seed", 0, 2**31 - 1),
        subsample=None
        if subsample is None
        else doc.integer(subsample, f"{where}.subsample", 1, 10**9),
        priors=Priors(
            **{
                k: doc.number(v, f"{where}.priors.{k}", 0.0, 1e6, lo_open=True)
                for k, v in priors.items()
            }
        ),
    )


def _labels_from(value: Any, n_components: int) -> dict[int, str]:
    """Component -> label: components in 0..K-1 (JSON keys are strings), non-empty unique
    labels, at least one."""
    where = f"{KIND}.labels"
    if not isinstance(value, dict) or not 1 <= len(value) <= n_components:
        raise DocumentError(f"{where}: expected 1..{n_components} labels")
    labels: dict[int, str] = {}
    for key, label in value.items():
        if isinstance(key, str):
            if not (key.isascii() and key.isdigit() and len(key) <= 4):
                raise DocumentError(f"{where}: component {doc.show(key)} is not an index")
            key = int(key)
        labels[doc.integer(key, where, 0, n_components - 1)] = doc.string(
            label, where, MAX_LABEL_CHARS, min_len=1
        )
    if len(labels) != len(value) or len(set(labels.values())) != len(labels):
        raise DocumentError(f"{where}: duplicate components or labels")
    return labels  # in the document's order: predict_proba's columns


def _sizes_from(value: Any, labels: set[str]) -> dict[str, int]:
    where = f"{KIND}.sizes"
    if not isinstance(value, dict) or not set(value) <= labels:
        raise DocumentError(f"{where}: expected sizes of known labels")
    return {k: doc.integer(v, where, 0, 10**12) for k, v in value.items()}
