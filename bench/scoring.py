"""Spam filter scoring cost on the CPU (no broker): microseconds per comment of
`SpamFilter.predict_with_scores` for batches of YouTube comments and for 20,000-character
comments, for each preset, with the scorer of an earlier revision (before) and the working
tree's (after); optionally leave-one-video-out accuracy of the presets.

    python bench/scoring.py --youtube ../shared/data/youtube
    python bench/scoring.py --youtube ../shared/data/youtube --accuracy   # plus LOVO accuracy

`--before REV` (default 39c1fa4, the last revision with the per-n-gram Python scorer) is loaded
with `git show REV:models/spam.py` as a module of its own; every filter is trained on the same
comments (all four videos, cv_folds 0: calibration does not change the cost). Each cell is the
median of `--repeats` runs, the runs of all the filters interleaved (the same machine load for
each); a run scores the first `--comments` comments (`--long` 20,000-character ones) in
consecutive batches of the row's size, after a word cache (the new scorer's) was emptied and
filled from the other comments: the measured comments are new, most of their words known.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import spam  # noqa: E402
from models.corpora import load_youtube  # noqa: E402

BATCHES = (1, 2, 10, 100)
LONG_CHARS = 20_000


def module_at(revision: str) -> ModuleType:
    """models/spam.py as it was at `revision`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:models/spam.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "spam_before.py"
    path.write_text(source)
    module_spec = importlib.util.spec_from_file_location("spam_before", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["spam_before"] = module
    module_spec.loader.exec_module(module)
    return module


def per_comment_us(score: Callable[[list[str]], Any], texts: list[str], batch: int) -> float:
    """Microseconds per comment of scoring `texts` in consecutive batches of `batch`."""
    gc.collect()
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        score(texts[i : i + batch])
    return (time.perf_counter() - start) / len(texts) * 1e6


def warm(model: Any, others: list[str]) -> None:
    """A worker's steady state: the word cache (if the scorer has one) emptied, then filled by
    scoring other comments, so the measured comments are new but most of their words known."""
    cache = getattr(model.scorer, "cache", None)
    if cache is not None:
        cache.clear()
        for i in range(0, len(others), 100):
            model.predict_with_scores(others[i : i + 100])


def long_comments(texts: list[str], count: int) -> list[str]:
    """`count` comments of LONG_CHARS characters, each YouTube comments joined from a shifted
    start (real words, so n-grams hit the vocabulary as short comments do)."""
    out = []
    for k in range(count):
        parts, size, i = [], 0, k * 37
        while size < LONG_CHARS:
            text = texts[i % len(texts)]
            parts.append(text)
            size += len(text) + 1
            i += 1
        out.append(" ".join(parts)[:LONG_CHARS])
    return out


def cost_table(args: argparse.Namespace, texts: list[str], labels: list[bool]) -> None:
    before = module_at(args.before)
    models = {}
    for preset in args.presets:
        for name, module in (("before", before), ("after", spam)):
            config = replace(module.PRESETS[preset], cv_folds=0)
            models[preset, name] = module.SpamFilter(config).fit(texts, labels)
    workloads = [(f"{b}", texts[: args.comments], b) for b in BATCHES]
    longs = long_comments(texts, args.long)
    workloads += [(f"{b} x {LONG_CHARS:,} chars", longs, b) for b in (1, 10) if b <= len(longs)]
    print(f"Before: {args.before}; after: working tree. Median of {args.repeats} runs.\n")
    columns = " | ".join(f"{p} before | {p} after" for p in args.presets)
    print(f"| µs per comment, batch of | {columns} |")
    print("|---" * (1 + 2 * len(args.presets)) + "|")
    for label, sample, batch in workloads:
        runs: dict[tuple[str, str], list[float]] = {key: [] for key in models}
        for _ in range(args.repeats):  # interleaved: every model sees the same machine load
            for key, model in models.items():
                warm(model, texts[args.comments :])
                runs[key].append(per_comment_us(model.predict_with_scores, sample, batch))
        cells = [f"{statistics.median(runs[key]):,.1f}" for key in models]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


def leave_one_video_out(texts: list[str], labels: list[bool], sources: list[str]) -> None:
    """Train each preset as the trainer does (10-fold CV for the calibration) on three videos,
    label the fourth; the mean and minimum accuracy over the four."""
    y = np.asarray(labels)
    print("\n| preset | leave-one-video-out accuracy | per video |")
    print("|---|---|---|")
    for preset in ("example", "best"):
        accuracy = []
        for video in sorted(set(sources)):
            train = [i for i, s in enumerate(sources) if s != video]
            test = [i for i, s in enumerate(sources) if s == video]
            model = spam.SpamFilter(spam.PRESETS[preset]).fit([texts[i] for i in train], y[train])
            predicted = model.predict([texts[i] for i in test])
            accuracy.append(float(np.mean(predicted == y[test])))
        each = ", ".join(f"{a:.3f}" for a in accuracy)
        print(f"| {preset} | {np.mean(accuracy):.3f} (min {min(accuracy):.3f}) | {each} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--youtube", default=str(ROOT.parent / "shared" / "data" / "youtube"))
    parser.add_argument("--before", default="39c1fa4")
    parser.add_argument("--presets", nargs="+", default=["example", "best"])
    parser.add_argument("--comments", type=int, default=400)
    parser.add_argument("--long", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--accuracy", action="store_true", help="also leave-one-video-out")
    args = parser.parse_args()
    items = load_youtube(args.youtube)
    texts, labels = [i.text for i in items], [i.is_spam for i in items]
    cost_table(args, texts, labels)
    if args.accuracy:
        leave_one_video_out(texts, labels, [i.source for i in items])


if __name__ == "__main__":
    main()
