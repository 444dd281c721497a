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


def load_worker_modules() -> Any:
    """Import every domain module so its agents, tables, timers and pages register on the app."""
    from streams import app as app_module
    from streams import (  # noqa: F401
        clustering,
        dashboard,
        metrics,
        moderation,
        monitoring,
        site,
        trainer,
        users,
    )

    return app_module.app


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    if settings.log_format not in ("text", "json"):
        print(f"SMARTSTREAM_LOG_FORMAT: text or json, not {settings.log_format!r}", file=sys.stderr)
        return 2
    if settings.log_format == "json":
        from streams.monitoring import use_json_logs

        use_json_logs(settings.log_level)
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

    return run_demo(port=args.port, users=args.users, rate=args.rate)


def request_run(model: str, reason: str) -> None:
    from producers.client import SmartStreamProducer
    from streams.topics import CONTROL

    producer = SmartStreamProducer()
    producer.send(CONTROL, model, {"action": "run", "model": model, "reason": reason}).get(
        timeout=30
    )
    producer.close()


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole system on one machine")
    demo.add_argument("--port", type=int, default=int(os.environ.get("SMARTSTREAM_WEB_PORT", 6066)))
    demo.add_argument("--users", type=int, default=200)
    demo.add_argument("--rate", type=float, default=50.0, help="page views per second")
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
