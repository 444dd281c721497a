"""Spam filter of SPEC §7: a bag-of-words representation and an SVM, as one scikit-learn pipeline.

Fixes on purpose (SPEC §11.8-9): the vectoriser is fitted inside each cross-validation fold (no
leakage), folds are shuffled with a seed, lowercase is an option. Scores are calibrated with a
Platt sigmoid fitted on out-of-fold decision values, and a comment is labelled spam when its
score is at least 1/2: one decision per comment, so a label never contradicts its score. The
fitted state serialises to plain JSON (vocabularies, idf and weight vectors as base64 float
arrays): never pickle.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import chain, repeat
from operator import add, mul
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.metrics.pairwise import polynomial_kernel, rbf_kernel, sigmoid_kernel
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import SVC, LinearSVC

from models import documents as doc
from models.documents import DocumentError

METRICS = ("accuracy", "average_precision", "f1", "precision", "recall", "roc_auc")
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "average_precision": "Average Precision",
    "f1": "F1",
    "precision": "Precision",
    "recall": "Recall",
    "roc_auc": "ROC AUC",
}

KIND = "spam_filter"
_DOCUMENT_KEYS = (
    "config",
    "vectoriser",
    "classifier",
    "platt",
    "cv",
    "input_dimensionality",
    "training_size",
)
# Load-time bounds (models/documents.py): n-gram sizes and code points drive the hot path's cost
# per comment, so a document must not choose them freely.
MAX_NGRAM = 10
MAX_CODE_POINTS = 2**16
MAX_TERM_CHARS = 10_000
MAX_DEGREE = 10
# Bounds on hostile input. Only the first MAX_TEXT_CHARS characters of a text are trained on and
# scored, so one huge comment costs at most as much as that prefix. A fitted bag-of-words part
# keeps at most MAX_FEATURES terms (the most frequent, as max_features does) and at most
# MAX_PART_BYTES of JSON for its terms, idf and weights (the most documents first), so
# retraining on hostile reviews cannot grow a document past streams.topics.MODEL_MAX_BYTES
# (32 MiB; a filter has at most two parts).
MAX_TEXT_CHARS = 5_000
MAX_FEATURES = 100_000
MAX_PART_BYTES = 12 * 2**20
_FLOAT_BYTES = 22  # two float64 (idf, weight) in base64: 2 x 32/3 characters, rounded up


@dataclass(frozen=True)
class SpamFilterConfig:
    """Every setting of SPEC §7.2 (vectoriser and classifier) plus cross-validation."""

    bow_enabled: bool = True
    use_tfidf: bool = True
    analyzer: str = "word"  # word, char, char_wb
    ngram_range: tuple[int, int] = (1, 1)
    min_df: float | int = 1
    max_df: float | int = 1.0
    max_features: int | None = None
    stop_words: str | list[str] | None = None  # "english" or a list
    binary: bool = False
    strip_accents: str | None = None  # ascii, unicode
    lowercase: bool = True
    # Optional second representation joined to the first: char_wb n-grams of this range.
    char_wb_range: tuple[int, int] | None = None
    classifier: str = "svc"  # svc or linear_svc (large corpora)
    kernel: str = "rbf"  # linear, poly, rbf, sigmoid
    C: float = 1.0
    gamma: str | float = "scale"
    degree: int = 3
    coef0: float = 0.0
    class_weight: str | None = None
    tol: float = 1e-3
    max_iter: int = -1
    cv_folds: int = 10
    cv_metric: str = "average_precision"
    cv_shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.analyzer not in ("word", "char", "char_wb"):
            raise ValueError(f"analyzer must be word, char or char_wb, not {self.analyzer!r}")
        if self.classifier not in ("svc", "linear_svc"):
            raise ValueError("classifier must be svc or linear_svc")
        if self.kernel not in ("linear", "poly", "rbf", "sigmoid"):
            raise ValueError("kernel must be linear, poly, rbf or sigmoid")
        if self.cv_metric not in METRICS:
            raise ValueError(f"cv_metric must be one of {METRICS}")
        object.__setattr__(self, "ngram_range", tuple(self.ngram_range))
        if self.char_wb_range is not None:
            object.__setattr__(self, "char_wb_range", tuple(self.char_wb_range))

    def vectoriser_summary(self) -> str:
        """The admin's summary string (SPEC §7.4)."""
        if not self.bow_enabled:
            return "UTF-8 Representation (Vectorizer not enabled)"
        if self.binary:
            return "BoW Representation: Binary"
        tfidf = "(TF-IDF Transformation) " if self.use_tfidf else ""
        text = (
            f"BoW Representation: {tfidf}Analyzer: {self.analyzer.replace('_', ' ').title()} "
            f"({self.ngram_range[0]}, {self.ngram_range[1]}) - "
            f"Min / Max DF: {self.min_df} / {self.max_df}"
        )
        if self.char_wb_range:
            text += f" + Char Wb {tuple(self.char_wb_range)}"
        return text

    def classifier_summary(self) -> str:
        if self.classifier == "linear_svc":
            return f"LinearSVC, Penalty: {self.C}"
        text = f"Kernel: {self.kernel.title()}, Penalty: {self.C}"
        if self.kernel in ("poly", "rbf", "sigmoid"):
            text += f", Degree: {self.degree}, Gamma: {self.gamma}, Independent term: {self.coef0}"
        return text


PRESETS: dict[str, SpamFilterConfig] = {
    # The django-ai example (SPEC §7.1): word 1-3 grams, df 0.001..0.9, linear SVC with C = 0.1;
    # tokens are case-sensitive as in the original.
    "example": SpamFilterConfig(
        ngram_range=(1, 3), min_df=0.001, max_df=0.9, kernel="linear", C=0.1, lowercase=False
    ),
    # Chosen on the YouTube collection by leave-one-video-out accuracy (about 200 settings
    # tried; docs/benchmarks.md): binary word 1-3 grams seen in 2+ comments, with char_wb 1-5
    # grams, LinearSVC C = 0.5.
    "best": SpamFilterConfig(
        ngram_range=(1, 3),
        min_df=2,
        binary=True,
        char_wb_range=(1, 5),
        classifier="linear_svc",
        C=0.5,
    ),
    # Enron-style e-mails: long texts, many features.
    "email": SpamFilterConfig(
        ngram_range=(1, 2), min_df=2, max_df=0.9, classifier="linear_svc", C=1.0
    ),
}


class CodePoints(BaseEstimator, TransformerMixin):
    """The original's representation without bag of words: character codes, right-padded with
    spaces to the longest training text."""

    def fit(self, texts: list[str], y: Any = None) -> CodePoints:
        self.length_ = max((len(t) for t in texts), default=1)
        return self

    def transform(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), self.length_), 32.0)
        for i, text in enumerate(texts):
            codes = [ord(c) for c in text[: self.length_]]
            out[i, : len(codes)] = codes
        return out


class _BoundedCounts(CountVectorizer):
    """A CountVectorizer whose learnt vocabulary fits a model document: terms the loader
    accepts (at most MAX_TERM_CHARS characters) within MAX_PART_BYTES of JSON, kept by document
    frequency (then the cheapest first) when they do not all fit."""

    def fit_transform(self, raw_documents: Any, y: Any = None) -> Any:
        X = super().fit_transform(raw_documents)
        if self.fixed_vocabulary_:
            return X
        terms = _terms(self)
        keep = _affordable(terms, X)
        if keep is None:
            return X
        if not keep.size:
            raise ValueError("no term fits in a model document")
        self.vocabulary_ = {terms[j]: i for i, j in enumerate(keep.tolist())}
        return X[:, keep]


class _BoundedTfidf(TfidfVectorizer, _BoundedCounts):
    """TfidfVectorizer with _BoundedCounts' vocabulary (the method resolution order puts
    _BoundedCounts between TfidfVectorizer and CountVectorizer, so TF-IDF learns its idf from
    the bounded counts)."""


def _affordable(terms: list[str], X: Any) -> np.ndarray | None:
    """Columns kept within the byte budget (most documents first, then cheapest, then column
    order), None when every term fits. 12 bytes per character bounds JSON's escapes (an
    escaped surrogate pair), so exact sizes are computed only when that bound is over."""
    chars = np.fromiter(map(len, terms), np.int64, len(terms))
    bound = int((12 * chars + 3 + _FLOAT_BYTES).sum())
    if chars.max(initial=0) <= MAX_TERM_CHARS and bound <= MAX_PART_BYTES:
        return None
    cost = np.fromiter((len(json.dumps(t)) + 1 for t in terms), np.int64, len(terms))
    cost += _FLOAT_BYTES
    cost[chars > MAX_TERM_CHARS] = MAX_PART_BYTES + 1
    documents = np.bincount(X.indices, minlength=len(terms))
    order = np.lexsort((cost, -documents))
    fits = np.cumsum(cost[order]) <= MAX_PART_BYTES
    return np.sort(order[fits])


def _bow(config: SpamFilterConfig, analyzer: str, ngrams: tuple[int, int], **fixed: Any) -> Any:
    cls = _BoundedTfidf if config.use_tfidf else _BoundedCounts
    word = analyzer == "word"
    limit = config.max_features if word and config.max_features else MAX_FEATURES
    return cls(
        analyzer=analyzer,
        ngram_range=ngrams,
        lowercase=config.lowercase,
        strip_accents=config.strip_accents,
        binary=config.binary,
        min_df=config.min_df if word else 1,
        max_df=config.max_df if word else 1.0,
        max_features=min(limit, MAX_FEATURES),
        stop_words=config.stop_words if word else None,
        dtype=np.float64,
        **fixed,
    )


def build_vectoriser(config: SpamFilterConfig) -> Any:
    if not config.bow_enabled:
        return CodePoints()
    main = _bow(config, config.analyzer, config.ngram_range)
    if config.char_wb_range is None:
        return main
    return FeatureUnion([("bow", main), ("char_wb", _bow(config, "char_wb", config.char_wb_range))])


def build_classifier(config: SpamFilterConfig) -> Any:
    if config.classifier == "linear_svc":
        return LinearSVC(
            C=config.C,
            class_weight=config.class_weight,
            tol=config.tol * 0.1,
            max_iter=10000 if config.max_iter < 0 else config.max_iter,
            random_state=config.seed,
        )
    return SVC(
        kernel=config.kernel,
        C=config.C,
        gamma=config.gamma,
        degree=config.degree,
        coef0=config.coef0,
        class_weight=config.class_weight,
        tol=config.tol,
        max_iter=config.max_iter,
    )


def build_pipeline(config: SpamFilterConfig) -> Pipeline:
    return Pipeline(
        [("vectoriser", build_vectoriser(config)), ("classifier", build_classifier(config))]
    )


def capped(texts: Any) -> list[str]:
    """The first MAX_TEXT_CHARS characters of each text (what a filter learns from and scores:
    a bound on one hostile comment's cost)."""
    return [text[:MAX_TEXT_CHARS] for text in texts]


def platt_fit(decision: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of the Platt curve P(spam | d) = 1 / (1 + exp(-(a d + b))), by logistic regression
    of the labels on the decision values (almost unregularised).

    When the out-of-fold decisions separate the classes (the demo's template corpus), the curve
    is a steep step in the middle of their gap; the final model's decisions on its training
    templates still fall on the right side (checked on 24 demo-like corpora, three presets),
    while Platt's prior-corrected targets (scikit-learn's _sigmoid_calibration), tried instead,
    put the step lower and mislabelled one ham template, so the plain fit is kept."""
    lr = LogisticRegression(C=1e6).fit(np.asarray(decision).reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def calibrate(platt: tuple[float, float], decision: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-clip(a d + b, -50, 50))) with scipy's expit (libm's exp), for one or two
    decision values (the hot path's usual batch) in plain Python, which gives the same bits."""
    a, b = platt
    if decision.size <= 2:
        z = [min(max(a * d + b, -50.0), 50.0) for d in decision.tolist()]
        return np.array([1.0 / (1.0 + math.exp(-x)) for x in z], dtype=np.float64)
    z = np.multiply(decision, a)
    z += b
    np.minimum(z, 50.0, out=z)
    np.maximum(z, -50.0, out=z)
    return expit(z, out=z)


@dataclass
class CrossValidation:
    metric: str
    folds: int
    scores: list[float]
    mean: float
    two_std: float

    def display(self) -> str:
        name = METRIC_NAMES[self.metric]
        return f"{name} metric ({self.folds} folds): {self.mean:.3f} ± {self.two_std:.3f}"


@dataclass
class SpamFilter:
    """fit(texts, labels) / predict(texts) / predict_proba(texts) / to_dict() / from_dict()."""

    config: SpamFilterConfig = field(default_factory=SpamFilterConfig)
    vectoriser: Any = None
    classifier: Any = None
    platt: tuple[float, float] = (1.0, 0.0)
    cv: CrossValidation | None = None
    input_dimensionality: tuple[int, int] = (0, 0)
    training_size: int = 0
    # Linear SVMs over bags of words: a term-table scorer (see _LinearScorer), built with the
    # state it reads, so a worker has it before it freezes the heap after a model load.
    scorer: _LinearScorer | None = field(default=None, repr=False, compare=False)

    def fit(self, texts: list[str], labels: list[bool] | np.ndarray) -> SpamFilter:
        """Train, cross-validate (vectoriser inside the folds) and calibrate the scores, on the
        texts' first MAX_TEXT_CHARS characters (what is scored)."""
        texts = capped(texts)
        y = np.asarray(labels, dtype=int)
        if len(set(y.tolist())) < 2:
            raise ValueError("training data needs both spam and ham")
        folds = min(self.config.cv_folds, int(np.bincount(y).min()))
        decision = None
        if folds >= 2:
            self.cv, decision = self._cross_validate(texts, y, folds)
        pipeline = build_pipeline(self.config).fit(texts, y)
        self.vectoriser = pipeline.named_steps["vectoriser"]
        self.classifier = pipeline.named_steps["classifier"]
        self.scorer = _LinearScorer.build(self.vectoriser, self.classifier)
        if decision is None:
            decision = self.decision_function(texts)
        self.platt = platt_fit(decision, y)
        n_features = self.vectoriser.transform(texts[:1]).shape[1]
        self.input_dimensionality = (len(texts), int(n_features))
        self.training_size = len(texts)
        return self

    def _cross_validate(
        self, texts: list[str], y: np.ndarray, folds: int
    ) -> tuple[CrossValidation, np.ndarray]:
        splitter = StratifiedKFold(
            folds,
            shuffle=self.config.cv_shuffle,
            random_state=self.config.seed if self.config.cv_shuffle else None,
        )
        texts_arr = np.asarray(texts, dtype=object)
        decision = cross_val_predict(
            build_pipeline(self.config), texts_arr, y, cv=splitter, method="decision_function"
        )
        scorer = get_scorer(self.config.cv_metric)._score_func
        needs_scores = self.config.cv_metric in ("average_precision", "roc_auc")
        scores = []
        for train, test in splitter.split(texts_arr, y):
            d = decision[test]
            if not needs_scores:  # labelled as served: the score of a curve fitted without them
                d = (calibrate(platt_fit(decision[train], y[train]), d) >= 0.5).astype(int)
            scores.append(float(scorer(y[test], d)))
        arr = np.asarray(scores)
        cv = CrossValidation(
            self.config.cv_metric, folds, scores, float(arr.mean()), float(2 * arr.std())
        )
        return cv, decision

    def decision_function(self, texts: list[str]) -> np.ndarray:
        """Decision values of the texts' first MAX_TEXT_CHARS characters."""
        if self.classifier is None:
            raise RuntimeError("spam filter is not trained")
        texts = capped(texts)
        if self.scorer is not None:
            return self.scorer.decision(texts)
        return np.asarray(
            self.classifier.decision_function(self.vectoriser.transform(texts))
        ).ravel()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated probability of spam (Platt scaling of the SVM's decision value)."""
        return self._calibrate(self.decision_function(texts))

    def _calibrate(self, decision: np.ndarray) -> np.ndarray:
        return calibrate(self.platt, decision)

    def predict(self, texts: list[str]) -> np.ndarray:
        """Spam where the calibrated score is at least 1/2 (see :meth:`predict_with_scores`)."""
        return self.predict_with_scores(texts)[0]

    def predict_with_scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and calibrated scores from one pass of the vectoriser (the hot path's call).

        The label is the score against 1/2, not the sign of the decision value: the score's
        curve is fitted on cross-validation's out-of-fold decisions, whose scale and offset
        differ from the final model's, so the two thresholds disagree. On the demo's template
        corpus the example preset's final model gave every ham template a positive decision
        (spam) with a score of 0.00.
        """
        scores = self._calibrate(self.decision_function(texts))
        return scores >= 0.5, scores

    def inference_record(self) -> dict[str, Any]:
        """The admin's "current inference" block (SPEC §7.5), but for the serving version's
        deployment fields (the serving filter adds them)."""
        rows, cols = self.input_dimensionality
        return {
            "vectorizer": self.config.vectoriser_summary(),
            "classifier": self.config.classifier_summary(),
            "input_dimensionality": f"{rows} rows x {cols} columns",
            "cross_validation": self.cv.display() if self.cv else None,
            "cv": asdict(self.cv) if self.cv else None,
            "training_size": self.training_size,
            "settings": asdict(self.config),
        }

    # -- safe serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        if self.classifier is None:
            raise RuntimeError("spam filter is not trained")
        return {
            "kind": KIND,
            "format_version": doc.FORMAT_VERSION,
            "config": asdict(self.config),
            "vectoriser": _vectoriser_state(self.vectoriser),
            "classifier": _classifier_state(self.classifier),
            "platt": list(self.platt),
            "cv": asdict(self.cv) if self.cv else None,
            "input_dimensionality": list(self.input_dimensionality),
            "training_size": self.training_size,
        }

    @classmethod
    def from_dict(cls, d: Any) -> SpamFilter:
        """Load a document written by :meth:`to_dict`; anything else raises DocumentError (the
        document may come from anyone who can produce to the models topic)."""
        with doc.loading(KIND):
            return cls._load(d).probe()

    @classmethod
    def _load(cls, d: Any) -> SpamFilter:
        d = doc.header(d, KIND, _DOCUMENT_KEYS)
        config = _config_from(d["config"])
        model = cls(config=config)
        model.vectoriser, n_features = _vectoriser_from(config, d["vectoriser"])
        model.classifier = _classifier_from(config, d["classifier"], n_features)
        model.scorer = _LinearScorer.build(model.vectoriser, model.classifier)
        platt = doc.sequence(d["platt"], f"{KIND}.platt", 2, 2)
        model.platt = (doc.number(platt[0], f"{KIND}.platt"), doc.number(platt[1], f"{KIND}.platt"))
        model.cv = None if d["cv"] is None else _cv_from(d["cv"])
        model.training_size = doc.integer(d["training_size"], f"{KIND}.training_size", 0, 10**9)
        rows, cols = doc.sequence(d["input_dimensionality"], f"{KIND}.input_dimensionality", 2, 2)
        model.input_dimensionality = (
            doc.integer(rows, f"{KIND}.input_dimensionality", 0, 10**9),
            doc.integer(cols, f"{KIND}.input_dimensionality", n_features, n_features),
        )
        return model

    def probe(self) -> SpamFilter:
        """Score two probe texts: a loaded filter must give finite scores in [0, 1] (checked at
        load time, so a document that loads is servable)."""
        labels, scores = self.predict_with_scores(["probe text", ""])
        if labels.shape != (2,) or not (np.isfinite(scores) & (scores >= 0) & (scores <= 1)).all():
            raise DocumentError(f"{KIND}: the probe texts get no valid score")
        return self


class _LinearScorer:
    """Decision values of a linear SVM over bag-of-words parts for a batch of texts: the
    vocabulary columns of each text's n-grams, then the distinct (text, column) pairs weighted,
    counted and l2-normalised with numpy.

    Why: it equals ``classifier.decision_function(vectoriser.transform(texts))``, but
    scikit-learn spends ~0.3 ms per call on input validation and its analyzers build every
    n-gram as a Python string (char_wb 1-5 grams: ~0.2 ms per comment). Here no Python code runs
    per character or n-gram: n-grams are integer keys over a stream of symbol ids (characters
    or word tokens) computed and looked up with numpy (_Ngrams). Columns are numbered from 1:
    column 0 stands for an n-gram outside the vocabulary and weighs nothing.
    """

    def __init__(self, parts: list[_Part], intercept: float) -> None:
        self.parts = parts
        self.intercept = intercept
        sizes = [1] + [p.n_terms for p in parts]
        self.width = sum(sizes)  # columns, with column 0
        self.part_of = np.repeat(np.arange(len(sizes)) - 1, sizes).clip(0)  # column -> part
        self.weight = np.concatenate([[0.0]] + [p.weight for p in parts])  # coef x idf
        self.idf2 = np.concatenate([[0.0]] + [p.idf for p in parts]) ** 2
        # One text's path: a row per column, its weight and idf^2 in its part's two places
        # (one cache line per column: the row gathers are most of that path's memory traffic).
        self.rows = np.zeros((self.width, 2 * len(parts)))
        self.rows[np.arange(self.width), 2 * self.part_of] = self.weight
        self.rows[np.arange(self.width), 2 * self.part_of + 1] = self.idf2
        self.ones = np.ones((2, 1024))  # _one's coefficients when binary
        self.binary, self.l2 = parts[0].binary, parts[0].l2
        self.preprocess = parts[0].preprocess  # the same for every part (one config)

    @classmethod
    def build(cls, vectoriser: Any, classifier: Any) -> _LinearScorer | None:
        weights = _linear_weights(classifier)
        if weights is None:
            return None
        coef, intercept = weights
        if isinstance(vectoriser, FeatureUnion):
            vectorisers = [v for _, v in vectoriser.transformer_list]
        else:
            vectorisers = [vectoriser]
        if not all(map(_Part.supports, vectorisers)):
            return None
        if sum(len(v.vocabulary_) for v in vectorisers) != len(coef):
            return None
        settings = {(type(v), v.binary, v.lowercase, v.strip_accents) for v in vectorisers}
        kinds = [v.analyzer for v in vectorisers]
        if len(settings) > 1 or len(set(kinds)) < len(kinds):
            return None  # never from build_vectoriser: the parts share the config
        parts, offset = [], 1
        for v in vectorisers:
            part_type = _WordPart if v.analyzer == "word" else _CharPart
            parts.append(part_type(v, coef[offset - 1 :], offset))
            offset += parts[-1].n_terms
        return cls(parts, intercept)

    def decision(self, texts: list[str]) -> np.ndarray:
        """One decision value per text (texts already capped at MAX_TEXT_CHARS)."""
        pre = list(map(self.preprocess, texts))
        if len(pre) <= 2:  # the worker's usual fetch: fewer numpy calls one text at a time
            return np.array([self._one(self._columns([text])[1]) for text in pre])
        text_of, cols = self._columns(pre)
        assert text_of is not None
        return self._batch(len(pre), text_of, cols)

    def _columns(self, pre: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """(text, column) of the batch's n-grams; the texts are None for a batch of one."""
        found = [p.occurrences(pre) for p in self.parts]
        cols = np.concatenate([col for _, col in found])
        if len(pre) == 1:
            return None, cols
        return np.concatenate([text for text, _ in found]), cols

    def _batch(self, n: int, text_of: np.ndarray, cols: np.ndarray) -> np.ndarray:
        n_parts = len(self.parts)
        pairs = text_of * self.width + cols
        if not pairs.size:
            return np.full(n, self.intercept)
        pairs.sort()
        new = np.empty(pairs.size + 1, bool)
        new[0] = new[-1] = True
        np.not_equal(pairs[1:], pairs[:-1], out=new[1:-1])
        bounds = new.nonzero()[0]
        first = bounds[:-1]
        text, col = np.divmod(pairs.take(first), self.width)
        group = text * n_parts + self.part_of.take(col) if n_parts > 1 else text
        weight = self.weight.take(col)
        if not self.binary:
            tf = bounds[1:] - first
            weight *= tf
        dot = np.bincount(group, weight, minlength=n * n_parts)
        if self.l2:
            squares = self.idf2.take(col)
            if not self.binary:
                squares *= tf * tf
            norm = np.bincount(group, squares, minlength=n * n_parts)
            np.sqrt(norm, out=norm)
            np.divide(dot, norm, out=dot, where=norm > 0.0)
        if n_parts > 1:
            dot = dot.reshape(n, n_parts).sum(axis=1)
        dot += self.intercept
        return dot

    def _one(self, cols: np.ndarray) -> float:
        """One text's decision value: the rows of its distinct columns, summed per part with
        their counts (weights) and squared counts (idf^2) as coefficients, ones if binary."""
        if not cols.size:
            return self.intercept
        cols.sort()
        new = np.empty(cols.size, bool)
        new[0] = True
        np.not_equal(cols[1:], cols[:-1], out=new[1:])
        if self.binary:
            distinct = cols[new]
            if distinct.size > self.ones.shape[1]:
                self.ones = np.ones((2, 2 * distinct.size))
            tf = self.ones[:, : distinct.size]
        else:
            first = new.nonzero()[0]
            distinct = cols.take(first)
            tf = np.empty((2, first.size))
            tf[0, :-1] = first[1:] - first[:-1]
            tf[0, -1] = cols.size - first[-1]
            np.multiply(tf[0], tf[0], out=tf[1])
        sums = (tf @ self.rows.take(distinct, axis=0)).tolist()
        total = self.intercept
        for dot, squares in zip(sums[0][0::2], sums[1][1::2], strict=True):
            total += dot / math.sqrt(squares) if self.l2 and squares > 0.0 else dot
        return total


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: a key's slot is its product's top bits
_BMP = 0x10000
_SPILLED, _COLUMN = np.uint64(2**32), np.uint64(2**32 - 1)  # _KeyTable's column field
# sklearn's whitespace normalisation of the char analyzers (`_white_spaces`): for char_wb it
# changes nothing (str.split() splits on the same whitespace), for char it is applied as is.
_WHITE_RUNS = re.compile(r"\s\s+")


class _Part:
    """One bag-of-words part of a linear filter: its columns' weights and the n-grams of a
    batch of preprocessed texts that are in its vocabulary, as integer keys (_Ngrams)."""

    ngrams: _Ngrams

    def __init__(self, v: CountVectorizer, coef: np.ndarray, offset: int) -> None:
        terms = _terms(v)
        n = len(terms)
        self.kind = v.analyzer
        self.lo, self.hi = v.ngram_range
        self.preprocess = v.build_preprocessor()
        self.n_terms, self.offset = n, offset
        tfidf = isinstance(v, TfidfVectorizer)
        self.idf = np.asarray(v.idf_, np.float64) if tfidf else np.ones(n)
        self.weight = coef[:n] * self.idf
        self.binary = bool(v.binary)
        self.l2 = tfidf and v.norm == "l2"
        self._index(v, terms)

    @staticmethod
    def supports(v: Any) -> bool:
        """Whether the scorer reproduces vectoriser `v` (ours always: default tokens, l2 or no
        norm, plain tf)."""
        if not isinstance(v, CountVectorizer) or v.analyzer not in ("word", "char", "char_wb"):
            return False
        if v.tokenizer is not None or v.preprocessor is not None or v.input != "content":
            return False
        if v.analyzer == "word" and v.token_pattern != r"(?u)\b\w\w+\b":
            return False
        tfidf = isinstance(v, TfidfVectorizer)
        return not tfidf or (v.norm in ("l2", None) and v.use_idf and not v.sublinear_tf)

    def _index(self, v: CountVectorizer, terms: list[str]) -> None:
        """Build `ngrams` from the terms sklearn's analyzer can form."""
        raise NotImplementedError

    def occurrences(self, texts: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """(text, column) of every occurrence of a vocabulary n-gram in the batch; the texts
        are None for a batch of one."""
        raise NotImplementedError


class _WordPart(_Part):
    """word n-grams: symbols are the tokens of sklearn's tokenizer (stop words removed before
    n-grams are formed, as sklearn does); a term is its tokens joined by one space. A batch's
    stream is each text's token ids followed by an unknown id. A short text alone computes the
    same exact keys with map over Python ints and looks them up in a dict (numpy's per-call
    cost is most of the work for a few dozen tokens)."""

    SHORT = 200  # tokens

    def _index(self, v: CountVectorizer, terms: list[str]) -> None:
        self.tokenize = v.build_tokenizer()
        tokens = [term.split(" ") for term in terms]
        counts = np.fromiter(map(len, tokens), np.int64, len(terms))
        columns = ((counts >= self.lo) & (counts <= self.hi)).nonzero()[0]
        flat = list(chain.from_iterable(tokens[i] for i in columns))
        self.vocabulary = {token: i for i, token in enumerate(dict.fromkeys(flat), 1)}
        ids = np.fromiter(map(self.vocabulary.__getitem__, flat), np.uint64, len(flat))
        self.ngrams = _Ngrams(ids, counts[columns], columns, len(self.vocabulary), self)
        for word in v.get_stop_words() or ():
            self.vocabulary[word] = 0  # dropped by ids()
        self.unknown = self.ngrams.unknown
        table = self.ngrams.table
        self.by_key = dict(zip(table.all_keys().tolist(), table.all_cols().tolist(), strict=True))

    def ids(self, tokens: list[str]) -> tuple[int, ...]:
        """The tokens' ids (unknown for tokens no term has), stop words (id 0) dropped."""
        return tuple(filter(None, map(self.vocabulary.get, tokens, repeat(self.unknown))))

    def occurrences(self, texts: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        ids = [self.ids(self.tokenize(text)) for text in texts]
        if len(ids) == 1 and len(ids[0]) <= self.SHORT and self.ngrams.exact:
            return None, self._short(ids[0])
        pieces = [(*text, self.unknown) for text in ids]
        flat = chain(chain.from_iterable(pieces), repeat(0, self.hi - 1))
        stream = np.fromiter(flat, np.uint64, sum(map(len, pieces)) + self.hi - 1)
        where, cols = self.ngrams.columns(stream)
        if len(texts) == 1:
            return None, cols
        return np.arange(len(texts)).repeat(list(map(len, pieces))).take(where), cols

    def _short(self, ids: tuple[int, ...]) -> np.ndarray:
        """The columns of one short text's n-grams: the keys _Ngrams computes, by map."""
        base, grams, keys = int(self.ngrams.base), [], ids
        if self.lo == 1:
            grams.append(ids)
        for n in range(2, self.hi + 1):
            keys = list(map(add, map(mul, keys, repeat(base)), ids[n - 1 :]))
            if n >= self.lo:
                grams.append(keys)
        return np.fromiter(map(self.by_key.get, chain.from_iterable(grams), repeat(0)), np.int64)


class _CharPart(_Part):
    """char and char_wb n-grams: symbols are code points (ids from a table for the Basic
    Multilingual Plane, a sorted array beyond). char_wb streams each text's words, each padded
    with a space on both sides, one after the other (" ab  cd "): a window that crosses words
    holds two spaces, which no term sklearn forms holds. char streams each whitespace-normalised
    text followed by a character outside the alphabet."""

    def _index(self, v: CountVectorizer, terms: list[str]) -> None:
        chars = np.fromiter(map(len, terms), np.int64, len(terms))
        producible = (chars >= self.lo) & (chars <= self.hi)
        first_n = self.lo
        if self.kind == "char_wb":
            producible &= np.fromiter(("  " not in t for t in terms), bool, len(terms))
            if self.lo > 3:  # sklearn's short-word rule: a padded word shorter than lo is one
                first_n = 3  # n-gram (words of 1..lo - 3 characters)
                whole = np.fromiter(map(_padded_word, terms), bool, len(terms))
                producible |= whole & (chars < self.lo)
        columns = producible.nonzero()[0]
        points = _code_points("".join([terms[i] for i in columns]))
        alphabet = np.unique(points)
        ids = np.searchsorted(alphabet, points).astype(np.uint64) + 1
        self.ngrams = _Ngrams(ids, chars[columns], columns, alphabet.size, self, first_n)
        symbol = np.arange(1, alphabet.size + 1, dtype=np.uint64)
        near = alphabet < _BMP
        self.bmp = np.full(_BMP + 1, self.ngrams.unknown, np.uint64)
        self.bmp[alphabet[near]] = symbol[near]
        self.astral, self.astral_ids = alphabet[~near], symbol[~near]
        gaps = np.setdiff1d(np.arange(alphabet.size + 1), alphabet, assume_unique=True)
        self.separator = chr(int(gaps[0]))

    def symbols(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(character ids followed by the padding, the text of each character) of a batch."""
        if self.kind == "char_wb":
            pieces = [f" {'  '.join(words)} " if words else "" for words in map(str.split, texts)]
        else:
            pieces = [_WHITE_RUNS.sub(" ", text) + self.separator for text in texts]
        points = _code_points("".join(pieces))
        ids = np.zeros(points.size + self.hi - 1, np.uint64)
        self.bmp.take(np.minimum(points, _BMP), out=ids[: points.size])
        if self.astral.size and points.size and points.max() >= _BMP:
            far = (points >= _BMP).nonzero()[0]
            query = points[far]
            at = np.minimum(np.searchsorted(self.astral, query), self.astral.size - 1)
            ids[far] = np.where(self.astral[at] == query, self.astral_ids[at], self.ngrams.unknown)
        lens = np.fromiter(map(len, pieces), np.int64, len(pieces))
        return ids, np.arange(len(pieces)).repeat(lens)

    def occurrences(self, texts: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        ids, text_of = self.symbols(texts)
        where, cols = self.ngrams.columns(ids)
        return None if len(texts) == 1 else text_of.take(where), cols


class _Ngrams:
    """A part's n-grams as integer keys over a stream of symbol ids, and its vocabulary table.

    Each symbol the vocabulary uses has an id 1..m, any other the id m + 1 (unknown), and an
    n-gram's key is its ids in base `base`. When the longest n-gram's ids fit 64 bits the base
    is 2**bits and keys are exact (one key, one n-gram); otherwise the base is a random odd
    number: keys are hashes, unique within the vocabulary (another base is drawn when two
    collide), and every match is verified against the term's ids, so scores stay exact
    whatever the input. Every window of the stream (lengths first_n..hi) is looked up: the
    stream is laid out so that a window sklearn's analyzer does not form holds an unknown id,
    a separator or the zero padding, which no term holds.
    """

    def __init__(
        self,
        ids: np.ndarray,
        lens: np.ndarray,
        columns: np.ndarray,
        m: int,
        part: _Part,
        first_n: int | None = None,
    ) -> None:
        self.first_n, self.hi, self.offset = first_n or part.lo, part.hi, part.offset
        self.unknown = m + 1
        self.padding = np.zeros(self.hi - 1, np.uint64)
        bits = self.unknown.bit_length()
        self.exact = self.hi * bits <= 64
        seqs = _padded_ids(ids, lens, self.hi)
        for _ in range(8):
            self.base = np.uint64(1 << bits if self.exact else secrets.randbits(63) | 1)
            keys = _term_keys(seqs, lens, self.base)
            if np.unique(keys).size == keys.size:
                break
        else:
            raise DocumentError(f"{KIND}: vocabulary keys collide")
        self.table = _KeyTable(keys, columns + part.offset)
        if not self.exact:  # kept to verify matches
            self.row_of = np.full(part.n_terms, -1)
            self.row_of[columns] = np.arange(columns.size)
            self.seqs, self.lens = seqs, lens

    def columns(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, column) of each window of the stream `ids` (ending with the padding)
        that is a vocabulary term."""
        size = ids.size - self.hi + 1
        keys = np.empty((self.hi, size), np.uint64)  # row n - 1: the n-grams starting there
        keys[0] = ids[:size]
        for n in range(1, self.hi):
            np.multiply(keys[n - 1], self.base, out=keys[n])
            keys[n] += ids[n : n + size]
        keys = keys[self.first_n - 1 :].reshape(-1)
        cols = self.table.lookup(keys)
        hits = cols.nonzero()[0]
        where = hits % size if size else hits
        if not self.exact:
            hits, where = self._verified(cols, hits, where, ids, size)
        return where, cols.take(hits)

    def _verified(
        self, cols: np.ndarray, hits: np.ndarray, where: np.ndarray, ids: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hashed keys: the hits whose window's ids are the term's."""
        ns = hits // size + self.first_n
        row = self.row_of.take(cols.take(hits) - self.offset)
        span = np.arange(self.hi)
        window = ids.take(where[:, None] + span)
        same = (window == self.seqs.take(row, axis=0)) | (span >= ns[:, None])
        ok = same.all(axis=1) & (self.lens.take(row) == ns)
        return hits[ok], where[ok]


class _KeyTable:
    """Integer keys -> columns in one vectorised probe: each slot holds the first key whose home
    it is, and the keys that found their home taken are kept sorted and binary-searched only by
    queries whose home slot has such spilled keys (few: the table is at most a quarter full).
    A slot is one 16-byte row (key; column, and 2**32 if keys spilled from it), so a query
    reads one cache line. An empty slot holds key 0 and column 0, which means none."""

    def __init__(self, keys: np.ndarray, cols: np.ndarray) -> None:
        bits = max(4, (4 * len(keys) - 1).bit_length())
        self.shift = np.uint64(64 - bits)
        home = self._home(keys)
        slots, first = np.unique(home, return_index=True)
        self.slots = np.zeros((1 << bits, 2), np.uint64)
        self.slots[slots, 0] = keys[first]
        self.slots[slots, 1] = cols[first]
        spilled = np.ones(len(keys), bool)
        spilled[first] = False
        order = np.argsort(keys[spilled])
        self.spill_keys = keys[spilled][order]
        self.spill_cols = cols[spilled][order].astype(np.int64)
        self.slots[home[spilled], 1] |= _SPILLED

    def all_keys(self) -> np.ndarray:
        return np.concatenate([self.slots[self._used(), 0], self.spill_keys])

    def all_cols(self) -> np.ndarray:
        used = (self.slots[self._used(), 1] & _COLUMN).astype(np.int64)
        return np.concatenate([used, self.spill_cols])

    def _used(self) -> np.ndarray:
        return (self.slots[:, 1] & _COLUMN) > 0

    def _home(self, keys: np.ndarray) -> np.ndarray:
        home = keys * _GOLDEN
        home >>= self.shift
        return home

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The column of each key, 0 where the key is not in the table."""
        slot = self.slots.take(self._home(keys), axis=0)
        found = slot[:, 0] == keys
        cols = (slot[:, 1] & _COLUMN).view(np.int64)
        cols *= found
        if self.spill_keys.size:
            again = ((slot[:, 1] >= _SPILLED) > found).nonzero()[0]
            if again.size:
                query = keys.take(again)
                at = np.minimum(self.spill_keys.searchsorted(query), self.spill_keys.size - 1)
                cols[again] = np.where(self.spill_keys.take(at) == query, self.spill_cols[at], 0)
        return cols


def _code_points(text: str) -> np.ndarray:
    """Code points of a text; lone surrogates (hostile input) are code points like any other."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _padded_ids(ids: np.ndarray, lens: np.ndarray, width: int) -> np.ndarray:
    """Rows of ids (`lens[i]` ids in row i, consecutive in `ids`), zero-padded to `width`."""
    out = np.zeros((len(lens), width), np.uint64)
    row = np.repeat(np.arange(len(lens)), lens)
    out[row, np.arange(row.size) - np.repeat(np.cumsum(lens) - lens, lens)] = ids
    return out


def _term_keys(seqs: np.ndarray, lens: np.ndarray, base: np.uint64) -> np.ndarray:
    """Each term's key: its ids in base `base`, as _Ngrams.columns computes them."""
    keys = np.zeros(len(lens), np.uint64)
    for k in range(seqs.shape[1]):
        keys = np.where(k < lens, keys * base + seqs[:, k], keys)
    return keys


def _padded_word(term: str) -> bool:
    """A whole char_wb padded word: a space, characters but no whitespace, a space."""
    return len(term) >= 3 and term[0] == term[-1] == " " and term[1:-1].split() == [term[1:-1]]


def _linear_weights(classifier: Any) -> tuple[np.ndarray, float] | None:
    """(coef, intercept) of a linear SVM, fitted or restored; None for kernel SVMs."""
    if isinstance(classifier, _RestoredSVM):
        if classifier.coef is None:
            return None
        return classifier.coef, classifier.intercept
    if isinstance(classifier, LinearSVC) or getattr(classifier, "kernel", None) == "linear":
        coef = classifier.coef_
        coef = coef.toarray() if sparse.issparse(coef) else np.asarray(coef)
        return coef.ravel().astype(np.float64), float(classifier.intercept_[0])
    return None


def _terms(v: CountVectorizer) -> list[str]:
    """A fitted vectoriser's terms in feature (column) order."""
    return sorted(v.vocabulary_, key=v.vocabulary_.__getitem__)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode()


def _single_vectoriser_state(v: Any) -> dict[str, Any]:
    if isinstance(v, CodePoints):
        return {"type": "code_points", "length": v.length_}
    terms = _terms(v)
    state: dict[str, Any] = {"type": "bow", "terms": terms}
    if isinstance(v, TfidfVectorizer):
        state["idf"] = _b64(v.idf_)
    return state


def _vectoriser_state(v: Any) -> dict[str, Any]:
    if isinstance(v, FeatureUnion):
        return {
            "type": "union",
            "parts": [_single_vectoriser_state(p) for _, p in v.transformer_list],
        }
    return _single_vectoriser_state(v)


def _classifier_state(c: Any) -> dict[str, Any]:
    if isinstance(c, _RestoredSVM):
        return c.to_state()
    weights = _linear_weights(c)
    if weights is not None:
        coef, intercept = weights
        return {"type": "linear", "coef": _b64(coef), "intercept": intercept}
    sv = sparse.csr_matrix(c.support_vectors_)
    return {
        "type": "kernel",
        "kernel": c.kernel,
        "gamma": float(c._gamma),
        "degree": int(c.degree),
        "coef0": float(c.coef0),
        "intercept": float(c.intercept_[0]),
        "dual_coef": _b64(
            np.asarray(
                c.dual_coef_.toarray() if sparse.issparse(c.dual_coef_) else c.dual_coef_
            ).ravel()
        ),
        "sv_shape": list(sv.shape),
        "sv_data": _b64(sv.data),
        "sv_indices": sv.indices.astype(int).tolist(),
        "sv_indptr": sv.indptr.astype(int).tolist(),
    }


class _RestoredSVM:
    """Decision function of a trained SVM rebuilt from its validated JSON state: linear (coef,
    intercept) or kernel (support vectors, dual coefficients and the kernel's parameters)."""

    def __init__(
        self,
        intercept: float,
        coef: np.ndarray | None = None,
        kernel: dict[str, Any] | None = None,
        sv: sparse.csr_matrix | None = None,
        dual: np.ndarray | None = None,
    ) -> None:
        self.intercept = intercept
        self.coef = coef
        self.kernel = kernel  # kernel, gamma, degree, coef0
        self.sv = sv
        self.dual = dual

    @property
    def linear(self) -> bool:
        return self.coef is not None

    def to_state(self) -> dict[str, Any]:
        if self.coef is not None:
            return {"type": "linear", "coef": _b64(self.coef), "intercept": self.intercept}
        assert self.kernel is not None and self.sv is not None and self.dual is not None
        return {
            "type": "kernel",
            **self.kernel,
            "intercept": self.intercept,
            "dual_coef": _b64(self.dual),
            "sv_shape": list(self.sv.shape),
            "sv_data": _b64(self.sv.data),
            "sv_indices": self.sv.indices.astype(int).tolist(),
            "sv_indptr": self.sv.indptr.astype(int).tolist(),
        }

    def decision_function(self, X: Any) -> np.ndarray:
        if self.coef is not None:
            return np.asarray(X @ self.coef).ravel() + self.intercept
        k = self.kernel
        assert k is not None
        if k["kernel"] == "rbf":
            gram = rbf_kernel(X, self.sv, gamma=k["gamma"])
        elif k["kernel"] == "poly":
            gram = polynomial_kernel(
                X, self.sv, degree=k["degree"], gamma=k["gamma"], coef0=k["coef0"]
            )
        else:
            gram = sigmoid_kernel(X, self.sv, gamma=k["gamma"], coef0=k["coef0"])
        return np.asarray(gram @ self.dual).ravel() + self.intercept


# -- loading a document: every value checked before it is used (models/documents.py) -----------


def _ngrams(value: Any, where: str) -> tuple[int, int]:
    lo, hi = doc.sequence(value, where, 2, 2)
    lo = doc.integer(lo, where, 1, MAX_NGRAM)
    return lo, doc.integer(hi, where, lo, MAX_NGRAM)


def _df(value: Any, where: str) -> float | int:
    """scikit-learn's document frequency: an int is a count, a float a share."""
    if isinstance(value, int) and not isinstance(value, bool):
        return doc.integer(value, where, 0, 10**9)
    return doc.number(value, where, 0.0, 1.0)


def _optional(check: Any) -> Any:
    return lambda v, where: None if v is None else check(v, where)


def _stop_words(value: Any, where: str) -> str | list[str]:
    if isinstance(value, str):
        return doc.choice(value, where, ("english",))
    return doc.strings(value, where, 10_000, 100, unique=False)


_CONFIG_FIELDS: dict[str, Any] = {
    "bow_enabled": doc.boolean,
    "use_tfidf": doc.boolean,
    "analyzer": lambda v, w: doc.string(v, w, 16),
    "ngram_range": _ngrams,
    "min_df": _df,
    "max_df": _df,
    "max_features": _optional(lambda v, w: doc.integer(v, w, 1, doc.MAX_ELEMENTS)),
    "stop_words": _optional(_stop_words),
    "binary": doc.boolean,
    "strip_accents": _optional(lambda v, w: doc.choice(v, w, ("ascii", "unicode"))),
    "lowercase": doc.boolean,
    "char_wb_range": _optional(_ngrams),
    "classifier": lambda v, w: doc.string(v, w, 16),
    "kernel": lambda v, w: doc.string(v, w, 16),
    "C": lambda v, w: doc.number(v, w, 0.0, 1e10, lo_open=True),
    "gamma": lambda v, w: (
        doc.choice(v, w, ("scale", "auto"))
        if isinstance(v, str)
        else doc.number(v, w, 0.0, 1e6, lo_open=True)
    ),
    "degree": lambda v, w: doc.integer(v, w, 1, MAX_DEGREE),
    "coef0": lambda v, w: doc.number(v, w, -1e6, 1e6),
    "class_weight": _optional(lambda v, w: doc.choice(v, w, ("balanced",))),
    "tol": lambda v, w: doc.number(v, w, 0.0, 1e3, lo_open=True),
    "max_iter": lambda v, w: doc.integer(v, w, -1, 10**9),
    "cv_folds": lambda v, w: doc.integer(v, w, 0, 1000),
    "cv_metric": lambda v, w: doc.string(v, w, 32),
    "cv_shuffle": doc.boolean,
    "seed": lambda v, w: doc.integer(v, w, 0, 2**32 - 1),
}
assert set(_CONFIG_FIELDS) == {f.name for f in fields(SpamFilterConfig)}


def _config_from(value: Any) -> SpamFilterConfig:
    """Every field checked (unknown keys refused, absent ones take their defaults), then the
    config's own checks, whose ValueError becomes a DocumentError."""
    where = f"{KIND}.config"
    d = doc.mapping(value, where, (), tuple(_CONFIG_FIELDS))
    clean = {k: _CONFIG_FIELDS[k](v, f"{where}.{k}") for k, v in d.items()}
    try:
        return SpamFilterConfig(**clean)
    except ValueError as exc:
        raise DocumentError(f"{where}: {str(exc)[:120]}") from exc


def _cv_from(value: Any) -> CrossValidation:
    where = f"{KIND}.cv"
    slack = 1e-9  # metrics are in [0, 1] up to rounding (average precision gives 1 + 4e-16)
    d = doc.mapping(value, where, ("metric", "folds", "scores", "mean", "two_std"))
    folds = doc.integer(d["folds"], f"{where}.folds", 2, 1000)
    scores = doc.sequence(d["scores"], f"{where}.scores", folds, folds)
    return CrossValidation(
        metric=doc.choice(d["metric"], f"{where}.metric", METRICS),
        folds=folds,
        scores=[doc.number(x, f"{where}.scores", -slack, 1.0 + slack) for x in scores],
        mean=doc.number(d["mean"], f"{where}.mean", -slack, 1.0 + slack),
        two_std=doc.number(d["two_std"], f"{where}.two_std", 0.0, 2.0 + slack),
    )


def _bow_from(
    config: SpamFilterConfig, value: Any, where: str, analyzer: str, ngrams: tuple[int, int]
) -> tuple[Any, int]:
    """A bag-of-words part: unique terms in column order, and their idf iff TF-IDF is on."""
    d = doc.mapping(value, where, ("type", "terms"), ("idf",))
    doc.choice(d["type"], f"{where}.type", ("bow",))
    terms = doc.strings(d["terms"], f"{where}.terms", doc.MAX_ELEMENTS, MAX_TERM_CHARS, 1)
    if config.use_tfidf != ("idf" in d):
        raise DocumentError(f"{where}: idf must be present iff use_tfidf")
    v = _bow(
        replace(config, min_df=1, max_df=1.0, max_features=None),
        analyzer,
        ngrams,
        vocabulary={term: i for i, term in enumerate(terms)},
    )
    if config.use_tfidf:
        v.idf_ = doc.b64_floats(d["idf"], f"{where}.idf", len(terms), 0.0, 1e6)
    v._validate_vocabulary()
    return v, len(terms)


def _vectoriser_from(config: SpamFilterConfig, value: Any) -> tuple[Any, int]:
    """The vectoriser the config describes and its number of features (columns)."""
    where = f"{KIND}.vectoriser"
    if not config.bow_enabled:
        d = doc.mapping(value, where, ("type", "length"))
        doc.choice(d["type"], f"{where}.type", ("code_points",))
        cp = CodePoints()
        cp.length_ = doc.integer(d["length"], f"{where}.length", 1, MAX_CODE_POINTS)
        return cp, cp.length_
    if config.char_wb_range is None:
        return _bow_from(config, value, where, config.analyzer, config.ngram_range)
    d = doc.mapping(value, where, ("type", "parts"))
    doc.choice(d["type"], f"{where}.type", ("union",))
    first, second = doc.sequence(d["parts"], f"{where}.parts", 2, 2)
    main, n_main = _bow_from(config, first, f"{where}.parts", config.analyzer, config.ngram_range)
    char, n_char = _bow_from(config, second, f"{where}.parts", "char_wb", config.char_wb_range)
    return FeatureUnion([("bow", main), ("char_wb", char)]), n_main + n_char


_KERNEL_KEYS = ("type", "kernel", "gamma", "degree", "coef0", "intercept", "dual_coef")
_SV_KEYS = ("sv_shape", "sv_data", "sv_indices", "sv_indptr")


def _classifier_from(config: SpamFilterConfig, value: Any, n_features: int) -> _RestoredSVM:
    """A linear SVM (one weight per feature) or a kernel SVM of the config's kernel, whose
    support vectors are a valid CSR matrix of n_features columns."""
    where = f"{KIND}.classifier"
    if config.classifier == "linear_svc" or config.kernel == "linear":
        d = doc.mapping(value, where, ("type", "coef", "intercept"))
        doc.choice(d["type"], f"{where}.type", ("linear",))
        return _RestoredSVM(
            intercept=doc.number(d["intercept"], f"{where}.intercept"),
            coef=doc.b64_floats(d["coef"], f"{where}.coef", n_features),
        )
    d = doc.mapping(value, where, _KERNEL_KEYS + _SV_KEYS)
    doc.choice(d["type"], f"{where}.type", ("kernel",))
    kernel = {
        "kernel": doc.choice(d["kernel"], f"{where}.kernel", (config.kernel,)),
        "gamma": doc.number(d["gamma"], f"{where}.gamma", 0.0, 1e6, lo_open=True),
        "degree": doc.integer(d["degree"], f"{where}.degree", 1, MAX_DEGREE),
        "coef0": doc.number(d["coef0"], f"{where}.coef0", -1e6, 1e6),
    }
    rows, cols = doc.sequence(d["sv_shape"], f"{where}.sv_shape", 2, 2)
    rows = doc.integer(rows, f"{where}.sv_shape", 1, doc.MAX_ELEMENTS)
    doc.integer(cols, f"{where}.sv_shape", n_features, n_features)
    # The dual coefficients' text holds 8 bytes per row: checked first, it bounds what follows.
    dual = doc.b64_floats(d["dual_coef"], f"{where}.dual_coef", rows)
    return _RestoredSVM(
        intercept=doc.number(d["intercept"], f"{where}.intercept"),
        kernel=kernel,
        sv=_csr_from(d, f"{where}.sv", rows, n_features),
        dual=dual,
    )


def _csr_from(d: dict[str, Any], where: str, rows: int, cols: int) -> sparse.csr_matrix:
    """A CSR matrix whose row pointers start at 0 and never decrease, and whose column indices
    are in range, with as many values as indices."""
    indptr = doc.int_list(d["sv_indptr"], f"{where}_indptr", rows + 1, 0, doc.MAX_ELEMENTS)
    if indptr[0] != 0 or (np.diff(indptr) < 0).any():
        raise DocumentError(f"{where}_indptr: must start at 0 and never decrease")
    nnz = int(indptr[-1])
    indices = doc.int_list(d["sv_indices"], f"{where}_indices", nnz, 0, cols - 1)
    data = doc.b64_floats(d["sv_data"], f"{where}_data", nnz)
    return sparse.csr_matrix((data, indices, indptr), shape=(rows, cols))
