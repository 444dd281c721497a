"""The `smartstream` commands of the workers and their operators (CONTRACT.md): worker,
recluster, retrain, pretrain, erase, status, models. The console script is producers.cli, which
adds the commands that run the site side (simulate, demo): streams/ never imports producers/."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.request
from collections.abc import Callable
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
    """Import every domain module of WORKER_MODULES so its registrations reach the app (the one
    streams.app.configure built, else one configured from the environment)."""
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
    """The environment is read here, once: the app is built from these settings."""
    from streams import app as app_module
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    if settings.log_format not in ("text", "json"):
        print(f"SMARTSTREAM_LOG_FORMAT: text or json, not {settings.log_format!r}", file=sys.stderr)
        return 2
    app_module.configure(settings)
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


def request_run(model: str, reason: str) -> None:
    from streams.sender import Sender

    sender = Sender()
    sender.request_run(model, reason).get(timeout=30)
    sender.close()


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase a user (streams.erasure): the commands are produced and acknowledged, then the
    workers carry them out."""
    from streams.erasure import erasure_plan, new_erasure_id
    from streams.sender import Sender
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    ensure_topics(settings)
    sender = Sender(settings)
    erasure_id = new_erasure_id()
    for name, partition, key, value in erasure_plan(args.user_id, erasure_id, settings.partitions):
        sender.send(name, key, value, partition).get(30)
    sender.close()
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
    from models.corpora import load_any
    from streams.sender import Sender
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    if args.filter not in settings.spam_filter_presets:
        print(f"unknown filter {args.filter!r}: see SMARTSTREAM_SPAM_FILTERS", file=sys.stderr)
        return 2
    ensure_topics(settings)
    sender = Sender(settings)
    total = 0
    for path in args.paths:
        items = load_any(path)
        for i, item in enumerate(items, 1):
            sender.pretraining(args.filter, item.text, item.is_spam, item.source)
            if i % 500 == 0 or i == len(items):
                bar = "#" * int(30 * i / len(items))
                print(f"\r{path}: [{bar:<30}] {i}/{len(items)}", end="", flush=True)
        print(flush=True)
        total += len(items)
    sender.close()
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
    from streams.records import RollbackRequest
    from streams.sender import Sender
    from streams.topics import CONTROL

    if args.version < 1:
        print("VERSION must be a positive integer", file=sys.stderr)
        return 2
    sender = Sender()
    request = RollbackRequest(model=args.name, version=args.version, ts=time.time())
    sender.send(CONTROL, args.name, request).get(timeout=30)
    sender.close()
    print(
        f"rollback of {args.name} to v{args.version} requested: the trainer republishes it as "
        "the next version (see `smartstream models list`)",
        flush=True,
    )
    return 0


def build_parser(*more: Callable[[Any], None]) -> argparse.ArgumentParser:
    """The `smartstream` parser: `more` add their commands first (producers.cli's)."""
    parser = argparse.ArgumentParser(
        prog="smartstream",
        description="SmartStream: decisions from a web site's event streams, live on Kafka",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in more:
        add(sub)
    add_commands(sub)
    return parser


def add_commands(sub: Any) -> None:
    sub.add_parser("worker", help="one worker").set_defaults(func=cmd_worker)
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


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    args = (parser or build_parser()).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
