"""The clustering and BN1 models reproduce the original's reference values (SPEC §2.5, §5, §6.8)
and keep labels stable across refits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.mixture import BayesianGaussianMixture, letters
from models.normal import NormalPopulation
from producers.population import generate, group_sizes


@pytest.fixture(scope="module")
def population():
    return generate(200)


@pytest.fixture(scope="module")
def fitted(population):
    return BayesianGaussianMixture().fit(population.features())


def test_generator_reproduces_the_original(population):
    p = population
    assert int((p.sex == 1).sum()) == 148
    assert p.age.mean() == pytest.approx(29.325)
    assert (p.age.min(), p.age.max()) == (23, 34)
    assert p.avg1.mean() == pytest.approx(9.8093, abs=1e-4)
    assert p.avg1.std() == pytest.approx(5.0406, abs=1e-4)
    expected = [(19.931, 19.703), (20.013, 20.076), (24.799, 25.382), (15.893, 15.878)]
    for k, mean in enumerate(expected):
        assert p.features()[p.group == k].mean(axis=0) == pytest.approx(mean, abs=1e-3)
    assert p.visits_pages.mean() == pytest.approx(99.265)
    assert p.visits_pages_a.mean() == pytest.approx(39.315)
    first = (p.sex[0], p.age[0], p.avg1[0], p.avg_time_pages[0], p.avg_time_pages_a[0])
    assert first == pytest.approx((1, 27, 9.8666, 19.9106, 20.6634), abs=1e-4)
    assert (p.visits_pages[0], p.visits_pages_a[0]) == (102, 36)


def test_generator_gives_the_remainder_to_the_last_group():
    assert group_sizes(203) == [50, 50, 50, 53]
    p = generate(203)
    assert p.size == 203 and np.bincount(p.group).tolist() == [50, 50, 50, 53]


def test_mixture_reproduces_the_reference_clustering(fitted, population):
    m = fitted
    assert max(m.restart_bounds_) == pytest.approx(-951.58, abs=0.01)
    assert sum(b == pytest.approx(-951.58, abs=0.01) for b in m.restart_bounds_) == 3
    clusters = {c["label"]: c for c in m.clusters()}
    assert {k: c["size"] for k, c in clusters.items()} == {"A": 50, "B": 51, "C": 49, "D": 50}
    reference = {"A": (15.89, 15.88), "B": (19.97, 19.70), "C": (19.98, 20.09), "D": (24.80, 25.38)}
    for label, mean in reference.items():
        assert clusters[label]["mean"] == pytest.approx(mean, abs=0.01)
    assert np.allclose(clusters["B"]["covariance"], [[0.12, -0.06], [-0.06, 1.81]], atol=0.02)
    assert clusters["C"]["covariance"][0][0] == pytest.approx(3.39, abs=0.02)
    labels = m.predict(population.features())
    assert set(labels[150:]) == {"A"}
    points = [[10, 10], [0, 0], [25, 25], [20, 23], [23, 20]]
    assert m.predict(points).tolist() == ["A", "A", "D", "B", "C"]
    p = m.predict_proba([[20, 20]])[0]
    assert p[m.cluster_labels.index("B")] == pytest.approx(0.54, abs=0.01)


def test_mixture_round_trips_through_json(fitted, population):
    clone = BayesianGaussianMixture.from_dict(json.loads(json.dumps(fitted.to_dict())))
    X = population.features()
    assert clone.predict(X).tolist() == fitted.predict(X).tolist()
    assert np.allclose(clone.predict_proba(X), fitted.predict_proba(X))
    assert clone.clusters() == fitted.clusters()


def test_labels_stay_stable_when_a_group_appears_and_another_shifts(fitted, population):
    rng = np.random.default_rng(1)
    X = population.features().copy()
    X[population.group == 2] += 0.5  # the long-stay group drifts
    new_group = rng.multivariate_normal([32, 12], [[0.5, 0], [0, 0.5]], 60)
    X2 = np.vstack([X, new_group])
    refit = BayesianGaussianMixture(seed=99).fit(X2, previous=fitted)
    old = fitted.predict(population.features())
    new = refit.predict(X)
    for g in range(4):  # every original group keeps its majority label
        members = population.group == g
        assert pd_mode(new[members]) == pd_mode(old[members])
    fresh = set(refit.predict(new_group)) - set(fitted.cluster_labels)
    assert fresh == {"E"}
    assert 0.2 < refit.label_change_share_ < 0.3  # the 60 new users of 260 (plus a few borderline)


def test_warm_refit_of_unchanged_data_changes_under_one_percent(fitted, population):
    refit = BayesianGaussianMixture(seed=5).fit(
        population.features(), previous=fitted, warm_start=True
    )
    assert refit.label_change_share_ < 0.01
    assert refit.posterior.lower_bound == pytest.approx(-951.58, abs=0.05)
    assert refit.restart_bounds_ == [refit.posterior.lower_bound]


def pd_mode(values: np.ndarray) -> str:
    labels, counts = np.unique(values, return_counts=True)
    return str(labels[np.argmax(counts)])


def test_letters():
    assert [letters(i) for i in (0, 1, 25, 26, 27, 701, 702)] == [
        "A",
        "B",
        "Z",
        "AA",
        "AB",
        "ZZ",
        "AAA",
    ]


def test_bn1_reproduces_the_reference(population):
    m = NormalPopulation().fit(population.avg1)
    assert m.mean == pytest.approx(9.8093, abs=1e-4)
    assert m.precision == pytest.approx(0.03916, abs=1e-5)
    assert m.sigma == pytest.approx(5.053, abs=1e-3)
    assert m.lower_bound == pytest.approx(-630.43, abs=0.01)
    assert m.iterations == 3
    assert m.band == pytest.approx((-0.30, 19.92), abs=0.01)
    assert int(m.predict(population.avg1).sum()) == 9


def test_bn1_online_update_equals_the_batch_fit(population):
    x = population.avg1
    online = NormalPopulation()
    for chunk in np.array_split(x, 7):
        online.partial_fit(chunk)
    batch = NormalPopulation().fit(x)
    assert online.mean == pytest.approx(batch.mean, rel=1e-6)
    assert online.precision == pytest.approx(batch.precision, rel=1e-5)
    grown = NormalPopulation.from_dict(json.loads(json.dumps(batch.to_dict()))).partial_fit(
        [40.0, -30.0]
    )
    refit = NormalPopulation().fit(np.concatenate([x, [40.0, -30.0]]))
    assert grown.mean == pytest.approx(refit.mean, rel=1e-6)
    assert grown.precision == pytest.approx(refit.precision, rel=1e-5)
