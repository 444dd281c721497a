"""A small labelled corpus the tests generate themselves (no downloaded data needed)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

SPAM_WORDS = ["free", "subscribe", "click", "money", "giveaway", "channel", "visit", "win", "cash"]
HAM_WORDS = ["song", "love", "dance", "voice", "memories", "chorus", "video", "beautiful", "lyrics"]
FILLER = ["the", "this", "is", "my", "a", "so", "and", "you", "it", "really"]


def corpus(n: int = 400, seed: int = 0, noise: float = 0.05) -> tuple[list[str], list[bool]]:
    """n short comments, half spam; a few words of the other class mixed in for realism."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        spam = i % 2 == 0
        own, other = (SPAM_WORDS, HAM_WORDS) if spam else (HAM_WORDS, SPAM_WORDS)
        words = [rng.choice(own) for _ in range(rng.randint(2, 5))]
        words += [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
        if rng.random() < noise * 4:
            words.append(rng.choice(other))
        rng.shuffle(words)
        texts.append(" ".join(words) + f" {rng.randint(0, 99)}")
        labels.append(spam if rng.random() > noise else not spam)
    return texts, labels


def write_youtube_csv(path: Path, texts: list[str], labels: list[bool]) -> Path:
    """The corpus as a YouTube Spam Collection CSV (with the collection's trailing U+FEFF)."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["COMMENT_ID", "AUTHOR", "DATE", "CONTENT", "CLASS"])
        for i, (text, spam) in enumerate(zip(texts, labels, strict=True)):
            writer.writerow([str(i), "x", "", text + "\ufeff", "1" if spam else "0"])
    return path
