"""The worker's wiring (pure, no broker): every module that registers on the Faust app is one
the worker imports, so none is silently left unregistered."""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
from pathlib import Path

from streams.cli import WORKER_MODULES

STREAMS = Path(__file__).resolve().parent.parent / "streams"
# What registers on the app: agents, pages, tasks, timers, tables, bulk handlers, recovery hooks
# and signal receivers.
REGISTERS = re.compile(
    r"^@(app\.(agent|page|task|timer|crontab|bulk|on_\w+)|\w+_table\.on_recover)|app\.(Table|GlobalTable)\(",
    re.M,
)


def registering_modules() -> set[str]:
    return {
        path.stem
        for path in STREAMS.glob("*.py")
        if path.stem != "app" and REGISTERS.search(path.read_text())
    }


def test_every_registering_module_is_loaded_by_the_worker() -> None:
    found = registering_modules()
    assert {"user_events", "counters", "ingest", "clustering", "moderation"} <= found
    missing = found - set(WORKER_MODULES)
    assert not missing, f"modules that register on the app but are not in WORKER_MODULES: {missing}"


def test_every_listed_module_exists() -> None:
    assert all((STREAMS / f"{name}.py").is_file() for name in WORKER_MODULES)


# An expression: the worker's modules (and Faust) loaded in the process that evaluates it.
WORKER_MODULES_LOADED = (
    "sorted(m for m in __import__('sys').modules if m == 'faust' or m.startswith(('faust.', "
    "'streams.app', 'streams.trainer', 'streams.clustering', 'streams.moderation')))"
)


def test_the_helper_process_imports_no_worker_module() -> None:
    """A spawned helper unpickles streams.fitting's functions by module name: importing it must
    not build the Faust app nor load Faust (a fresh interpreter, as the helper is)."""
    probe = f"import streams.fitting; print({WORKER_MODULES_LOADED})"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_trainer_s_helper_holds_no_worker_module_and_one_blas_thread() -> None:
    """The trainer's own helper process (its initializer included, which the helper unpickles
    by name too) holds no worker module, and the processes it spawns (the parallel read, the
    cold fit's restarts) start with one BLAS thread each."""
    from streams import trainer

    blas = "__import__('os').environ.get('OPENBLAS_NUM_THREADS')"

    async def ask() -> tuple[list[str], str]:
        try:
            found = await trainer.in_helper_process(eval, WORKER_MODULES_LOADED)
            return found, await trainer.in_helper_process(eval, blas)
        finally:
            trainer.kill_pool(trainer._pool)  # type: ignore[arg-type]
            trainer._pool = None

    assert asyncio.run(ask()) == ([], "1")


ROOT = STREAMS.parent
# The contract modules the producers may import: they import nothing else of the project's but
# models/, so a site integration never loads the worker. The `smartstream` console script
# (producers.cli) adds its site-side commands to streams.cli's.
CONTRACT = {"streams.settings", "streams.topics", "streams.records", "streams.sender"}
CONSOLE = {"producers.cli": {"streams.cli"}}


PACKAGES = ("streams", "models", "producers")


def imports_of(path: Path) -> set[str]:
    """The project's modules `path` imports, at any depth of the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found - set(PACKAGES)  # `from streams import x`: x is what is imported


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def within(name: str, modules: set[str]) -> bool:
    """`name` (a module, or a name imported from one) is one of `modules` or in one."""
    return name in modules or name.rsplit(".", 1)[0] in modules


def test_the_layers_import_downwards_only() -> None:
    """models/ imports neither streams/ nor producers/; producers/ imports only the contract
    modules of streams/ (the console script streams.cli too), and those only each other (and
    models/); streams/ never imports producers/."""
    graph = {
        module_of(path): imports_of(path)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert {"producers.cli", "producers.demo", "streams.sender", "streams.cli"} <= set(graph)
    for module, imported in graph.items():
        project = {m for m in imported if not m.startswith("models")}
        if module.startswith("models"):
            assert not project, module
        elif module.startswith("producers"):
            allowed = CONTRACT | CONSOLE.get(module, set())
            bad = {m for m in project if m.startswith("streams") and not within(m, allowed)}
            assert not bad, (module, bad)
        elif module in CONTRACT:
            assert all(within(m, CONTRACT) for m in project), (module, project)
        else:
            assert not any(m.startswith("producers") for m in project), (module, project)


def test_the_worker_is_built_from_the_settings_passed_in() -> None:
    """streams.app.configure builds the app from the Settings it is given, not from the
    environment, and the domain modules register on that app; a second configure is refused."""
    probe = "\n".join(
        [
            "import os",
            "os.environ['SMARTSTREAM_TOPIC_PREFIX'] = 'from-env.'",
            "from streams import app as wired",
            "from streams.cli import load_worker_modules",
            "from streams.settings import Settings",
            "built = wired.configure(Settings(topic_prefix='passed.'))",
            "app = load_worker_modules()",
            "from streams import user_events",
            "print(app is built is wired.app, app.conf.id, user_events.PAGE_TIMES,",
            "      wired.comments_topic.get_topic_name(), wired.settings.topic_prefix)",
            "try:",
            "    wired.configure(Settings())",
            "except RuntimeError:",
            "    print('configured once')",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split("\n")[:2] == [
        "True passed.smartstream passed.page-times passed.comments passed.",
        "configured once",
    ], out.stdout + out.stderr
