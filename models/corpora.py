"""Labelled corpora for pretraining spam filters (SPEC §7.8, §9).

* YouTube Spam Collection: the UCI zip, a folder of its CSVs, or single CSVs. UTF-8 with a real CSV
  parser (quoted fields hold commas and newlines); the trailing U+FEFF most comments carry is
  stripped; `__MACOSX` entries of the zip are skipped.
* Enron-spam preprocessed archives (tar.gz with ham/ and spam/ folders; Summary.txt is skipped).
"""

from __future__ import annotations

import csv
import io
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabelledText:
    text: str
    is_spam: bool
    source: str


def _youtube_rows(stream: io.TextIOBase, source: str) -> Iterator[LabelledText]:
    reader = csv.DictReader(stream)
    if reader.fieldnames is None or not {"CONTENT", "CLASS"} <= set(reader.fieldnames):
        raise ValueError(f"{source}: not a YouTube Spam Collection CSV (needs CONTENT and CLASS)")
    for row in reader:
        yield LabelledText(row["CONTENT"].rstrip("\ufeff"), row["CLASS"].strip() == "1", source)


def load_youtube(path: str | Path) -> list[LabelledText]:
    """Every comment of a YouTube Spam Collection zip, folder or CSV file."""
    path = Path(path)
    if path.is_dir():
        return [r for f in sorted(path.glob("*.csv")) for r in load_youtube(f)]
    if zipfile.is_zipfile(path):
        out: list[LabelledText] = []
        with zipfile.ZipFile(path) as zf:
            for name in sorted(zf.namelist()):
                if name.endswith(".csv") and "MACOSX" not in name:
                    with zf.open(name) as fh:
                        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
                        out.extend(_youtube_rows(text, Path(name).name))
        return out
    with open(path, encoding="utf-8", newline="") as fh:
        return list(_youtube_rows(fh, path.name))


def load_enron(path: str | Path) -> list[LabelledText]:
    """Every mail of an Enron-spam archive: spam when its folder is `spam`."""
    out: list[LabelledText] = []
    with tarfile.open(path, "r:*") as tf:
        for member in tf:
            parts = Path(member.name).parts
            if not member.isfile() or "Summary" in member.name or len(parts) < 2:
                continue
            folder = parts[-2]
            if folder not in ("ham", "spam"):
                continue
            raw = tf.extractfile(member).read()  # type: ignore[union-attr]
            text = raw.decode("utf-8", errors="replace")
            out.append(LabelledText(text, folder == "spam", member.name))
    return out


def load_any(path: str | Path) -> list[LabelledText]:
    """Pick the loader by what the path is: tar archives are Enron, the rest YouTube."""
    p = Path(path)
    if p.is_file() and tarfile.is_tarfile(p):
        return load_enron(p)
    return load_youtube(p)


def load_all(
    paths: Iterable[str | Path], progress: Callable[[str, int], None] | None = None
) -> list[LabelledText]:
    out: list[LabelledText] = []
    for path in paths:
        items = load_any(path)
        out.extend(items)
        if progress:
            progress(str(path), len(items))
    return out
