"""Supply chain: the lock files pin what pyproject.toml declares (exactly where it pins), every
third-party package the code imports is declared, and the private Faust and aiokafka names the
worker relies on still exist in the pinned versions (a canary that fails clearly on upgrade)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {"demo": ["embedded"], "test": ["dev", "embedded", "django"]}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(spec: str) -> tuple[str, str | None]:
    """(canonical name, exact version or None) of a PEP 508 requirement."""
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(==\s*([^,;\s]+))?", spec)
    assert match, spec
    return canonical(match.group(1)), match.group(3)


def locked(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / f"{name}.lock").read_text()
    pin = r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n\s+--hash=sha256:[0-9a-f]{64}"
    pins = dict(re.findall(pin, text, re.M))
    return {canonical(k): v for k, v in pins.items()}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_locks_pin_every_declared_dependency_with_hashes(lock: str) -> None:
    pins = locked(lock)
    extras = PYPROJECT["project"]["optional-dependencies"]
    specs = PYPROJECT["project"]["dependencies"] + [s for e in LOCKS[lock] for s in extras[e]]
    for spec in specs:
        name, exact = requirement(spec)
        assert name in pins, f"{name} is declared but not in requirements/{lock}.lock"
        if exact:
            assert pins[name] == exact, f"{name}: pyproject pins {exact}, the lock {pins[name]}"
    text = (ROOT / "requirements" / f"{lock}.lock").read_text()
    unhashed = re.findall(r"^([A-Za-z0-9_.\-]+==\S+)\s*$", text, re.M)
    assert not unhashed, unhashed


def imported_modules() -> set[str]:
    """Top-level modules imported by the shipped packages (streams, models, producers)."""
    out = set()
    for package in ("streams", "models", "producers"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    out.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    out.add(node.module.split(".")[0])
    return out


def test_every_imported_package_is_declared() -> None:
    declared = {
        requirement(spec)[0]
        for spec in PYPROJECT["project"]["dependencies"]
        + [s for extra in PYPROJECT["project"]["optional-dependencies"].values() for s in extra]
    }
    ours = {"streams", "models", "producers", "__future__"}
    distributions = packages_distributions()
    undeclared = {}
    for module in imported_modules() - ours - set(sys.stdlib_module_names):
        dists = {canonical(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


# Private names of the pinned faust-streaming / aiokafka (and the stdlib's process pool) that the
# adapter, streams/adapter/, uses: (module, attribute path).
PRIVATE = [
    ("faust.stores.rocksdb", "Store.offset_key"),
    ("faust.stores.rocksdb", "Store._encode_key"),
    ("faust.stores.rocksdb", "Store._db_for_partition"),
    ("faust.transport.drivers.aiokafka", "Consumer._wait_next_records"),
    ("faust.transport.drivers.aiokafka", "Consumer._to_message"),
    ("faust.transport.drivers.aiokafka", "Producer._ensure_producer"),
    ("faust.transport.consumer", "Consumer._add_gap"),
    ("faust.transport.consumer", "Consumer._is_changelog_tp"),
    ("faust.transport.consumer", "ThreadDelegateConsumer._getmany"),
    ("faust.transport.drivers.aiokafka", "Consumer.verify_event_path"),
    ("faust.streams", "_current_event"),
    ("faust.types.tuples", "ack_lock"),
    ("faust.transport.producer", "ProducerBuffer.max_messages"),
    ("faust.app.base", "App._new_consumer"),
    ("aiokafka.producer.producer", "AIOKafkaProducer.create_batch"),
    ("aiokafka.producer.producer", "AIOKafkaProducer.send_batch"),
]
# Instance attributes set in __init__ (checked on the source, since building a consumer needs an
# app): the bookkeeping that offset commits read.
PRIVATE_ATTRIBUTES = {
    "faust.transport.consumer": [
        "_read_offset",
        "_committed_offset",
        "_acked",
        "_acked_index",
        "_n_acked",
    ],
    "faust.transport.drivers.aiokafka": ["_thread", "_consumer"],
    "aiokafka.producer.producer": ["_metadata"],
    "faust.stores.rocksdb": ["_key_index", "_dbs"],
    "concurrent.futures.process": ["_processes"],
}


@pytest.mark.parametrize(("module", "path"), PRIVATE)
def test_private_names_the_worker_relies_on_exist(module: str, path: str) -> None:
    import importlib

    obj = importlib.import_module(module)
    for part in path.split("."):
        assert hasattr(obj, part), (
            f"{module}.{path} is gone: faust-streaming/aiokafka changed; streams/adapter/ relies "
            "on it (pinned in pyproject.toml: upgrade deliberately)"
        )
        obj = getattr(obj, part)


@pytest.mark.parametrize("module", sorted(PRIVATE_ATTRIBUTES))
def test_private_attributes_are_still_set(module: str) -> None:
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module(module))
    for name in PRIVATE_ATTRIBUTES[module]:
        assert f"self.{name}" in source, f"{module} no longer sets self.{name} (streams/adapter/)"


def test_only_the_adapter_touches_private_names() -> None:
    """A private name of the libraries, or a private module of Faust, anywhere in streams/ but
    streams/adapter/ would escape the canary above."""
    names = {path.rsplit(".", 1)[-1] for _, path in PRIVATE}
    names |= {name for attrs in PRIVATE_ATTRIBUTES.values() for name in attrs}
    names = {name for name in names if name.startswith("_")} | {"max_messages"}
    alternatives = "|".join(sorted(names))
    uses = re.compile(rf"\.({alternatives})\b")
    private_modules = re.compile(r"^(from|import) faust\.(stores|transport)\b", re.M)
    offenders = []
    for path in sorted((ROOT / "streams").rglob("*.py")):
        if "adapter" in path.relative_to(ROOT / "streams").parts:
            continue
        text = path.read_text()
        found = set(uses.findall(text)) | {m.group(0) for m in private_modules.finditer(text)}
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(found)]
    assert not offenders, f"private library names outside streams/adapter/: {offenders}"


def test_the_image_runs_as_a_user_and_installs_the_lock() -> None:
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line]
    users = [words[1] for words in lines if words[0] == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    text = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in text and "requirements/demo.lock" in text
