"""The `smartstream` command (CONTRACT.md): every command of streams.cli (the workers' and their
operators') and the two that run the site side, `simulate` (site traffic) and `demo` (the whole
system on one machine, producers.demo). It lives here, the outermost layer, so that streams/
never imports producers/."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from streams import cli


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
    from producers.demo import run_demo

    return run_demo(port=args.port, users=args.users, rate=args.rate, verbose=args.verbose)


def add_site_commands(sub: Any) -> None:
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


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, cli.build_parser(add_site_commands))


if __name__ == "__main__":
    sys.exit(main())
