"""The operations pack (ops/): Prometheus config and alert rules checked and unit-tested by
promtool, the Grafana dashboard and alerts naming only metrics the code registers, the compose
services' mounts, the event-loop lag probe, and JSON logs from a real worker."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Stack, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "ops" / "prometheus"
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "smartstream.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "smartstream.yml"
# Series Prometheus makes itself for every target.
SYNTHETIC = {"up"}
# The instruments the dashboard must show (a counter without _total, a histogram by any series).
PANELLED = {
    "smartstream_events",
    "smartstream_dead_letters",
    "smartstream_consumer_lag",
    "smartstream_model_runs",
    "smartstream_model_run_seconds",
    "smartstream_model_version",
    "smartstream_classification_seconds",
    "smartstream_batch_seconds",
    "smartstream_last_batch_timestamp_seconds",
    "smartstream_event_loop_lag_seconds",
    "smartstream_event_loop_delay_seconds",
    "smartstream_redis_backlog",
}
# Panels every target of which has series as soon as Prometheus scraped one running worker.
WORKER_PANELS = {
    "Workers up",
    "Events/s",
    "Consumer lag",
    "Worst event-loop lag",
    "Events/s per topic",
    "Consumer lag per topic",
    "Redis backlog per worker",
    "Event-loop lag",
    "Batch time per agent",
    "Since the last batch",
}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$instance": ".*"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (scripts/test.sh installs Debian's prometheus)")
    return path


def run_promtool(promtool: str, *args: str) -> str:
    out = subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in dashboard()["panels"] for t in panel.get("targets", [])]


def expand(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, as Prometheus receives it."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
_KEYWORDS |= {"unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside strings, label
    matchers, ranges and grouping clauses that are neither functions nor keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expand(expr))
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):  # a function or aggregation
            continue
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def registered_series() -> set[str]:
    """Every series name the worker's modules register with prometheus_client."""
    from prometheus_client import REGISTRY

    from streams.cli import load_worker_modules

    load_worker_modules()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names = set()
    for metric in REGISTRY.collect():
        names |= {metric.name + s for s in suffixes.get(metric.type, ("",))}
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (topic) (rate(a_total{topic=~"x|y", job="up"}[5m])) / on (topic) b offset 30m '
        "> 0.01 or histogram_quantile(0.9, sum by (le) (rate(c_bucket[$__rate_interval]))) "
        "unless absent(up == 1)"
    )
    assert metric_names(expr) == {"a_total", "b", "c_bucket", "up"}


def test_prometheus_config_and_rules_pass_promtool_checks(promtool: str) -> None:
    out = run_promtool(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "alerts.yml" in out  # the config loads the rule file
    out = run_promtool(promtool, "check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_alert_rules_unit_tests_pass_and_cover_every_alert(promtool: str) -> None:
    out = run_promtool(promtool, "test", "rules", "alerts_test.yml")
    assert "SUCCESS" in out
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"


def test_every_alert_documents_its_threshold() -> None:
    readme = (ROOT / "README.md").read_text()
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "threshold"} <= set(rule["annotations"]), rule["alert"]
        row = f"| `{rule['alert']}` | {rule['labels']['severity']} | "
        row += f"{rule['annotations']['threshold']} |"
        assert row in readme, f"{rule['alert']}: the README's alerts table says otherwise"


def test_dashboard_and_alerts_name_only_registered_metrics() -> None:
    known = registered_series() | SYNTHETIC
    for expr in [rule["expr"] for rule in alert_rules()] + dashboard_exprs():
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"unknown metrics {names - known} in {expr!r}"
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert PANELLED - shown == set(), "instruments without a panel"


def test_dashboard_queries_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expand(e)}
        for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_dashboard_layout_and_datasource() -> None:
    board = dashboard()
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid
        assert re.match(
            r'label_values\(up\{job="smartstream"\}, instance\)', variable["query"]["query"]
        )
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in (
        "events/s per topic",
        "consumer lag per topic",
        "dead letters/s per topic",
        "model runs and failures",
        "model versions",
        "model run durations",
        "label latency",
        "batch time",
        "event-loop lag",
        "redis backlog",
    ):
        assert wanted in titles, wanted


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """{container path: host path} of a compose service's bind mounts (./ sources)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def test_compose_runs_prometheus_and_grafana_on_the_repository_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, repo in (("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")):
        image, _, tag = services[name]["image"].partition(":")
        assert image == repo and tag and tag != "latest", services[name]["image"]
        for port in services[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for target, source in _bind_mounts(services[name]).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    prometheus = _bind_mounts(services["prometheus"])
    config_path = "/etc/prometheus/prometheus.yml"
    assert prometheus[config_path] == PROMETHEUS / "prometheus.yml"
    config = yaml.safe_load(prometheus[config_path].read_text())
    for rule_file in config["rule_files"]:  # relative to the config file inside the container
        assert prometheus[str(Path(config_path).parent / rule_file)].is_file(), rule_file
    assert config_path in " ".join(services["prometheus"]["command"])
    grafana = _bind_mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    assert grafana[provider["options"]["path"]] == DASHBOARD.parent
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"  # the compose service's name and port


def test_loop_lag_probe_reports_a_blocked_loop() -> None:
    """Blocking the loop for 0.35 s delays the probe's next wake-up by 0.25 to 0.35 s (it was due
    at most one interval after the block began); the gauge reports it until the window ends."""
    from prometheus_client import CollectorRegistry

    from streams.monitoring import LoopLagProbe

    registry = CollectorRegistry()
    probe = LoopLagProbe(interval=0.1, window=1.0, registry=registry)

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    def probes() -> float:
        return sample("smartstream_event_loop_delay_seconds_count")

    async def until(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    async def scenario() -> tuple[float, float, float]:
        task = asyncio.create_task(probe.run())
        await until(lambda: probes() >= 5, 5, "five probes on a free loop")
        idle = sample("smartstream_event_loop_lag_seconds")
        seen = probes()
        start = time.perf_counter()
        time.sleep(0.35)  # what a blocking call inside a handler does to the loop
        blocked = time.perf_counter() - start
        await until(lambda: probes() > seen, 5, "the probe after the block")
        lag = sample("smartstream_event_loop_lag_seconds")
        await until(
            lambda: sample("smartstream_event_loop_lag_seconds") < 0.25, 5, "the window to pass"
        )
        task.cancel()
        return idle, lag, blocked

    idle, lag, blocked = asyncio.run(scenario())
    assert idle < 0.09  # a free loop: lateness, not the 0.1 s interval
    assert 0.25 <= lag <= blocked + 0.2
    late = probes() - sample("smartstream_event_loop_delay_seconds_bucket", le="0.25")
    assert late == 1  # exactly the one blocked wake-up, in the histogram too


def test_json_log_formatter_writes_one_object_per_line() -> None:
    from streams.monitoring import JsonLogFormatter

    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "smartstream.x", logging.ERROR, __file__, 1, "a %s\nb", ("é",), exc_info
    )
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "smartstream.x"
    assert entry["message"] == "a é\nb"
    assert (
        entry["exc_info"].startswith("Traceback") and "ValueError: bad\nvalue" in entry["exc_info"]
    )
    assert abs(datetime.fromisoformat(entry["ts"]).timestamp() - record.created) < 0.001
    odd = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert json.loads(JsonLogFormatter().format(odd))["message"] == "%d items ('many',)"


def test_unknown_log_format_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env={"PATH": "/usr/bin:/bin", "SMARTSTREAM_LOG_FORMAT": "xml"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "SMARTSTREAM_LOG_FORMAT" in out.stderr


@pytest.mark.integration
def test_worker_logs_json_lines(stack: Stack) -> None:
    worker = stack.start_worker(SMARTSTREAM_LOG_FORMAT="json", SMARTSTREAM_LOG_LEVEL="info")

    def probe_count() -> float:
        status, text = worker.get("/metrics")
        found = re.search(r"^smartstream_event_loop_delay_seconds_count (\S+)$", text, re.M)
        return float(found.group(1)) if status == 200 and found else 0.0

    wait_for(lambda: probe_count() >= 10, 30, "the event-loop probe running in the worker")
    worker.stop()
    lines = worker.log_path.read_text().splitlines()  # the worker's stdout and stderr
    assert len(lines) >= 10
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line: one JSON object
        assert {"ts", "level", "logger", "message"} <= set(entry), line
        datetime.fromisoformat(entry["ts"])
        entries.append(entry)
    loggers = {e["logger"] for e in entries}
    assert {"smartstream", "faust.worker"} <= loggers
    assert any(e["message"].startswith("created topics: ") for e in entries)
    assert any("Stopping" in e["message"] for e in entries)  # the shutdown is logged too


def prometheus_query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


@pytest.mark.integration
def test_prometheus_scrapes_a_worker_and_evaluates_dashboard_and_rules(
    stack: Stack, tmp_path: Path
) -> None:
    """The real Prometheus server (Debian's, run here, not as a service) scrapes a worker: every
    dashboard query and alert rule evaluates without error on its series."""
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus not installed (scripts/test.sh installs Debian's prometheus)")
    worker = stack.start_worker()
    producer = stack.producer()
    for i in range(50):
        producer.page_time(f"u{i}", "ABCDEFGHIJ"[i % 10], 3.0)
    producer.flush()
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "smartstream",
                "static_configs": [{"targets": [f"127.0.0.1:{worker.port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    topic = stack.settings.topic("page-times")
    try:

        def answer(expr: str) -> list[dict[str, Any]]:
            try:
                return prometheus_query(base, expr)["data"]["result"]
            except OSError:
                return []

        wait_for(lambda: answer('up{job="smartstream"} == 1'), 60, "Prometheus scraping the worker")
        events = 'sum by (topic) (increase(smartstream_events_total{job="smartstream"}[1m]))'
        wait_for(
            lambda: any(r["metric"].get("topic") == topic for r in answer(events)),
            60,
            "the worker's events in Prometheus",
        )
        empty = set()
        for panel in dashboard()["panels"]:
            for target in panel["targets"]:
                body = prometheus_query(base, expand(target["expr"]))
                assert body["status"] == "success", (target["expr"], body)
                if not body["data"]["result"]:
                    empty.add(panel["title"])
        assert not empty & WORKER_PANELS, "panels without series from a running worker"

        def rules() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as resp:
                groups = json.load(resp)["data"]["groups"]
            return [rule for group in groups for rule in group["rules"]]

        wait_for(
            lambda: all(r["lastEvaluation"] > "2000" for r in rules()), 30, "every rule evaluated"
        )
        assert {r["name"]: r["health"] for r in rules()} == {
            rule["alert"]: "ok" for rule in alert_rules()
        }
        # A healthy worker under light traffic raises nothing. Its loop may run over 50 ms late
        # on a loaded test machine now and then: that alert only pends (its `for` is 2m).
        active = {r["name"] for r in rules() if r["state"] != "inactive"}
        assert active - {"SmartStreamEventLoopLag"} == set()
    finally:
        server.terminate()
        server.wait(30)
        log.close()
