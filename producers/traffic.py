"""Simulated site traffic: new users, page views whose averages converge to each user's generated
profile, and comments (spam and ham). Deterministic for a given seed."""

from __future__ import annotations

import csv
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from producers.population import Population, generate
from streams import topics as t
from streams.records import PAGE_TYPES, Comment, NewUser, PageTime

# Gamma shape of a page view's seconds: positive, mean exactly the target, sd = mean / 5.
SHAPE = 25.0
HAM = (
    "Great song, I listen to it every day",
    "This video brings back so many memories",
    "Who is watching this in {year}?",
    "The chorus at {minute}:{second:02d} is amazing",
    "I love the dancing in this one",
    "My little brother sings this all the time",
)
SPAM = (
    "Check out my channel for free gift cards http://free-{n}.example",
    "Subscribe to me and I will subscribe back!!! {n}",
    "Make ${n} a day working from home, click here",
    "Please visit my page and like my new video {n}",
    "FREE iPhone giveaway, go to www.win-{n}.example now",
)


@dataclass(frozen=True)
class Event:
    topic: str
    key: str
    value: PageTime | NewUser | Comment


def load_comment_corpus(path: str | Path) -> list[tuple[str, bool]]:
    """(text, is_spam) pairs from a YouTube Spam Collection CSV (CONTENT, CLASS columns)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return [
            (row["CONTENT"].rstrip("\ufeff"), row["CLASS"] == "1") for row in csv.DictReader(fh)
        ]


class Traffic:
    """An endless, seeded stream of site events drawn from a :class:`Population`."""

    def __init__(
        self,
        population: Population,
        seed: int = 0,
        comments_per_event: float = 0.0,
        corpus: list[tuple[str, bool]] | None = None,
    ) -> None:
        self.population = population
        self.rng = np.random.default_rng(seed)
        self.comments_per_event = comments_per_event
        self.corpus = corpus
        self.ids = population.user_ids()
        n = population.size
        self.share_a = np.where(
            population.visits_pages > 0,
            population.visits_pages_a / np.maximum(population.visits_pages, 1),
            0.4,
        )
        # Mean seconds on pages other than A so the all-pages mean converges to avg_time_pages.
        other = (population.avg_time_pages - self.share_a * population.avg_time_pages_a) / (
            1 - self.share_a
        )
        self.mean_a = np.maximum(population.avg_time_pages_a, 0.5)
        self.mean_other = np.maximum(other, 0.5)
        self.n = n
        self.comment_seq = 0

    def new_users(self) -> Iterator[Event]:
        p = self.population
        for i, uid in enumerate(self.ids):
            sex = "F" if p.sex[i] else "M"
            value = NewUser(user_id=uid, age=int(p.age[i]), sex=sex, avg1=float(p.avg1[i]))
            yield Event(t.NEW_USERS, uid, value)

    def page_view(self) -> Event:
        i = int(self.rng.integers(self.n))
        if self.rng.random() < self.share_a[i]:
            page, mean = "A", self.mean_a[i]
        else:
            page, mean = PAGE_TYPES[1 + int(self.rng.integers(9))], self.mean_other[i]
        seconds = float(self.rng.gamma(SHAPE, mean / SHAPE))
        uid = self.ids[i]
        return Event(t.PAGE_TIMES, uid, PageTime(user_id=uid, page_type=page, seconds=seconds))

    def labelled_text(self) -> tuple[str, bool]:
        """A comment text and whether it is spam: from the corpus, else from the templates."""
        if self.corpus:
            return self.corpus[int(self.rng.integers(len(self.corpus)))]
        spam = bool(self.rng.random() < 0.5)
        templates = SPAM if spam else HAM
        text = templates[int(self.rng.integers(len(templates)))].format(
            n=int(self.rng.integers(1000)),
            year=2020 + int(self.rng.integers(7)),
            minute=int(self.rng.integers(4)),
            second=int(self.rng.integers(60)),
        )
        return text, spam

    def comment(self) -> Event:
        self.comment_seq += 1
        cid = f"c{self.comment_seq}"
        uid = self.ids[int(self.rng.integers(self.n))]
        text, _ = self.labelled_text()
        return Event(t.COMMENTS, cid, Comment(comment_id=cid, text=text, user_id=uid))

    def history(self) -> Iterator[Event]:
        """Each user's past visits as page views whose means are exactly the generated profile.

        User i gets visits_pages_a[i] views of type A averaging avg_time_pages_a[i], and the rest
        of visits_pages[i] on B..J, so that the all-pages average is avg_time_pages[i]: streamed
        through the pipeline, they rebuild the original UserInfo table. Users are interleaved.
        """
        p = self.population
        plans = []
        for i, uid in enumerate(self.ids):
            n_all, n_a = int(p.visits_pages[i]), int(p.visits_pages_a[i])
            n_other = n_all - n_a
            other_mean = (n_all * p.avg_time_pages[i] - n_a * p.avg_time_pages_a[i]) / max(
                n_other, 1
            )
            views = [("A", s) for s in self._exact_mean(p.avg_time_pages_a[i], n_a)]
            views += [
                (PAGE_TYPES[1 + int(self.rng.integers(9))], s)
                for s in self._exact_mean(other_mean, n_other)
            ]
            plans.append([uid, views])
        while plans:
            k = int(self.rng.integers(len(plans)))
            uid, views = plans[k]
            page, seconds = views.pop()
            if not views:
                plans[k] = plans[-1]
                plans.pop()
            yield Event(t.PAGE_TIMES, uid, PageTime(uid, page, float(seconds)))

    def _exact_mean(self, mean: float, n: int) -> list[float]:
        """n positive gamma draws rescaled so that their mean is `mean` (to rounding)."""
        if n <= 0 or mean <= 0:
            return []
        draws = self.rng.gamma(SHAPE, 1.0, n)
        return (draws * (mean / draws.mean())).tolist()

    def events(self) -> Iterator[Event]:
        """New-user events for the whole population first, then page views and comments."""
        yield from self.new_users()
        yield from self.live()

    def live(self) -> Iterator[Event]:
        """Page views (and comments) of random users, forever."""
        while True:
            yield self.page_view()
            if self.comments_per_event and self.rng.random() < self.comments_per_event:
                yield self.comment()


def simulate(
    send: Callable[[Event], Any],
    users: int = 200,
    rate: float = 100.0,
    comments_rate: float = 0.0,
    duration: float | None = None,
    seed: int = 0,
    corpus: list[tuple[str, bool]] | None = None,
    history: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Send events at about `rate` page views per second; return how many were sent.

    With `history`, the new users and their past visits (:meth:`Traffic.history`) go first,
    unpaced, so the live traffic starts from the original population's profiles.
    """
    traffic = Traffic(
        generate(users),
        seed=seed,
        comments_per_event=comments_rate / rate if rate else 0,
        corpus=corpus,
    )
    sent = 0
    if history:
        for event in itertools.chain(traffic.new_users(), traffic.history()):
            send(event)
            sent += 1
    start = time.monotonic()
    views = 0
    live = traffic.events() if not history else traffic.live()
    for event in live:
        if should_stop() or (duration is not None and time.monotonic() - start >= duration):
            break
        send(event)
        sent += 1
        if event.topic == t.PAGE_TIMES:
            views += 1
            ahead = views / rate - (time.monotonic() - start) if rate else 0
            if ahead > 0:
                time.sleep(ahead)
    return sent
