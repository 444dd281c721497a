"""The owners' re-assignment pass (streams.serving.Reassigner), pure logic: the memory store, the
producer, the row writes and the Redis mirror are in-memory fakes. A pass assigns every row of
its partition with the serving version (labels checked against the mixture's own predict),
produces each changed user's assignment before writing the row, leaves the other partitions
alone, and a row in flight holds the users agent back until it is written."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from models.mixture import BayesianGaussianMixture
from models.normal import NormalPopulation
from streams import serving as serving_module
from streams.serving import FEATURES, Reassigner, ServingModel
from streams.users import row_partition

PARTITION = 0


def document() -> dict[str, Any]:
    """A served clustering version: two well-separated groups, BN1 over avg1."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(10, 1, (80, 2)), rng.normal(40, 1, (80, 2))])
    mixture = BayesianGaussianMixture(n_components=4, n_restarts=2, seed=1, features=FEATURES)
    population = NormalPopulation().fit(rng.normal(10, 2, 200))
    return {  # the version is the publisher's (streams.clustering), stamped as it publishes
        "name": "clustering",
        "version": 1,
        "mixture": {**mixture.fit(X).to_dict(), "version": 1, "trained_at": 1.0e9},
        "population": {**population.to_dict(), "version": 1},
    }


class Fakes:
    """The store's rows, what was produced and written, in order."""

    def __init__(self, rows: dict[bytes, dict[str, Any]]) -> None:
        self.store = SimpleNamespace(data=rows)  # Faust's memory store keeps its rows in .data
        self.events: list[tuple[str, int, list]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, topic: str, partition: int, records: list) -> None:
        self.events.append(("produced", partition, [k for k, _ in records]))

    async def write_users(self, partition: int, rows: list, erased: list) -> None:
        await self.gate.wait()
        for key, profile in rows:
            self.store.data[key] = profile
        self.events.append(("written", partition, [k for k, _ in rows]))


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    rng = np.random.default_rng(1)
    rows = {}
    for i in range(2500):
        centre = 10.0 if i % 2 else 40.0
        a, b = map(float, rng.normal(centre, 1, 2))
        profile = {"user_id": f"u{i}", FEATURES[0]: a, FEATURES[1]: b, "avg1": 10.0 + i % 3}
        rows[f"u{i}".encode()] = profile
    fakes = Fakes(rows)
    served = ServingModel()
    served.load(document())
    monkeypatch.setattr(serving_module, "serving", served)
    monkeypatch.setattr(serving_module, "users_table", SimpleNamespace(data=fakes.store))
    monkeypatch.setattr(serving_module, "batch_producer", SimpleNamespace(send=fakes.send))
    monkeypatch.setattr(serving_module, "write_users", fakes.write_users)
    mirror = SimpleNamespace(enabled=False, pending=(), flush_soon=lambda: None)
    monkeypatch.setattr(serving_module, "mirror", mirror)
    return fakes


def test_a_pass_assigns_every_row_of_its_partition_once(fakes: Fakes) -> None:
    before = {k: dict(v) for k, v in fakes.store.data.items()}
    mine = [k for k in before if row_partition(k) == PARTITION]
    assert len(before) > 2 * serving_module.SLICE  # the memory walk takes three slices
    served = serving_module.serving
    expected = served.mixture.predict(np.array([[before[k][f] for f in FEATURES] for k in mine]))

    async def scenario() -> Reassigner:
        reassigner = Reassigner()
        reassigner.request(PARTITION, served.version)
        await reassigner.pass_partition(PARTITION)
        return reassigner

    reassigner = asyncio.run(scenario())
    rows = fakes.store.data
    assert [rows[k]["cluster"] for k in mine] == [str(label) for label in expected]
    assert {rows[k]["model_version"] for k in mine} == {served.version}
    assert all(rows[k]["atypical"] in (True, False) for k in mine)
    others = [k for k in before if row_partition(k) != PARTITION]
    assert all(rows[k] == before[k] for k in others)  # other partitions untouched
    produced = [k for what, _, keys in fakes.events if what == "produced" for k in keys]
    written = [k for what, _, keys in fakes.events if what == "written" for k in keys]
    assert sorted(produced) == sorted(written) == sorted(mine)  # each changed user once
    for key in mine:  # its assignment produced before its row was written
        first = [i for i, (what, _, keys) in enumerate(fakes.events) if key in keys]
        assert [fakes.events[i][0] for i in first] == ["produced", "written"]
    assert reassigner.state()["due"] == [] and reassigner.done == {PARTITION: served.version}


def test_a_second_pass_with_the_same_version_changes_nothing(fakes: Fakes) -> None:
    served = serving_module.serving

    async def scenario() -> Reassigner:
        reassigner = Reassigner()
        reassigner.request(PARTITION, served.version)
        await reassigner.pass_partition(PARTITION)
        fakes.events.clear()
        reassigner.request(PARTITION, served.version)  # already done with it: not due
        assert reassigner.state()["due"] == []
        reassigner.due.add(PARTITION)  # as after a rebalance that gave it back
        await reassigner.pass_partition(PARTITION)
        return reassigner

    asyncio.run(scenario())
    assert fakes.events == []


def test_the_users_agent_waits_for_rows_in_flight(fakes: Fakes) -> None:
    served = serving_module.serving
    mine = [k for k in fakes.store.data if row_partition(k) == PARTITION]

    async def scenario() -> list[str]:
        order: list[str] = []
        fakes.gate.clear()  # row writes hang until the gate opens
        reassigner = Reassigner()
        reassigner.request(PARTITION, served.version)
        walk = asyncio.ensure_future(reassigner.pass_partition(PARTITION))
        async with asyncio.timeout(10):
            while mine[0] not in reassigner.in_flight[PARTITION]:
                await asyncio.sleep(0.001)

        async def agent() -> None:
            async with reassigner.lock(PARTITION):
                await reassigner.settle(PARTITION, {mine[0]})
                order.append("agent reads the row")

        waiting = asyncio.ensure_future(agent())
        await asyncio.sleep(0.05)
        order.append("row written")
        fakes.gate.set()
        await asyncio.wait_for(asyncio.gather(walk, waiting), 10)
        return order

    assert asyncio.run(scenario()) == ["row written", "agent reads the row"]
    assert fakes.store.data[mine[0]]["model_version"] == served.version


def test_a_document_serves_only_when_its_deployment_fields_agree() -> None:
    """The estimators hold no version or times: the publisher writes them into the document's
    mixture and population objects, and the loader checks them against the document before the
    estimators load the rest (streams.records.unstamp)."""
    good = document()

    def refused(mixture: dict | None = None, population: dict | None = None) -> str:
        bad = {
            **good,
            "mixture": {**good["mixture"], **(mixture or {})},
            "population": {**good["population"], **(population or {})},
        }
        served = ServingModel()
        with pytest.raises(Exception) as caught:
            served.load(bad)
        assert served.version == 0 and served.mixture is None
        return str(caught.value)

    assert "version 2 is not the document's 1" in refused(mixture={"version": 2})
    assert "version True" in refused(mixture={"version": True})
    assert "population version 2" in refused(population={"version": 2})
    assert "trained_at must be a non-negative number" in refused(mixture={"trained_at": -1})
    assert "duration_s must be" in refused(mixture={"duration_s": "1 s"})
    assert "unknown" in refused(mixture={"fitted_by": "me"}).lower()  # the estimator's own keys
    no_version = {k: v for k, v in good["mixture"].items() if k != "version"}
    with pytest.raises(Exception, match="mixture version None"):
        ServingModel().load({**good, "mixture": no_version})
    # A rollback renumbers the mixture only: a population of an older version still serves.
    rollback = {**good, "version": 3, "mixture": {**good["mixture"], "version": 3}}
    served = ServingModel()
    assert served.load(rollback) and served.version == 3
    X = np.array([[10.0, 10.0], [40.0, 40.0]])
    reference = BayesianGaussianMixture.from_dict(
        {k: v for k, v in good["mixture"].items() if k not in ("version", "trained_at")}
    )
    assert served.mixture is not None
    assert served.mixture.predict(X).tolist() == reference.predict(X).tolist()
