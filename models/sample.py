"""Uniform samples of users by a keyed hash of their ids (bottom-k), so that a fit's memory and
time are bounded by the sample, not by the population.

A user is in the sample when the hash of its id is among the `size` smallest. Every user has the
same chance whatever its data (the hash sees the id only, and a keyed BLAKE2b is uniform); the
same ids and seed give the same sample, so successive fits see mostly the same users; and the
sample is built from any number of parts (the users changelog's partitions, read one after the
other) with memory bounded by the sample plus one part. The hash is computed before a record's
value is decoded, so a reader can skip the fields of users outside the sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np


def key_hash(key: bytes, seed: int) -> int:
    """A uniform 64-bit hash of `key`, keyed by `seed` (another seed draws another sample)."""
    digest = hashlib.blake2b(key, digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def key_hashes(keys: Iterable[bytes], seed: int) -> np.ndarray:
    return np.fromiter((key_hash(k, seed) for k in keys), dtype=np.uint64)


class BottomK:
    """The rows with the `size` smallest hashes among those added (their keys must be distinct):
    a uniform sample without replacement of the keys, exact whatever the order of the parts.

    Rows are columns of equal length (numpy arrays) named by `add`'s keyword arguments."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a sample holds at least one row")
        self.size = size
        self.hashes = np.empty(0, dtype=np.uint64)
        self.columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def threshold(self) -> int | None:
        """A row whose hash is above this cannot enter any more (None until the sample is full):
        readers skip decoding such rows' features."""
        return int(self.hashes.max()) if len(self.hashes) >= self.size else None

    def add(self, hashes: np.ndarray, **columns: np.ndarray) -> None:
        hashes = np.concatenate([self.hashes, np.asarray(hashes, dtype=np.uint64)])
        merged = {
            name: np.concatenate([self.columns[name], values]) if self.columns else values
            for name, values in columns.items()
        }
        if len(hashes) > self.size:
            keep = np.argpartition(hashes, self.size - 1)[: self.size]
            hashes = hashes[keep]
            merged = {name: values[keep] for name, values in merged.items()}
        self.hashes, self.columns = hashes, merged
