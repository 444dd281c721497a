"""`smartstream demo` as a newcomer runs it, against the test broker and Redis: quiet output (the
logs in files it names), the URLs, then a status line with real figures; Ctrl-C stops it and
everything it started."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import tty as tty_module
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, http, wait_for

pytestmark = pytest.mark.integration
USERS = 40
# "12:00:01  22 events/s | 40 users | 5 clusters (v2) | 23 comments labelled, filter v1"; on a
# terminal without the clock.
STATUS = re.compile(
    r"^(\d\d:\d\d:\d\d  )?(?P<rate>[\d,]+|-) events/s \| (?P<users>[\d,]+) users \| "
    r"(no clusters yet|\d+ clusters \(v\d+\)) \| (?P<labelled>[\d,]+) comments labelled"
)
# What Faust or Python logging writes: "[2026-01-01 10:00:00,000] [123] [INFO] ...", the
# banner and its table, "2026-01-01 10:00:00,000 INFO name: ..." (the demo's own format).
LOG_LINE = re.compile(
    r"\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]|ƒaµS†|^\|.*\|$|^\d{4}-\d\d-\d\d \d\d:\d\d"
)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Demo:
    """`python -m producers.cli demo` (what the `smartstream` script runs) in its own directory."""

    def __init__(self, broker: str, redis_url: str, tmp: Path, tty: bool) -> None:
        self.port = free_port()
        self.cwd = tmp
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSTREAM_")}
        env.update(
            SMARTSTREAM_KAFKA_BOOTSTRAP=broker,
            SMARTSTREAM_KAFKA_EMBEDDED=os.environ.get("SMARTSTREAM_KAFKA_EMBEDDED", "false"),
            SMARTSTREAM_REDIS_URL=redis_url,
            SMARTSTREAM_TOPIC_PREFIX=f"d{uuid.uuid4().hex[:10]}-",
            SMARTSTREAM_PARTITIONS="4",
            PYTHONPATH=str(ROOT),
        )
        args = ["--port", str(self.port), "--users", str(USERS), "--rate", "20"]
        if tty:  # stdout is a terminal: the status line is rewritten in place
            primary, secondary = pty.openpty()
            tty_module.setraw(secondary)  # bytes as written: no "\n" -> "\r\n" translation
            # 100 columns: the demo cuts its status line to the terminal's width.
            fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
            out, self.reader = secondary, os.fdopen(primary, "rb", buffering=0)
        else:
            out, self.reader = subprocess.PIPE, None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "demo", *args],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
        )
        if tty:
            os.close(secondary)
        else:
            self.reader = self.proc.stdout
        self.output = bytearray()
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        read = getattr(self.reader, "read1", self.reader.read)  # what has arrived, not 4096 bytes
        while True:
            try:
                chunk = read(4096)
            except OSError:  # the terminal closed with the demo
                return
            if not chunk:
                return
            self.output.extend(chunk)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def status_lines(self) -> list[re.Match]:
        parts = re.split(r"[\r\n]", self.text.replace("\x1b[K", ""))
        return [m for m in map(STATUS.match, parts) if m]

    def interrupt(self) -> int:
        """Ctrl-C (SIGINT to the demo alone, as a terminal sends it to the foreground job)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(90)
        except subprocess.TimeoutExpired:  # say where it hangs: faulthandler's dump on SIGUSR1
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(2)  # the dump's time to reach stderr, not a synchronisation
            self.kill()
            raise AssertionError(
                "the demo did not stop:\n" + self.proc.stderr.read().decode(errors="replace")
            ) from None
        self.stderr = self.proc.stderr.read()
        return code

    def kill(self) -> None:
        for pid in descendants(self.proc.pid) | {self.proc.pid}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def demo_factory(broker: str, redis_url: str, tmp_path: Path) -> Iterator:
    demos: list[Demo] = []

    def start(tty: bool = False) -> Demo:
        demos.append(Demo(broker, redis_url, tmp_path, tty))
        return demos[-1]

    yield start
    for demo in demos:
        if demo.proc.poll() is None:
            demo.kill()


def running(demo: Demo, what: str) -> None:
    if demo.proc.poll() is not None:
        raise AssertionError(
            f"the demo exited ({demo.proc.returncode}) before {what}:\n{demo.text}"
        )


def test_demo_is_quiet_shows_urls_and_live_status_and_stops_on_ctrl_c(demo_factory) -> None:
    demo = demo_factory()

    def busy_status() -> re.Match | None:
        running(demo, "a status line with events")
        lines = demo.status_lines()
        return next(
            (m for m in reversed(lines) if m["rate"] not in ("-", "0") and m["users"] != "0"), None
        )

    status = wait_for(busy_status, 240, "a status line with events", interval=0.5)
    base = f"http://127.0.0.1:{demo.port}"
    text = demo.text
    # The URLs come last before the status lines, and they answer.
    for route in ("/dashboard", "/pages/A/1", "/clusters", "/metrics"):
        assert f"{base}{route}\n" in text
    assert text.index(f"{base}/dashboard") < text.index(status.group(0))
    assert http("GET", f"{base}/health")[0] == 200
    # Quiet: no log line reached stdout, a handful of lines in all; the logs are in the files
    # the output names.
    lines = text.splitlines()
    assert [line for line in lines if LOG_LINE.search(line)] == []
    assert len(lines) < 30, text
    worker_log = demo.cwd / "run" / "demo" / "worker.log"
    assert "run/demo/worker.log" in text and "ƒaµS†" in worker_log.read_text(errors="replace")
    # The figures are the worker's: every simulated user arrives, labels are counted.

    def every_user() -> bool:
        running(demo, "all users")
        return any(int(m["users"]) == USERS for m in demo.status_lines())

    wait_for(every_user, 90, f"a status line with {USERS} users", interval=0.5)
    children = descendants(demo.proc.pid)
    assert children, "the demo's worker runs as its child"
    assert demo.interrupt() == 0, demo.stderr.decode(errors="replace")
    assert [pid for pid in children if alive(pid)] == []
    assert b"Traceback" not in demo.stderr, demo.stderr.decode(errors="replace")
    assert http("GET", f"{base}/health")[0] == 0  # nothing listens any more


def test_demo_status_line_is_rewritten_in_place_on_a_terminal(demo_factory) -> None:
    demo = demo_factory(tty=True)

    def updates() -> bool:
        running(demo, "two status updates")
        after_urls = demo.text.split("Ctrl-C stops everything.", 1)[-1]
        return after_urls.count("\r") >= 3 and len(demo.status_lines()) >= 3

    wait_for(updates, 240, "status updates on the terminal", interval=0.5)
    after_urls = demo.text.split("Ctrl-C stops everything.", 1)[1]
    # One line, rewritten: carriage returns, and no new line after the banner's rule.
    assert after_urls.count("\n") == 2, repr(after_urls)  # the end of the two banner lines
    updates = after_urls.rstrip("\n").split("\r")[1:]
    assert all(u.endswith("\x1b[K") and len(u) <= 99 + 3 for u in updates), updates
    assert all((m := STATUS.match(u)) and m[1] is None for u in updates[:-1]), updates  # no clock
    assert demo.interrupt() == 0
