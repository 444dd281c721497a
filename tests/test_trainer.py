"""The trainer's scheduling (pure logic, no broker; Faust's add_future replaced by asyncio's):
requests during a run coalesce into one follow-up run, one-off jobs queue behind the run in
progress and never run beside it, and a failed run leaves the trainer able to run again."""

from __future__ import annotations

import asyncio

import pytest

from streams import trainer as trainer_module
from streams.trainer import Trainer


@pytest.fixture(autouse=True)
def plain_futures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_module.app, "add_future", asyncio.ensure_future)


class Script:
    """A run that records its reasons and how many runs or jobs overlap, and waits for `gate`."""

    def __init__(self, fail_first: bool = False) -> None:
        self.reasons: list[str] = []
        self.active = 0
        self.most_active = 0
        self.gate = asyncio.Event()
        self.fail_first = fail_first

    async def step(self, what: str) -> None:
        self.reasons.append(what)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await self.gate.wait()
            if self.fail_first and len(self.reasons) == 1:
                raise RuntimeError("the first run fails")
        finally:
            self.active -= 1

    async def run(self, reason: str) -> None:
        await self.step(reason)


async def until(condition, what: str, timeout: float = 5.0) -> None:
    """Wait for `condition` with a deadline."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout} s") from None


def test_requests_during_a_run_coalesce_into_one_follow_up() -> None:
    async def scenario() -> None:
        script = Script()
        trainer = Trainer("m", script.run)
        trainer.request("counter")
        await until(lambda: script.reasons, "the first run")
        for _ in range(5):
            trainer.request("counter")
        assert trainer.state()["pending"] is True
        script.gate.set()
        await until(lambda: not trainer.running, "the trainer idle")
        assert script.reasons == ["counter", "coalesced"]
        assert (trainer.runs, trainer.failures, script.most_active) == (2, 0, 1)
        assert [h["reason"] for h in trainer.history] == ["counter", "coalesced"]

    asyncio.run(scenario())


def test_jobs_run_after_the_run_in_progress_never_beside_it() -> None:
    async def scenario() -> None:
        script = Script()
        trainer = Trainer("m", script.run)
        trainer.request("cron")
        await until(lambda: script.reasons, "the run")
        trainer.submit("rollback to v3", lambda: script.step("rollback to v3"))
        trainer.request("counter")  # arrives after the job was queued
        assert trainer.state()["queued"] == ["rollback to v3"]
        script.gate.set()
        await until(lambda: not trainer.running, "the trainer idle")
        assert script.reasons == ["cron", "rollback to v3", "coalesced"]
        assert script.most_active == 1

    asyncio.run(scenario())


def test_a_job_alone_starts_the_trainer() -> None:
    async def scenario() -> None:
        script = Script()
        script.gate.set()
        trainer = Trainer("m", script.run)
        trainer.submit("rollback to v1", lambda: script.step("rollback to v1"))
        await until(lambda: not trainer.running and trainer.runs == 1, "the job")
        assert script.reasons == ["rollback to v1"]

    asyncio.run(scenario())


def test_a_failed_run_is_counted_and_the_next_request_runs() -> None:
    async def scenario() -> None:
        script = Script(fail_first=True)
        script.gate.set()
        trainer = Trainer("m", script.run)
        trainer.request("counter")
        await until(lambda: not trainer.running and trainer.failures == 1, "the failed run")
        assert "the first run fails" in (trainer.last_error or "")
        trainer.request("cron")
        await until(lambda: not trainer.running and trainer.runs == 1, "the second run")
        assert script.reasons == ["counter", "cron"]

    asyncio.run(scenario())


def test_erasure_requests_are_counted_for_the_next_run() -> None:
    async def scenario() -> None:
        script = Script()
        script.gate.set()
        trainer = Trainer("m", script.run)
        trainer.request("erasure")
        trainer.request("erasure")
        await until(lambda: not trainer.running, "the runs")
        assert trainer.erasures == 2

    asyncio.run(scenario())


class FakeConsumer:
    """A single-partition topic in memory, read the way follow_compacted reads it."""

    def __init__(self, records: list[Record], arrive_later: list[Record]) -> None:
        self.log = list(records)
        self.later = list(arrive_later)
        self.position_ = 0
        self.fetches = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, tps: list) -> None:
        self.tp = tps[0]

    async def seek_to_beginning(self, tp) -> None:
        self.position_ = 0

    async def end_offsets(self, tps: list) -> dict:
        return {tp: len(self.log) for tp in tps}

    async def position(self, tp) -> int:
        return self.position_

    async def getmany(self, timeout_ms: int) -> dict:
        self.fetches += 1
        if self.position_ == len(self.log) and self.later:  # the topic grows after the start
            self.log += self.later
            self.later = []
        batch = self.log[self.position_ : self.position_ + 2]  # two records per fetch
        self.position_ += len(batch)
        if not batch:
            await asyncio.sleep(0.001)
        return {self.tp: batch} if batch else {}


class Record:
    def __init__(self, offset: int, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = "t", 0, offset, b"k", value


def test_follow_compacted_applies_everything_and_is_ready_at_the_end(monkeypatch) -> None:
    start = [Record(0, b"1"), Record(1, b"bad"), Record(2, None), Record(3, b"4")]
    consumer = FakeConsumer(start, arrive_later=[Record(4, b"5")])
    dead: list[tuple[int, str]] = []

    async def refuse(records) -> None:
        dead.extend((r.offset, reason) for r, reason in records)

    monkeypatch.setattr(trainer_module, "group_less_consumer", lambda: consumer)
    monkeypatch.setattr(trainer_module, "refuse", refuse)
    applied: list[int] = []
    ready_when_applied: dict[int, bool] = {}
    results: list[list] = []
    ready = asyncio.Event()

    def apply(record, refused) -> bool:
        ready_when_applied[record.offset] = ready.is_set()
        if record.value == b"bad":
            refused.append((record, "not a number"))
            return False
        applied.append(record.offset)
        return record.value is not None

    async def scenario() -> None:
        follower = asyncio.ensure_future(
            trainer_module.follow_compacted("t", ready, apply, results.append)
        )
        await until(ready.is_set, "ready")
        await until(lambda: 4 in applied, "the record produced after the start")
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower

    asyncio.run(scenario())
    # everything up to the end at start was applied before ready, what came later after it
    assert ready_when_applied == {0: False, 1: False, 2: False, 3: False, 4: True}
    assert applied == [0, 2, 3, 4]
    assert dead == [(1, "not a number")]
    assert [r for r in results if r] == [[True, False], [False, True], [True]]
