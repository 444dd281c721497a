"""Model documents are hostile input (models/documents.py): real documents of every kind round
trip; every hostile mutation, including small documents that declare huge sizes, is refused with
DocumentError, fast and without a big allocation; random mutations never raise anything else."""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import documents as doc
from models.documents import DocumentError
from models.mixture import BayesianGaussianMixture
from models.normal import NormalPopulation
from models.spam import PRESETS, SpamFilter, SpamFilterConfig

SPAM = ["buy cheap pills now", "free money click here", "subscribe to my channel for cash"]
HAM = ["great song love it", "this video brings back memories", "beautiful voice and lyrics"]
FILLER = ["really", "so", "today", "wow", "guys", "please"]
Path = tuple[Any, ...]
DELETE = object()


def comments(n: int = 120, seed: int = 0) -> tuple[list[str], list[bool]]:
    """Short comments, half spam, each a template with a filler word and a number."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        spam = i % 2 == 0
        base = rng.choice(SPAM if spam else HAM)
        texts.append(f"{base} {rng.choice(FILLER)} {rng.randint(0, 999)}")
        labels.append(spam)
    return texts, labels


SPAM_CONFIGS = {
    "example": PRESETS["example"],
    "best": PRESETS["best"],
    "rbf": SpamFilterConfig(kernel="rbf", C=10.0),
    "codepoints": SpamFilterConfig(bow_enabled=False, kernel="linear", max_iter=2000),
}


@pytest.fixture(scope="module")
def spam_docs() -> dict[str, dict]:
    texts, labels = comments()
    return {
        name: json.loads(
            json.dumps(SpamFilter(replace(c, cv_folds=3)).fit(texts, labels).to_dict())
        )
        for name, c in SPAM_CONFIGS.items()
    }


@pytest.fixture(scope="module")
def mixture_doc() -> dict:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal([0, 0], 0.5, (60, 2)), rng.normal([5, 5], 0.5, (60, 2))])
    model = BayesianGaussianMixture(n_components=4, n_restarts=2, features=("x", "y")).fit(X)
    return json.loads(json.dumps(model.to_dict()))


@pytest.fixture(scope="module")
def population_doc() -> dict:
    x = np.random.default_rng(1).normal(10.0, 2.0, 200)
    return json.loads(json.dumps(NormalPopulation().fit(x).to_dict()))


# -- helpers ------------------------------------------------------------------------------------


def mutate(document: dict, path: Path, value: Any) -> dict:
    """A deep copy of `document` with the value at `path` replaced (or deleted: DELETE)."""
    out = copy.deepcopy(document)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def b64(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode()


def unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8")


def paths(node: Any, path: Path = (), containers: bool = False) -> Iterator[Path]:
    """Paths of the leaves under `node` (and of the containers too if asked); long lists give
    their first, second and last items only."""
    if isinstance(node, dict):
        items: list[tuple[Any, Any]] = list(node.items())
    elif isinstance(node, list):
        idx = range(len(node)) if len(node) <= 8 else [0, 1, len(node) - 1]
        items = [(i, node[i]) for i in idx]
    else:
        yield path
        return
    if containers and path:
        yield path
    for key, child in items:
        yield from paths(child, (*path, key), containers)


def numeric_paths(document: dict) -> list[Path]:
    def at(path: Path) -> Any:
        node: Any = document
        for key in path:
            node = node[key]
        return node

    return [
        p
        for p in paths(document)
        if isinstance(at(p), (int, float)) and not isinstance(at(p), bool)
    ]


def refused(load: Callable[[Any], Any], document: Any) -> DocumentError:
    """Loading must raise DocumentError from a precise check (not the last-resort net)."""
    with pytest.raises(DocumentError) as info:
        load(document)
    message = str(info.value)
    assert "unexpected" not in message, message
    assert len(message) < 200, message
    return info.value


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPAM_CONFIGS))
def test_spam_filter_documents_round_trip(spam_docs, name):
    d = spam_docs[name]
    assert (d["kind"], d["format_version"]) == ("spam_filter", 1)
    model = SpamFilter.from_dict(d)
    probe = ["buy cheap pills now wow", "great song love it", "", "zzz"]
    labels, scores = model.predict_with_scores(probe)
    assert labels.tolist() == [True, False, *labels[2:].tolist()]
    assert ((scores >= 0) & (scores <= 1)).all()
    assert json.loads(json.dumps(model.to_dict())) == d  # a loaded model writes its document
    legacy = {k: v for k, v in d.items() if k != "format_version"}  # the previous release's
    assert SpamFilter.from_dict(legacy).predict(probe).tolist() == labels.tolist()


def test_mixture_and_population_documents_round_trip(mixture_doc, population_doc):
    assert (mixture_doc["format_version"], population_doc["format_version"]) == (1, 1)
    model = BayesianGaussianMixture.from_dict(mixture_doc)
    low, high = model.predict([[0, 0], [5, 5]])
    assert low != high and {low, high} <= set(model.sizes_)
    assert json.loads(json.dumps(model.to_dict())) == mixture_doc
    legacy = {k: v for k, v in mixture_doc.items() if k != "format_version"}
    assert BayesianGaussianMixture.from_dict(legacy).cluster_labels == model.cluster_labels
    pop = NormalPopulation.from_dict(population_doc)
    assert pop.predict([10.0, 100.0]).tolist() == [False, True]
    assert pop.to_dict() == population_doc
    assert NormalPopulation.from_dict(NormalPopulation().to_dict()).n == 0  # unfitted: loads


def test_estimators_hold_no_deployment_data(spam_docs, mixture_doc, population_doc):
    """Estimators hold hyperparameters and fitted state only: a version, a filter's name and
    the training times are deployment data, which streams' publishing runs write into a model
    document (streams.records.unstamp). An estimator refuses a document that still has them."""
    deployment = {"version", "name", "trained_at", "duration_s"}
    kinds = [
        (SpamFilter, spam_docs["best"]),
        (BayesianGaussianMixture, mixture_doc),
        (NormalPopulation, population_doc),
    ]
    for cls, d in kinds:
        assert not deployment & set(d), cls.__name__
        assert not deployment & {f.name for f in fields(cls)}, cls.__name__
        with pytest.raises(DocumentError, match="version"):
            cls.from_dict({**d, "version": 1})


def test_probe_is_public_and_returns_the_model(spam_docs, mixture_doc, population_doc):
    for model in (
        SpamFilter.from_dict(spam_docs["best"]),
        BayesianGaussianMixture.from_dict(mixture_doc),
        NormalPopulation.from_dict(population_doc),
    ):
        assert model.probe() is model


# -- hostile documents: every kind --------------------------------------------------------------

LOADERS = {
    "spam_filter": SpamFilter.from_dict,
    "bayesian_gaussian_mixture": BayesianGaussianMixture.from_dict,
    "normal_population": NormalPopulation.from_dict,
}
VERSIONS = [math.inf, -math.inf, math.nan, float("1e400"), 10**400, -1, 2**60, "3", True, 2.5, None]


@pytest.fixture(scope="module")
def documents(spam_docs, mixture_doc, population_doc) -> dict[str, dict]:
    return {
        "spam_filter": spam_docs["rbf"],
        "bayesian_gaussian_mixture": mixture_doc,
        "normal_population": population_doc,
    }


@pytest.mark.parametrize("kind", list(LOADERS))
def test_header_version_and_shape_are_checked(documents, kind):
    load, d = LOADERS[kind], documents[kind]
    for value in VERSIONS:
        refused(load, mutate(d, ("version",), value))
    for value in [2, 0, "1", 1.5, None, math.inf]:
        refused(load, mutate(d, ("format_version",), value))
    for other in LOADERS:
        if other != kind:
            refused(load, mutate(d, ("kind",), other))
    refused(load, mutate(d, ("kind",), DELETE))
    refused(load, mutate(d, ("surprise",), 1))
    for key in d:
        if key not in ("kind", "format_version"):
            refused(load, mutate(d, (key,), DELETE))
    for wrong in [None, [], [d], "spam_filter", 3, 1.5]:
        refused(load, wrong)


@pytest.mark.parametrize("kind", list(LOADERS))
def test_non_finite_numbers_are_refused_everywhere(documents, kind):
    """NaN and ±Infinity in every numeric field (lower bounds may be -inf: a VB run without a
    finite bound writes it)."""
    load, d = LOADERS[kind], documents[kind]
    numeric = numeric_paths(d)
    assert len(numeric) > 10
    for path in numeric:
        for value in (math.nan, math.inf, -math.inf, 10**400):
            if value == -math.inf and ("lower_bound" in path or "restart_bounds" in path):
                continue
            refused(load, mutate(d, path, value))


# -- spam filter --------------------------------------------------------------------------------


def spam_cases(docs: dict[str, dict]) -> Iterator[tuple[str, dict]]:
    lin, rbf, best, cp = docs["example"], docs["rbf"], docs["best"], docs["codepoints"]
    coef = unb64(lin["classifier"]["coef"]).tolist()
    idf = unb64(lin["vectoriser"]["idf"]).tolist()
    terms = lin["vectoriser"]["terms"]
    yield "coef longer", mutate(lin, ("classifier", "coef"), b64([*coef, 0.5]))
    yield "coef shorter", mutate(lin, ("classifier", "coef"), b64(coef[:-1]))
    yield "coef nan", mutate(lin, ("classifier", "coef"), b64([math.nan, *coef[1:]]))
    yield "coef inf", mutate(lin, ("classifier", "coef"), b64([*coef[:-1], math.inf]))
    yield (
        "coef not base64",
        mutate(lin, ("classifier", "coef"), "!" * len(lin["classifier"]["coef"])),
    )
    yield "coef as list", mutate(lin, ("classifier", "coef"), coef)
    yield "idf short", mutate(lin, ("vectoriser", "idf"), b64(idf[:-1]))
    yield "idf negative", mutate(lin, ("vectoriser", "idf"), b64([-1.0, *idf[1:]]))
    yield "idf missing", mutate(lin, ("vectoriser", "idf"), DELETE)
    yield "duplicate terms", mutate(lin, ("vectoriser", "terms"), [terms[1], *terms[1:]])
    yield "term not a string", mutate(lin, ("vectoriser", "terms"), [7, *terms[1:]])
    yield "no terms", mutate(lin, ("vectoriser", "terms"), [])
    yield "terms as dict", mutate(lin, ("vectoriser", "terms"), {"a": 0})
    yield "vectoriser as string", mutate(lin, ("vectoriser",), "bow")
    yield "union where none", mutate(lin, ("vectoriser",), best["vectoriser"])
    yield (
        "union with 1 part",
        mutate(best, ("vectoriser", "parts"), best["vectoriser"]["parts"][:1]),
    )
    yield (
        "union with 3 parts",
        mutate(best, ("vectoriser", "parts"), best["vectoriser"]["parts"] * 2),
    )
    yield "bow where union", mutate(best, ("vectoriser",), best["vectoriser"]["parts"][0])
    yield "platt nan", mutate(lin, ("platt",), [math.nan, 0.0])
    yield "platt 3 numbers", mutate(lin, ("platt",), [1.0, 0.0, 2.0])
    yield "platt as dict", mutate(lin, ("platt",), {"a": 1.0})
    yield "platt deeply nested", mutate(lin, ("platt",), nested(100_000))
    yield "config as list", mutate(lin, ("config",), [])
    yield "config unknown key", mutate(lin, ("config", "evil"), 1)
    yield "config analyzer", mutate(lin, ("config", "analyzer"), "letters")
    yield "config kernel", mutate(lin, ("config", "kernel"), "precomputed")
    yield "config C zero", mutate(lin, ("config", "C"), 0)
    yield "config ngram huge", mutate(lin, ("config", "ngram_range"), [1, 10**9])
    yield "config ngram reversed", mutate(lin, ("config", "ngram_range"), [3, 1])
    yield "config ngram bool", mutate(lin, ("config", "ngram_range"), [True, 2])
    yield "config lowercase int", mutate(lin, ("config", "lowercase"), 1)
    yield "config stop words", mutate(lin, ("config", "stop_words"), "klingon")
    yield "config gamma", mutate(rbf, ("config", "gamma"), "huge")
    yield "linear state for kernel", mutate(rbf, ("classifier",), lin["classifier"])
    yield "kernel state for linear", mutate(lin, ("classifier",), rbf["classifier"])
    yield "cv folds mismatch", mutate(lin, ("cv", "folds"), 5)
    yield "cv metric", mutate(lin, ("cv", "metric"), "luck")
    yield "cv as list", mutate(lin, ("cv",), [1])
    yield "name as list", mutate(lin, ("name",), ["comments"])
    yield "name huge", mutate(lin, ("name",), "x" * 10_000)
    yield "training size negative", mutate(lin, ("training_size",), -1)
    yield "input dims wrong cols", mutate(lin, ("input_dimensionality", 1), len(coef) + 1)
    clf = rbf["classifier"]
    rows, cols = clf["sv_shape"]
    dual = unb64(clf["dual_coef"]).tolist()
    indptr, indices = clf["sv_indptr"], clf["sv_indices"]
    yield "kernel of another kind", mutate(rbf, ("classifier", "kernel"), "poly")
    yield "sv cols mismatch", mutate(rbf, ("classifier", "sv_shape"), [rows, cols + 1])
    yield "sv rows mismatch", mutate(rbf, ("classifier", "sv_shape"), [rows + 1, cols])
    yield "dual short", mutate(rbf, ("classifier", "dual_coef"), b64(dual[:-1]))
    yield "indptr decreasing", mutate(rbf, ("classifier", "sv_indptr"), [0, 5, 3, *indptr[3:]])
    yield "indptr not from 0", mutate(rbf, ("classifier", "sv_indptr"), [1, *indptr[1:]])
    yield "indptr short", mutate(rbf, ("classifier", "sv_indptr"), indptr[:-1])
    yield "index out of range", mutate(rbf, ("classifier", "sv_indices"), [cols, *indices[1:]])
    yield "index negative", mutate(rbf, ("classifier", "sv_indices"), [-1, *indices[1:]])
    yield "index float", mutate(rbf, ("classifier", "sv_indices"), [0.5, *indices[1:]])
    yield "sv data short", mutate(rbf, ("classifier", "sv_data"), clf["sv_data"][:-12])
    yield "gamma zero", mutate(rbf, ("classifier", "gamma"), 0.0)
    yield "degree huge", mutate(rbf, ("classifier", "degree"), 10**6)
    yield "code points as bow", mutate(cp, ("vectoriser",), lin["vectoriser"])
    yield "code points zero", mutate(cp, ("vectoriser", "length"), 0)


def nested(depth: int) -> list:
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


def test_hostile_spam_filter_documents_are_refused(spam_docs):
    cases = list(spam_cases(spam_docs))
    assert len({name for name, _ in cases}) == len(cases)
    for name, d in cases:
        try:
            refused(SpamFilter.from_dict, d)
        except BaseException as exc:
            raise AssertionError(f"case {name!r}") from exc


# -- mixture ------------------------------------------------------------------------------------


def mixture_cases(d: dict) -> Iterator[tuple[str, dict]]:
    k = d["params"]["n_components"]
    label = next(iter(d["labels"].values()))
    post = d["posterior"]
    yield "label key out of range", mutate(d, ("labels",), {str(k): "A"})
    yield "label key negative", mutate(d, ("labels",), {"-1": "A"})
    yield "label key not a number", mutate(d, ("labels",), {"one": "A"})
    yield "label key huge", mutate(d, ("labels",), {"9" * 5000: "A"})
    yield "labels empty", mutate(d, ("labels",), {})
    yield "labels missing", mutate(d, ("labels",), DELETE)
    yield "labels as list", mutate(d, ("labels",), ["A"])
    yield "label empty", mutate(d, ("labels",), {"0": ""})
    yield "label not a string", mutate(d, ("labels",), {"0": 1})
    yield "labels duplicate", mutate(d, ("labels",), {"0": "A", "1": "A"})
    yield "labels same component", mutate(d, ("labels",), {"1": "A", "01": "B"})
    yield "size negative", mutate(d, ("sizes", label), -1)
    yield "size unknown label", mutate(d, ("sizes", "ZZ"), 3)
    yield "next label too small", mutate(d, ("next_label",), 0)
    yield "posterior none", mutate(d, ("posterior",), None)
    yield "posterior as list", mutate(d, ("posterior",), [])
    yield "mu ragged", mutate(d, ("posterior", "mu", 0), [1.0])
    yield "mu too deep", mutate(d, ("posterior", "mu", 0), [[1.0], [2.0]])
    yield "mu string", mutate(d, ("posterior", "mu", 0, 0), "1.0")
    yield "mu deeply nested", mutate(d, ("posterior", "mu"), nested(100_000))
    yield "mu one row short", mutate(d, ("posterior", "mu"), post["mu"][:-1])
    yield "log_pi short", mutate(d, ("posterior", "log_pi"), post["log_pi"][:-1])
    yield "lam not PD", mutate(d, ("posterior", "lam", 0), [[1.0, 0.0], [0.0, -1.0]])
    yield "lam singular", mutate(d, ("posterior", "lam", 0), [[0.0, 0.0], [0.0, 0.0]])
    yield "lam asymmetric", mutate(d, ("posterior", "lam", 0), [[1.0, 0.5], [-0.5, 1.0]])
    yield "mu_outer ragged", mutate(d, ("posterior", "mu_outer", 1), [[1.0, 0.0]])
    yield "features short", mutate(d, ("features",), ["x"])
    yield "features empty", mutate(d, ("features",), [])
    yield "features duplicate", mutate(d, ("features",), ["x", "x"])
    yield "features as string", mutate(d, ("features",), "xy")
    yield "components zero", mutate(d, ("params", "n_components"), 0)
    yield "components huge", mutate(d, ("params", "n_components"), 10**9)
    yield "components mismatch", mutate(d, ("params", "n_components"), k + 1)
    yield "restarts zero", mutate(d, ("params", "n_restarts"), 0)
    yield "priors zero", mutate(d, ("params", "priors", "alpha"), 0.0)
    yield "priors unknown", mutate(d, ("params", "priors", "beta"), 1.0)
    yield "params as list", mutate(d, ("params",), [])
    yield "share above one", mutate(d, ("label_change_share",), 2.0)
    yield "bounds as dict", mutate(d, ("restart_bounds",), {})


def test_hostile_mixture_documents_are_refused(mixture_doc):
    for name, d in mixture_cases(mixture_doc):
        try:
            refused(BayesianGaussianMixture.from_dict, d)
        except BaseException as exc:
            raise AssertionError(f"case {name!r}") from exc


# -- population ---------------------------------------------------------------------------------


def test_hostile_population_documents_are_refused(population_doc):
    d = population_doc
    cases = {
        "b zero": ("b", 0.0),
        "a zero": ("a", 0),
        "beta zero": ("beta", 0.0),
        "b negative": ("b", -1.0),
        "b tiny": ("b", 1e-320),
        "n negative": ("n", -1),
        "n fractional": ("n", 2.5),
        "n bool": ("n", True),
        "n_sigma zero": ("n_sigma", 0.0),
        "max_iter huge": ("max_iter", 10**9),
        "max_iter zero": ("max_iter", 0),
        "sum_x2 below sum_x squared": ("sum_x2", 1.0),
        "prior rate zero": ("tau_rate0", 0.0),
        "m string": ("m", "10"),
        "lower bound string": ("lower_bound", "x"),
    }
    for name, (key, value) in cases.items():
        try:
            refused(NormalPopulation.from_dict, mutate(d, (key,), value))
        except BaseException as exc:
            raise AssertionError(f"case {name!r}") from exc
    empty = NormalPopulation().to_dict()
    refused(NormalPopulation.from_dict, {**empty, "sum_x": 5.0})  # sums without observations


# -- small documents declaring huge sizes --------------------------------------------------------


def huge_cases(spam_docs: dict[str, dict], mixture_doc: dict) -> Iterator[tuple[str, Any, dict]]:
    lin, rbf, cp = spam_docs["example"], spam_docs["rbf"], spam_docs["codepoints"]
    clf = rbf["classifier"]
    load_spam = SpamFilter.from_dict
    yield "code points 1e9", load_spam, mutate(cp, ("vectoriser", "length"), 10**9)
    yield "code points 1e400", load_spam, mutate(cp, ("vectoriser", "length"), 10**400)
    yield "sv shape 1e9", load_spam, mutate(rbf, ("classifier", "sv_shape"), [10**9, 10**9])
    yield (
        "sv rows 1e9",
        load_spam,
        mutate(rbf, ("classifier", "sv_shape"), [10**9, clf["sv_shape"][1]]),
    )
    yield "input dims 1e9", load_spam, mutate(lin, ("input_dimensionality",), [10**9, 10**9])
    yield (
        "indptr claims 1e9",
        load_spam,
        mutate(rbf, ("classifier", "sv_indptr"), [*clf["sv_indptr"][:-1], 10**9]),
    )
    yield "indices claim 1e9", load_spam, mutate(rbf, ("classifier", "sv_indices"), [10**9])
    yield "max features 1e12", load_spam, mutate(lin, ("config", "max_features"), 10**12)
    yield "training size 1e400", load_spam, mutate(lin, ("training_size",), 10**400)
    load_mix = BayesianGaussianMixture.from_dict
    yield "components 1e9", load_mix, mutate(mixture_doc, ("params", "n_components"), 10**9)
    yield "subsample 1e400", load_mix, mutate(mixture_doc, ("params", "subsample"), 10**400)
    yield "next label 1e400", load_mix, mutate(mixture_doc, ("next_label",), 10**400)


def test_small_documents_declaring_huge_sizes_are_refused_fast(spam_docs, mixture_doc):
    for name, load, d in huge_cases(spam_docs, mixture_doc):
        tracemalloc.start()
        start = time.perf_counter()
        try:
            refused(load, d)
        except BaseException as exc:
            raise AssertionError(f"case {name!r}") from exc
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert time.perf_counter() - start < 1.0, name
        assert peak < 4 * 2**20, (name, peak)


def test_helpers_refuse_before_allocating():
    tracemalloc.start()
    with pytest.raises(DocumentError):
        doc.b64_floats("AAAA", "x", 10**9)
    with pytest.raises(DocumentError):
        doc.b64_floats("AAAA", "x", 10)  # 10 float64 need 108 base64 characters
    with pytest.raises(DocumentError):
        doc.array([[0.0] * 3] * 2, "x", (None, 10**9))
    with pytest.raises(DocumentError):
        doc.int_list([1, 2], "x", 10**12, 0, 10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2**20
    assert doc.MAX_ELEMENTS == 4_194_304
    assert doc.array([[1, 2.5], [3, 4]], "x", (2, None)).tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert doc.integer(3.0, "x", 0, 5) == 3
    for bad in (True, 3.5, math.inf, 10**400, "3", None):
        with pytest.raises(DocumentError):
            doc.integer(bad, "x", 0, 10)
    assert len(doc.show("y" * 500)) < 50 and len(doc.show(10**400)) < 50


# -- random mutations ----------------------------------------------------------------------------

ODD = [math.nan, math.inf, -math.inf, 10**400, -(10**400), "x", "", None, [], [1.0], {}, {"a": 1}]
ODD_VALUES = st.sampled_from(
    [*ODD, True, False, 0, -1, 1, 2**63, 0.5, -0.0, 1e308, "0", [[1.0]], nested(50)]
)


def hostile_or_fine(load: Callable[[Any], Any], d: dict, data: st.DataObject) -> None:
    d = copy.deepcopy(d)
    for _ in range(data.draw(st.integers(1, 3))):
        candidates = list(paths(d, containers=True))
        path = data.draw(st.sampled_from(candidates))
        d = mutate(d, path, data.draw(st.one_of(ODD_VALUES, st.just(DELETE))))
    try:
        model = load(d)
    except DocumentError:
        return
    assert model.probe() is model


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(list(SPAM_CONFIGS)))
def test_random_mutations_of_spam_filter_documents(spam_docs, data, name):
    hostile_or_fine(SpamFilter.from_dict, spam_docs[name], data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_mutations_of_mixture_documents(mixture_doc, data):
    hostile_or_fine(BayesianGaussianMixture.from_dict, mixture_doc, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_mutations_of_population_documents(population_doc, data):
    hostile_or_fine(NormalPopulation.from_dict, population_doc, data)
