"""The `smartstream` command line (CONTRACT.md): demo, worker, simulate, recluster, status."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.request
from typing import Any

from streams.settings import Settings

log = logging.getLogger("smartstream")


def load_worker_modules() -> Any:
    """Import every domain module so its agents, tables, timers and pages register on the app."""
    from streams import app as app_module
    from streams import clustering, metrics, monitoring, users  # noqa: F401

    return app_module.app


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    created = ensure_topics(settings)
    if created:
        print(f"created topics: {', '.join(created)}", flush=True)
    app = load_worker_modules()
    sys.argv = ["smartstream", "worker", "-l", settings.log_level]
    app.main()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from producers.client import SmartStreamProducer
    from producers.traffic import load_comment_corpus, simulate

    producer = SmartStreamProducer()
    corpus = load_comment_corpus(args.corpus) if args.corpus else None
    sent = simulate(
        lambda e: producer.send(e.topic, e.key, e.value),
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


def cmd_recluster(args: argparse.Namespace) -> int:
    from producers.client import SmartStreamProducer
    from streams.topics import CONTROL

    producer = SmartStreamProducer()
    request = {"action": "run", "model": "clustering", "reason": "cli"}
    producer.send(CONTROL, "clustering", request).get(timeout=30)
    producer.close()
    print("re-clustering requested", flush=True)
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
