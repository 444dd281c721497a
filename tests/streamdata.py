"""A known stream for integration tests, and its ground truth computed independently
(plain sums and counts, not the pipeline's incremental means)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field

from streams.records import PAGE_TYPES


@dataclass
class KnownStream:
    """(topic, key, value bytes) in production order, and what each valid event implies."""

    records: list[tuple[str, str, bytes]] = field(default_factory=list)
    sums: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    demographics: dict[str, dict] = field(default_factory=dict)
    bad: list[tuple[str, str, bytes, str]] = field(default_factory=list)  # + the expected reason
    page_views: int = 0
    new_users: int = 0

    def weight(self, page: int = 1, new_user: int = 5) -> int:
        return self.page_views * page + self.new_users * new_user

    def expected_user(self, uid: str) -> dict:
        out: dict = {"user_id": uid}
        for suffix in ["", *(f"_{p.lower()}" for p in PAGE_TYPES)]:
            n = self.counts[uid][suffix]
            out[f"visits_pages{suffix}"] = n
            out[f"avg_time_pages{suffix}"] = self.sums[uid][suffix] / n if n else 0.0
        out.update(self.demographics.get(uid, {}))
        return out

    @property
    def users(self) -> list[str]:
        return sorted(set(self.counts) | set(self.demographics))


BAD_PAGE_TIMES: list[tuple[bytes, str]] = [
    (b"{not json", "malformed JSON"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b'{"page_type": "A", "seconds": 3}', "missing field 'user_id'"),
    (b'{"user_id": "KEY", "page_type": "AB", "seconds": 3}', "page_type must be one letter"),
    (b'{"user_id": "KEY", "page_type": "K", "seconds": 3}', "page_type must be one letter"),
    (b'{"user_id": "KEY", "page_type": "", "seconds": 3}', "page_type must be one letter"),
    (b'{"user_id": "KEY", "page_type": "A", "seconds": "3"}', "seconds must be a number"),
    (b'{"user_id": "KEY", "page_type": "A", "seconds": NaN}', "seconds must be finite"),
    (b'{"user_id": "KEY", "page_type": "A", "seconds": Infinity}', "seconds must be finite"),
    (b'{"user_id": "KEY", "page_type": "A", "seconds": -4}', "seconds must be positive"),
    (b'{"user_id": "KEY", "page_type": "A", "seconds": 0}', "seconds must be positive"),
    (b'{"user_id": "KEY", "page_type": "A", "seconds": 1e12}', "above the cap"),
    (b'{"user_id": ["KEY"], "page_type": "A", "seconds": 3}', "user_id must be a string"),
    (b'{"user_id": "KEY", "page_type": "A", "seconds": true}', "seconds must be a number"),
    (b"[" * 100000 + b"]" * 100000, "payload too large"),
    (b"\xff\xfe\x00garbage", "malformed JSON"),
    (
        b'{"metric": "clicks", "user_id": "KEY", "page_type": "A", "time_spent": 3}',
        "unsupported metric",
    ),
]
BAD_NEW_USERS: list[tuple[bytes, str]] = [
    (b'{"user_id": "KEY", "age": "old"}', "age must be an integer"),
    (b'{"user_id": "KEY", "sex": "X"}', "sex must be 'M' or 'F'"),
    (b'{"age": 3}', "missing field 'user_id'"),
]


def build(n_users: int = 300, n_views: int = 5000, seed: int = 7) -> KnownStream:
    """Page views on all types, interleaved new users (some after their first views, some never),
    a few beacon-format records, and every kind of bad record."""
    rng = random.Random(seed)
    ks = KnownStream()
    uids = [f"u{i}" for i in range(n_users)]
    joiners = set(rng.sample(uids, int(n_users * 0.8)))
    pending_joins = sorted(joiners, key=lambda _: rng.random())
    bad = [("page-times", b, r) for b, r in BAD_PAGE_TIMES] + [
        ("new-users", b, r) for b, r in BAD_NEW_USERS
    ]
    bad_at = {rng.randrange(n_views): item for item in bad}
    for i in range(n_views):
        if pending_joins and rng.random() < 0.08:
            _add_new_user(ks, rng, pending_joins.pop())
        uid = rng.choice(uids)
        page = PAGE_TYPES[i % 10] if i < 10 else rng.choice(PAGE_TYPES)
        seconds = round(rng.lognormvariate(3.0, 0.6), 6)
        if rng.random() < 0.05:
            value = {
                "metric": "time_spent",
                "user_id": uid,
                "page_type": page,
                "time_spent": seconds,
            }
        else:
            value = {"user_id": uid, "page_type": page, "seconds": seconds}
        ks.records.append(("page-times", uid, json.dumps(value).encode()))
        ks.page_views += 1
        for suffix in ("", f"_{page.lower()}"):
            ks.sums[uid][suffix] += seconds
            ks.counts[uid][suffix] += 1
        if i in bad_at:
            topic, payload, reason = bad_at[i]
            key = rng.choice(uids)
            payload = payload.replace(b"KEY", key.encode())
            ks.records.append((topic, key, payload))
            ks.bad.append((topic, key, payload, reason))
    for uid in pending_joins:
        _add_new_user(ks, rng, uid)
    return ks


def _add_new_user(ks: KnownStream, rng: random.Random, uid: str) -> None:
    demo = {"age": rng.randint(18, 70), "sex": rng.choice("MF"), "avg1": round(rng.gauss(10, 5), 6)}
    ks.records.append(("new-users", uid, json.dumps({"user_id": uid, **demo}).encode()))
    ks.demographics[uid] = demo
    ks.new_users += 1
