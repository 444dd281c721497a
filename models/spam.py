"""Spam filter of SPEC §7: a bag-of-words representation and an SVM, as one scikit-learn pipeline.

Fixes on purpose (SPEC §11.8-9): the vectoriser is fitted inside each cross-validation fold (no
leakage), folds are shuffled with a seed, lowercase is an option. Scores are calibrated with a
Platt sigmoid fitted on out-of-fold decision values. The fitted state serialises to plain JSON
(vocabularies, idf and weight vectors as base64 float arrays): never pickle.
"""

from __future__ import annotations

import base64
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.metrics.pairwise import polynomial_kernel, rbf_kernel, sigmoid_kernel
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import SVC, LinearSVC

METRICS = ("accuracy", "average_precision", "f1", "precision", "recall", "roc_auc")
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "average_precision": "Average Precision",
    "f1": "F1",
    "precision": "Precision",
    "recall": "Recall",
    "roc_auc": "ROC AUC",
}


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


def _bow(config: SpamFilterConfig, analyzer: str, ngrams: tuple[int, int], **fixed: Any) -> Any:
    cls = TfidfVectorizer if config.use_tfidf else CountVectorizer
    word = analyzer == "word"
    return cls(
        analyzer=analyzer,
        ngram_range=ngrams,
        lowercase=config.lowercase,
        strip_accents=config.strip_accents,
        binary=config.binary,
        min_df=config.min_df if word else 1,
        max_df=config.max_df if word else 1.0,
        max_features=config.max_features if word else None,
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
    name: str = "comments"
    version: int = 0
    vectoriser: Any = None
    classifier: Any = None
    platt: tuple[float, float] = (1.0, 0.0)
    cv: CrossValidation | None = None
    input_dimensionality: tuple[int, int] = (0, 0)
    training_size: int = 0
    duration_s: float = 0.0
    trained_at: float = 0.0
    # Linear SVMs over bags of words: a term-table scorer (see _LinearScorer), built with the
    # state it reads, so a worker has it before it freezes the heap after a model load.
    scorer: _LinearScorer | None = field(default=None, repr=False, compare=False)

    def fit(self, texts: list[str], labels: list[bool] | np.ndarray) -> SpamFilter:
        """Train, cross-validate (vectoriser inside the folds) and calibrate the scores."""
        start = time.perf_counter()
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
        lr = LogisticRegression(C=1e6).fit(decision.reshape(-1, 1), y)
        self.platt = (float(lr.coef_[0, 0]), float(lr.intercept_[0]))
        n_features = self.vectoriser.transform(texts[:1]).shape[1]
        self.input_dimensionality = (len(texts), int(n_features))
        self.training_size = len(texts)
        self.version += 1
        self.duration_s = time.perf_counter() - start
        self.trained_at = time.time()
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
        scores = []
        for _, test in splitter.split(texts_arr, y):
            d = decision[test]
            needs_scores = self.config.cv_metric in ("average_precision", "roc_auc")
            scores.append(float(scorer(y[test], d if needs_scores else (d > 0).astype(int))))
        arr = np.asarray(scores)
        cv = CrossValidation(
            self.config.cv_metric, folds, scores, float(arr.mean()), float(2 * arr.std())
        )
        return cv, decision

    def decision_function(self, texts: list[str]) -> np.ndarray:
        if self.classifier is None:
            raise RuntimeError("spam filter is not trained")
        if self.scorer is not None:
            return np.fromiter(map(self.scorer.score, texts), dtype=np.float64, count=len(texts))
        return np.asarray(
            self.classifier.decision_function(self.vectoriser.transform(texts))
        ).ravel()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated probability of spam (Platt scaling of the SVM's decision value)."""
        return self._calibrate(self.decision_function(texts))

    def _calibrate(self, decision: np.ndarray) -> np.ndarray:
        a, b = self.platt
        z = np.clip(a * decision + b, -50, 50)
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.decision_function(texts) > 0

    def predict_with_scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and calibrated scores from one pass of the vectoriser (the hot path's call)."""
        decision = self.decision_function(texts)
        return decision > 0, self._calibrate(decision)

    def inference_record(self) -> dict[str, Any]:
        """The admin's "current inference" block (SPEC §7.5)."""
        rows, cols = self.input_dimensionality
        return {
            "version": self.version,
            "vectorizer": self.config.vectoriser_summary(),
            "classifier": self.config.classifier_summary(),
            "input_dimensionality": f"{rows} rows x {cols} columns",
            "cross_validation": self.cv.display() if self.cv else None,
            "cv": asdict(self.cv) if self.cv else None,
            "training_size": self.training_size,
            "duration_s": self.duration_s,
            "trained_at": self.trained_at,
            "settings": asdict(self.config),
        }

    # -- safe serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        if self.classifier is None:
            raise RuntimeError("spam filter is not trained")
        return {
            "kind": "spam_filter",
            "name": self.name,
            "config": asdict(self.config),
            "vectoriser": _vectoriser_state(self.vectoriser),
            "classifier": _classifier_state(self.classifier),
            "platt": list(self.platt),
            "cv": asdict(self.cv) if self.cv else None,
            "input_dimensionality": list(self.input_dimensionality),
            "training_size": self.training_size,
            "version": self.version,
            "duration_s": self.duration_s,
            "trained_at": self.trained_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpamFilter:
        config = SpamFilterConfig(**d["config"])
        model = cls(config=config, name=d["name"], version=int(d["version"]))
        model.vectoriser = _restore_vectoriser(config, d["vectoriser"])
        model.classifier = _RestoredSVM(d["classifier"])
        model.scorer = _LinearScorer.build(model.vectoriser, model.classifier)
        model.platt = (float(d["platt"][0]), float(d["platt"][1]))
        model.cv = CrossValidation(**d["cv"]) if d["cv"] else None
        model.input_dimensionality = (
            int(d["input_dimensionality"][0]),
            int(d["input_dimensionality"][1]),
        )
        model.training_size = int(d["training_size"])
        model.duration_s = float(d["duration_s"])
        model.trained_at = float(d["trained_at"])
        return model


class _LinearScorer:
    """Decision value of a linear SVM over bag-of-words parts, one text at a time from a table
    term -> (weight x idf, idf).

    Why: it equals ``classifier.decision_function(vectoriser.transform(texts))`` (tf or binary
    counts, times idf, l2-normalised per part, dotted with the part's weights), but scikit-learn
    spends ~0.3 ms per call on input validation and sparse set-up, most of the cost of labelling
    the one or two comments a streaming fetch holds.
    """

    def __init__(
        self, parts: list[tuple[Any, dict[str, tuple[float, float]], bool, bool]], intercept: float
    ) -> None:
        self.parts = parts  # (analyzer, term table, binary, l2-normalised)
        self.intercept = intercept

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
        parts, offset = [], 0
        for v in vectorisers:
            if not isinstance(v, CountVectorizer):
                return None
            tfidf = isinstance(v, TfidfVectorizer)
            if tfidf and (v.norm not in ("l2", None) or v.sublinear_tf):
                return None
            terms = _terms(v)
            n = len(terms)
            idf = v.idf_ if tfidf else np.ones(n)
            w = coef[offset : offset + n]
            table = dict(
                zip(terms, zip((w * idf).tolist(), idf.tolist(), strict=True), strict=True)
            )
            parts.append((v.build_analyzer(), table, bool(v.binary), tfidf and v.norm == "l2"))
            offset += n
        if offset != len(coef):
            return None
        return cls(parts, intercept)

    def score(self, text: str) -> float:
        total = self.intercept
        for analyze, table, binary, l2 in self.parts:
            dot = squares = 0.0
            for term, count in Counter(analyze(text)).items():
                entry = table.get(term)
                if entry is None:
                    continue
                tf = 1.0 if binary else float(count)
                dot += tf * entry[0]
                squares += (tf * entry[1]) ** 2
            if l2 and squares > 0.0:
                dot /= math.sqrt(squares)
            total += dot
        return total


def _linear_weights(classifier: Any) -> tuple[np.ndarray, float] | None:
    """(coef, intercept) of a linear SVM, fitted or restored; None for kernel SVMs."""
    if isinstance(classifier, _RestoredSVM):
        if classifier.state["type"] != "linear":
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


def _unb64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f8").copy()


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


def _restore_single(
    config: SpamFilterConfig, state: dict[str, Any], analyzer: str, ngrams: tuple
) -> Any:
    if state["type"] == "code_points":
        cp = CodePoints()
        cp.length_ = int(state["length"])
        return cp
    vocabulary = {term: i for i, term in enumerate(state["terms"])}
    v = _bow(
        replace(config, min_df=1, max_df=1.0, max_features=None),
        analyzer,
        ngrams,
        vocabulary=vocabulary,
    )
    if "idf" in state:
        v.idf_ = _unb64(state["idf"])
    v._validate_vocabulary()
    return v


def _restore_vectoriser(config: SpamFilterConfig, state: dict[str, Any]) -> Any:
    if state["type"] == "union":
        main = _restore_single(config, state["parts"][0], config.analyzer, config.ngram_range)
        char = _restore_single(config, state["parts"][1], "char_wb", config.char_wb_range)  # type: ignore[arg-type]
        return FeatureUnion([("bow", main), ("char_wb", char)])
    return _restore_single(config, state, config.analyzer, config.ngram_range)


def _classifier_state(c: Any) -> dict[str, Any]:
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
    """Decision function of a trained SVM rebuilt from its JSON state (linear or kernel)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.intercept = float(state["intercept"])
        if state["type"] == "linear":
            self.coef = _unb64(state["coef"])
        else:
            self.sv = sparse.csr_matrix(
                (_unb64(state["sv_data"]), state["sv_indices"], state["sv_indptr"]),
                shape=state["sv_shape"],
            )
            self.dual = _unb64(state["dual_coef"])

    def decision_function(self, X: Any) -> np.ndarray:
        s = self.state
        if s["type"] == "linear":
            return np.asarray(X @ self.coef).ravel() + self.intercept
        if s["kernel"] == "rbf":
            k = rbf_kernel(X, self.sv, gamma=s["gamma"])
        elif s["kernel"] == "poly":
            k = polynomial_kernel(
                X, self.sv, degree=s["degree"], gamma=s["gamma"], coef0=s["coef0"]
            )
        else:
            k = sigmoid_kernel(X, self.sv, gamma=s["gamma"], coef0=s["coef0"])
        return np.asarray(k @ self.dual).ravel() + self.intercept
