"""The `smartstream` command line (CONTRACT.md): demo, worker, simulate, recluster, status."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from typing import Any

from streams.settings import Settings

log = logging.getLogger("smartstream")


# Every module that registers agents, tables, timers or pages on the one Faust app: the worker
# imports exactly these (tests/test_wiring.py fails when a registering module is missing here).
WORKER_MODULES = (
    "clustering",
    "contract",
    "counters",
    "dashboard",
    "ingest",
    "lifecycle",
    "moderation",
    "monitoring",
    "review",
    "serving",
    "site",
    "trainer",
    "user_events",
    "users",
)


def load_worker_modules() -> Any:
    """Import every domain module of WORKER_MODULES so its registrations reach the app."""
    import importlib

    from streams import app as app_module

    for name in WORKER_MODULES:
        importlib.import_module(f"streams.{name}")
    return app_module.app


EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: the configuration is wrong, restarting will not help


def redis_refusal(settings: Settings) -> str | None:
    """Why the worker must not start with this Redis configuration, or None.

    One PING and one key check with the configured credentials and CA: refused credentials, a
    certificate that does not verify or a user denied the mirror's keys would only be logged by
    the mirror, forever. A Redis that does not answer is no reason: the mirror catches up.
    """
    if not settings.redis_url:
        return None
    import ssl
    from urllib.parse import urlsplit

    import redis

    url = urlsplit(settings.redis_url)
    user = f"{url.username}@" if url.username else ""
    where = f"{url.scheme}://{user}{url.hostname}:{url.port or 6379}"  # never the password
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2, **settings.redis_options()
    )
    try:
        client.ping()
        client.exists(f"{settings.redis_prefix}user:")
    except redis.AuthenticationError as exc:
        return f"Redis authentication failed at {where} (SMARTSTREAM_REDIS_URL): {exc}"
    except redis.exceptions.NoPermissionError as exc:
        return f"Redis user at {where} may not use the keys {settings.redis_prefix}*: {exc}"
    except redis.ConnectionError as exc:
        if isinstance(exc.__context__, ssl.SSLError):
            return f"Redis TLS failed at {where} (SMARTSTREAM_REDIS_SSL_CAFILE?): {exc}"
        log.warning("Redis at %s does not answer (%s): the mirror writes once it does", where, exc)
    except redis.RedisError as exc:
        log.warning("Redis at %s: %s: the mirror writes once it answers", where, exc)
    finally:
        client.close()
    return None


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    if settings.log_format not in ("text", "json"):
        print(f"SMARTSTREAM_LOG_FORMAT: text or json, not {settings.log_format!r}", file=sys.stderr)
        return 2
    if settings.log_format == "json":
        from streams.monitoring import use_json_logs

        use_json_logs(settings.log_level)
    refusal = redis_refusal(settings)
    if refusal:
        print(f"smartstream worker: {refusal}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    created = ensure_topics(settings)
    if created:
        log.info("created topics: %s", ", ".join(created))
    app = load_worker_modules()
    sys.argv = ["smartstream", "worker", "-l", settings.log_level]
    if settings.log_format == "json":
        sys.argv.insert(1, "--quiet")  # Faust's banner and "OK" line are not log records
    # aiokafka builds a debug record per fetch and per send otherwise (a tenth of a busy worker's
    # CPU, measured with py-spy); its warnings and errors still show.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    app.main()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from producers.client import SmartStreamProducer
    from producers.traffic import load_comment_corpus, simulate

    producer = SmartStreamProducer()
    corpus = load_comment_corpus(args.corpus) if args.corpus else None
    counts: dict[str, int] = {}
    start = time.monotonic()

    def send(event: Any) -> None:
        producer.send(event.topic, event.key, event.value)
        counts[event.topic] = counts.get(event.topic, 0) + 1
        total = sum(counts.values())
        if total % 10000 == 0:  # one progress line per 10,000 events
            rate = total / max(time.monotonic() - start, 1e-9)
            detail = ", ".join(f"{n} {topic}" for topic, n in sorted(counts.items()))
            print(f"{total} events sent ({detail}); {rate:,.0f}/s", flush=True)

    sent = simulate(
        send,
        users=args.users,
        rate=args.rate,
        comments_rate=args.comments_rate,
        duration=args.duration,
        seed=args.seed,
        corpus=corpus,
        history=args.history,
    )
    producer.flush()
    producer.close()
    print(f"sent {sent} events", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(port=args.port, users=args.users, rate=args.rate, verbose=args.verbose)


def request_run(model: str, reason: str) -> None:
    from producers.client import SmartStreamProducer
    from streams.topics import CONTROL

    producer = SmartStreamProducer()
    producer.send(CONTROL, model, {"action": "run", "model": model, "reason": reason}).get(
        timeout=30
    )
    producer.close()


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase a user (streams.erasure): the commands are produced and acknowledged, then the
    workers carry them out."""
    from kafka import KafkaProducer

    from streams.erasure import erasure_plan, new_erasure_id
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    ensure_topics(settings)
    producer = KafkaProducer(acks="all", **settings.kafka_python_config())
    erasure_id = new_erasure_id()
    for name, partition, key, value in erasure_plan(args.user_id, erasure_id, settings.partitions):
        producer.send(settings.topic(name), key=key, value=value, partition=partition).get(30)
    producer.close()
    print(f"erasure {erasure_id} of user {args.user_id!r} requested", flush=True)
    return 0


def cmd_recluster(args: argparse.Namespace) -> int:
    request_run("clustering", "cli")
    print("re-clustering requested", flush=True)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    request_run(f"spam:{args.filter}", "cli")
    print(f"retraining of spam filter {args.filter!r} requested", flush=True)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Load labelled corpora into the `pretraining` topic, then request a retraining."""
    import hashlib

    from models.corpora import load_any
    from producers.client import SmartStreamProducer
    from streams.topics import PRETRAINING, ensure_topics

    settings = Settings.from_env()
    if args.filter not in settings.spam_filter_presets:
        print(f"unknown filter {args.filter!r}: see SMARTSTREAM_SPAM_FILTERS", file=sys.stderr)
        return 2
    ensure_topics(settings)
    producer = SmartStreamProducer(settings)
    total = 0
    for path in args.paths:
        items = load_any(path)
        for i, item in enumerate(items, 1):
            key = f"{args.filter}:{hashlib.sha1(item.text.encode()).hexdigest()}"
            value = {
                "filter": args.filter,
                "text": item.text,
                "is_spam": item.is_spam,
                "source": item.source,
            }
            producer.send(PRETRAINING, key, value)
            if i % 500 == 0 or i == len(items):
                bar = "#" * int(30 * i / len(items))
                print(f"\r{path}: [{bar:<30}] {i}/{len(items)}", end="", flush=True)
        print(flush=True)
        total += len(items)
    producer.flush()
    producer.close()
    request_run(f"spam:{args.filter}", "pretrain")
    print(f"{total} labelled texts loaded for filter {args.filter!r}; retraining requested")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    base = f"http://127.0.0.1:{settings.web_port}"
    out = {}
    for route in ("health", "counters"):
        try:
            with urllib.request.urlopen(f"{base}/{route}", timeout=5) as resp:
                out[route] = json.load(resp)
        except OSError as exc:
            out[route] = {"error": str(exc)}
    print(json.dumps(out, indent=2))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    """The version history from the local worker's GET /models (streams.lifecycle)."""
    settings = Settings.from_env()
    url = args.url or f"http://127.0.0.1:{settings.web_port}"
    token = settings.api_token or settings.admin_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(f"{url}/models", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.load(resp)
    except OSError as exc:
        print(f"GET {url}/models: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else "\n".join(models_table(answer["models"])))
    return 0


def models_table(models: dict[str, Any]) -> list[str]:
    """One line per version; `*` marks the version each model serves."""
    rows = [("MODEL", "VERSION", "REASON", "PUBLISHED (UTC)", "BYTES", "QUALITY")]
    for name, model in models.items():
        for v in model["versions"]:
            published = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v["published_at"]))
            mark = "*" if v["serving"] else " "
            reason = v.get("reason") or ""
            rows.append(
                (name, f"{mark}{v['version']}", reason, published, f"{v['bytes']:,}", quality(v))
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[5]
        for row in rows
    ]


def quality(v: dict[str, Any]) -> str:
    """A version's quality figures as text (clustering or spam filter); unknown ones left out."""
    if "clusters" in v:
        parts = [
            v["clusters"] is not None and f"{v['clusters']} clusters",
            v["lower_bound"] is not None and f"lower bound {v['lower_bound']:.2f}",
            v["label_change_share"] is not None
            and f"{100 * v['label_change_share']:.1f}% labels changed",
            v["users"] is not None and f"{v['users']} users",
        ]
    else:
        sizes = f"{v['training_size']} texts ({v['pretraining_size']} pretraining, " + (
            f"{v['reviewed_size']} reviewed)"
        )
        parts = [v["cross_validation"], v["training_size"] is not None and sizes]
    return ", ".join(p for p in parts if p)


def cmd_models_rollback(args: argparse.Namespace) -> int:
    """Ask the trainer (through `control`) to republish a version as the next one."""
    from producers.client import SmartStreamProducer
    from streams.records import RollbackRequest
    from streams.topics import CONTROL

    if args.version < 1:
        print("VERSION must be a positive integer", file=sys.stderr)
        return 2
    producer = SmartStreamProducer()
    request = RollbackRequest(model=args.name, version=args.version, ts=time.time())
    producer.send(CONTROL, args.name, request.dumps()).get(timeout=30)
    producer.close()
    print(
        f"rollback of {args.name} to v{args.version} requested: the trainer republishes it as "
        "the next version (see `smartstream models list`)",
        flush=True,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole system on one machine")
    demo.add_argument("--port", type=int, default=int(os.environ.get("SMARTSTREAM_WEB_PORT", 6066)))
    demo.add_argument("--users", type=int, default=200)
    demo.add_argument("--rate", type=float, default=50.0, help="page views per second")
    demo.add_argument(
        "--verbose",
        action="store_true",
        help="the worker's and simulator's logs on the terminal (default: files in run/demo/)",
    )
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("worker", help="one worker").set_defaults(func=cmd_worker)
    sim = sub.add_parser("simulate", help="produce simulated site traffic")
    sim.add_argument("--users", type=int, default=200)
    sim.add_argument("--rate", type=float, default=100.0, help="page views per second")
    sim.add_argument("--comments-rate", type=float, default=0.0, help="comments per second")
    sim.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--corpus", default=None, help="YouTube Spam Collection CSV for comments")
    sim.add_argument(
        "--history",
        action="store_true",
        help="first send each user's past visits (the original population's profiles, exactly)",
    )
    sim.set_defaults(func=cmd_simulate)
    sub.add_parser("recluster", help="request a re-clustering now").set_defaults(func=cmd_recluster)
    erase = sub.add_parser("erase", help="erase a user: profile, assignment, comments, Redis")
    erase.add_argument("user_id")
    erase.set_defaults(func=cmd_erase)
    retrain = sub.add_parser("retrain", help="request a spam filter's retraining now")
    retrain.add_argument("--filter", default="comments")
    retrain.set_defaults(func=cmd_retrain)
    pretrain = sub.add_parser("pretrain", help="load a labelled corpus for a spam filter")
    pretrain.add_argument("--filter", default="comments")
    pretrain.add_argument("paths", nargs="+", help="YouTube zip/folder/CSV or Enron tar.gz")
    pretrain.set_defaults(func=cmd_pretrain)
    sub.add_parser("status", help="health and counters of the local worker").set_defaults(
        func=cmd_status
    )
    models = sub.add_parser("models", help="model version history and rollback")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="each model's versions (the worker's /models)")
    listing.add_argument("--url", default=None, help="a worker (default: the local one)")
    listing.add_argument("--json", action="store_true", help="the whole answer as JSON")
    listing.set_defaults(func=cmd_models_list)
    rollback = models_sub.add_parser("rollback", help="serve a version again, as a new version")
    rollback.add_argument("name", help="clustering or spam:FILTER")
    rollback.add_argument("version", type=int)
    rollback.set_defaults(func=cmd_models_rollback)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
