"""BN1 (SPEC §5): mean and precision of a metric by BayesPy VB, and the atypical rule mu ± 2 sigma.

The mean-field VB posterior of this network depends on the data only through (n, sum x, sum x²),
so :meth:`partial_fit` keeps those sufficient statistics and re-solves the same VB fixed point in
closed form: an exact online update of the batch posterior, cheap enough for the hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from models import documents as doc
from models.documents import DocumentError

KIND = "normal_population"
MAX_ITER = 100_000  # partial_fit runs up to max_iter steps on the hot path


@dataclass
class NormalPopulation:
    """q(mu) = N(m, 1/beta), q(tau) = Gamma(a, b); priors mu ~ N(0, 1e6), tau ~ Gamma(1e-6, 1e-6)"""

    mu_mean0: float = 0.0
    mu_precision0: float = 1e-6
    tau_shape0: float = 1e-6
    tau_rate0: float = 1e-6
    max_iter: int = 1000
    tol: float = 1e-5
    n_sigma: float = 2.0
    # Sufficient statistics and posterior
    n: int = 0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    m: float = 0.0
    beta: float = 1e-6
    a: float = 1e-6
    b: float = 1e-6
    lower_bound: float | None = None
    iterations: int = 0

    def fit(self, x: np.ndarray) -> NormalPopulation:
        """Batch VB with BayesPy (the original network), then keep the sufficient statistics."""
        from bayespy.inference import VB
        from bayespy.nodes import Gamma, GaussianARD

        x = np.asarray(x, dtype=float).ravel()
        x = x[np.isfinite(x)]
        if x.size < 2:
            raise ValueError("need at least two finite values")
        mu = GaussianARD(self.mu_mean0, self.mu_precision0)
        tau = Gamma(self.tau_shape0, self.tau_rate0)
        y = GaussianARD(mu, tau, plates=(x.size,))
        y.observe(x)
        q = VB(y, mu, tau)
        q.update(repeat=self.max_iter, tol=self.tol, verbose=False)
        self.n, self.sum_x, self.sum_x2 = int(x.size), float(x.sum()), float((x * x).sum())
        mu_u, tau_u = mu.get_moments(), tau.get_moments()
        self.m = float(mu_u[0])
        self.beta = 1.0 / float(mu_u[1] - mu_u[0] ** 2)
        e_tau = float(tau_u[0])
        self.a = self.tau_shape0 + 0.5 * self.n
        self.b = self.a / e_tau
        self.lower_bound = float(q.L[q.iter - 1])
        self.iterations = int(q.iter)
        return self

    @classmethod
    def from_statistics(cls, n: int, sum_x: float, sum_x2: float) -> NormalPopulation:
        """The batch posterior of `n` observations from their sums alone (the VB fixed point
        :meth:`fit` reaches depends on nothing else), so a fit over millions of values can be
        fed by a pass that keeps three numbers instead of the values."""
        if n < 2:
            raise ValueError("need at least two observations")
        model = cls(n=int(n), sum_x=float(sum_x), sum_x2=float(sum_x2))
        model._solve()
        return model

    def partial_fit(self, x: np.ndarray) -> NormalPopulation:
        """Add observations and re-solve the VB fixed point from the sufficient statistics."""
        x = np.asarray(x, dtype=float).ravel()
        x = x[np.isfinite(x)]
        self.n += int(x.size)
        self.sum_x += float(x.sum())
        self.sum_x2 += float((x * x).sum())
        self._solve()
        return self

    def _solve(self) -> None:
        e_tau = self.a / self.b if self.b > 0 else 1.0
        for iteration in range(1, self.max_iter + 1):
            self.iterations = iteration
            self.beta = self.mu_precision0 + self.n * e_tau
            self.m = (self.mu_precision0 * self.mu_mean0 + e_tau * self.sum_x) / self.beta
            self.a = self.tau_shape0 + 0.5 * self.n
            sq = self.sum_x2 - 2 * self.m * self.sum_x + self.n * (self.m**2 + 1 / self.beta)
            self.b = self.tau_rate0 + 0.5 * sq
            new = self.a / self.b
            if abs(new - e_tau) <= 1e-12 * abs(new):
                break
            e_tau = new

    @property
    def mean(self) -> float:
        """E[mu]."""
        return self.m

    @property
    def precision(self) -> float:
        """E[tau]."""
        return self.a / self.b

    @property
    def sigma(self) -> float:
        return math.sqrt(1.0 / self.precision)

    @property
    def band(self) -> tuple[float, float]:
        return self.m - self.n_sigma * self.sigma, self.m + self.n_sigma * self.sigma

    def predict(self, x: np.ndarray) -> np.ndarray:
        """True where the value is atypical: outside E[mu] ± 2 sigma."""
        lo, hi = self.band
        x = np.asarray(x, dtype=float)
        return (x < lo) | (x > hi)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "format_version": doc.FORMAT_VERSION, **vars(self)}

    @classmethod
    def from_dict(cls, d: Any) -> NormalPopulation:
        """Load a document written by :meth:`to_dict`; anything else raises DocumentError (the
        document may come from anyone who can produce to the models topic)."""
        with doc.loading(KIND):
            d = doc.header(d, KIND, tuple(_FIELDS))
            model = cls(**{k: check(d[k], f"{KIND}.{k}") for k, check in _FIELDS.items()})
            _check_statistics(model)
            return model.probe()

    def probe(self) -> NormalPopulation:
        """Flag the population's own mean: the band must be finite and the answer a bool
        (checked at load time, so a document that loads is servable)."""
        lo, hi = self.band
        flag = self.predict(np.array([self.mean]))
        if not (math.isfinite(lo) and math.isfinite(hi)) or flag.dtype != bool:
            raise DocumentError(f"{KIND}: the probe gets no valid band")
        return self


def _bound_or_none(value: Any, where: str) -> float | None:
    return None if value is None else doc.lower_bound(value, where)


# Positive values are bounded below by 1/MAX_MAGNITUDE so that a/b and 1/beta stay finite.
_TINY = 1 / doc.MAX_MAGNITUDE
_FIELDS: dict[str, Any] = {
    "mu_mean0": doc.number,
    "mu_precision0": lambda v, w: doc.number(v, w, _TINY),
    "tau_shape0": lambda v, w: doc.number(v, w, _TINY),
    "tau_rate0": lambda v, w: doc.number(v, w, _TINY),
    "max_iter": lambda v, w: doc.integer(v, w, 1, MAX_ITER),
    "tol": lambda v, w: doc.number(v, w, 0.0),
    "n_sigma": lambda v, w: doc.number(v, w, 0.0, 1e3, lo_open=True),
    "n": lambda v, w: doc.integer(v, w, 0, 10**15),
    "sum_x": doc.number,
    "sum_x2": lambda v, w: doc.number(v, w, 0.0),
    "m": doc.number,
    "beta": lambda v, w: doc.number(v, w, _TINY),
    "a": lambda v, w: doc.number(v, w, _TINY),
    "b": lambda v, w: doc.number(v, w, _TINY),
    "lower_bound": _bound_or_none,
    "iterations": lambda v, w: doc.integer(v, w, 0, 10**9),
}
assert set(_FIELDS) == {f.name for f in fields(NormalPopulation)}


def _check_statistics(model: NormalPopulation) -> None:
    """(n, sum x, sum x²) must be the statistics of some sample: else partial_fit's rate b
    turns negative and sigma fails on the hot path."""
    n, s, s2 = model.n, model.sum_x, model.sum_x2
    if n == 0 and (s != 0.0 or s2 != 0.0):
        raise DocumentError(f"{KIND}: sums without observations")
    if s * s > n * s2 * (1 + 1e-9) + 1e-300:
        raise DocumentError(f"{KIND}: sum_x2 below sum_x² / n")
