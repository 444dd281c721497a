"""Fixtures: a real broker and Redis from the environment, isolated topics per test, workers as
real subprocesses, and waits on conditions with deadlines (never bare sleeps)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.demo import free_port
from streams.records import unstamp
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def estimator(document: dict[str, Any], key: str) -> dict[str, Any]:
    """The estimator's own document inside a published model document (its deployment fields
    checked and taken out, as the workers' loaders do)."""
    name = document["name"].removeprefix("spam:") if key == "model" else None
    version, exact = document["version"], key != "population"
    return unstamp(document[key], key, version, exact=exact, name=name)[0]


def http(
    method: str, url: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def kafka_dir() -> Path:
    """The directory of the broker scripts/test.sh started (tests that stop it need it)."""
    path = os.environ.get("TEST_KAFKA_DIR")
    if not path:
        pytest.skip("the broker was not started by scripts/test.sh, so it cannot be stopped")
    return Path(path)


def stop_broker(directory: Path) -> None:
    """Stop the test run's broker with SIGTERM (a clean shutdown) and wait until it is gone."""
    pid = int((directory / "kafka.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, "the broker to stop")


def start_broker(directory: Path, bootstrap: str) -> None:
    """Start the stopped broker again on its data with .ci/kafka/start.sh."""
    script = ROOT / ".ci" / "kafka" / "start.sh"
    port = bootstrap.rsplit(":", 1)[1]
    out = subprocess.run(
        ["bash", str(script), str(directory), port], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.fixture(scope="session")
def broker() -> str:
    bootstrap = os.environ.get("SMARTSTREAM_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.skip("no broker: set SMARTSTREAM_KAFKA_BOOTSTRAP (scripts/test.sh starts one)")
    return bootstrap


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("SMARTSTREAM_REDIS_URL")
    if not url:
        pytest.skip("no Redis: set SMARTSTREAM_REDIS_URL (scripts/test.sh starts one)")
    return url


class Stack:
    """One isolated SmartStream deployment on the shared broker: its own topic prefix."""

    def __init__(self, broker: str, redis_url: str, tmp: Path, **overrides: str) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}-"
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SMARTSTREAM_")},
            "SMARTSTREAM_KAFKA_BOOTSTRAP": broker,
            "SMARTSTREAM_KAFKA_EMBEDDED": os.environ.get("SMARTSTREAM_KAFKA_EMBEDDED", "false"),
            "SMARTSTREAM_REDIS_URL": redis_url,
            "SMARTSTREAM_TOPIC_PREFIX": self.prefix,
            "SMARTSTREAM_PARTITIONS": "4",
            "SMARTSTREAM_LOG_LEVEL": "warn",
            **overrides,
        }
        self.settings = Settings.from_env(self.env)
        self.workers: list[Worker] = []

    def start_worker(self, **overrides: str) -> Worker:
        worker = Worker(self, len(self.workers), overrides)
        self.workers.append(worker)
        worker.wait_healthy()
        return worker

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """Run `smartstream ARGS` against this deployment (extra SMARTSTREAM_* in `env`); it
        must succeed."""
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done

    def producer(self, **config: Any) -> Any:
        from producers.client import SmartStreamProducer

        return SmartStreamProducer(self.settings, **config)

    def consume_all(self, topic: str, expected: int, timeout: float = 60) -> list[Any]:
        """Read `topic` from the start until `expected` records have arrived (or fail)."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            self.settings.topic(topic),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=500,
            **self.settings.kafka_python_config(),
        )
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            records.extend(consumer)  # everything available now (up to a 0.5 s pause)
            while len(records) < expected and time.monotonic() < deadline:
                records.extend(consumer)
        finally:
            consumer.close()
        assert len(records) >= expected, f"{topic}: {len(records)} of {expected} records"
        return records

    def labels_by_comment(self) -> dict[str, list[dict]]:
        """Every `comment-labels` record so far, grouped by comment id."""
        out: dict[str, list[dict]] = {}
        for m in self.consume_all("comment-labels", 0):
            value = json.loads(m.value)
            out.setdefault(value["comment_id"], []).append(value)
        return out

    def pretrain(self, path: Path) -> subprocess.CompletedProcess:
        """`smartstream pretrain --filter comments PATH`, as a user runs it; must succeed."""
        cli = subprocess.run(
            [sys.executable, "-m", "streams.cli", "pretrain", "--filter", "comments", str(path)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr
        return cli

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


class Worker:
    def __init__(self, stack: Stack, index: int, overrides: dict[str, str]) -> None:
        self.port = free_port()
        self.stack = stack
        env = {
            **stack.env,
            "SMARTSTREAM_WEB_PORT": str(self.port),
            "SMARTSTREAM_DATA_DIR": str(stack.tmp / f"worker{index}"),
            **overrides,
        }
        self.log_path = stack.tmp / f"worker{index}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            cwd=stack.tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, Any]:
        return http("GET", self.url + path)

    def post(
        self, path: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        return http("POST", self.url + path, body, {"Content-Type": content_type})

    def wait_healthy(self, timeout: float = 90) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            return self.get("/health")[0] == 200

        try:
            wait_for(healthy, timeout, "worker /health 200", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def stack(broker: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(broker, redis_url, tmp_path)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def youtube_dir() -> Path:
    path = SHARED_DATA / "youtube"
    if not path.is_dir():
        pytest.skip("YouTube Spam Collection not present (../shared/data/youtube)")
    return path


# Real headless Chromium (Debian's package, driven by Playwright) for the browser tests;
# screenshots go to $TEST_ARTIFACTS (default run/test/artifacts).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "run" / "test" / "artifacts"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium executable (scripts/test.sh installs Debian's package)")
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()
