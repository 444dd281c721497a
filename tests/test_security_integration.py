"""Least privilege for real: a Kafka broker of this test's own with a SASL_SSL listener
(SCRAM-SHA-512), the standard authorizer denying by default and the ACLs of ops/kafka/acls.conf;
a redis-server with TLS and the ACL user docker-compose.yml defines; a SmartStream worker using
both. The layout itself (compose, the ACL script) is checked without servers at the end.

Ground truth for who may write what is written here from the security issue, independently of
acls.conf: the site's principal writes the four event topics and nothing else, only the worker
(which is the trainer when it owns `control`) writes models and user-commands, ops writes control
and pretraining, the worker never writes pretraining.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from producers.population import generate
from producers.traffic import Traffic
from streams.settings import Settings
from streams.topics import CONTRACT_TOPICS, ensure_topics
from tests.conftest import ROOT, Stack, free_port, wait_for

pytestmark = pytest.mark.integration

ACLS = ROOT / "ops" / "kafka" / "acls.conf"
PRINCIPALS = ("worker", "site", "ops")
TOPICS = tuple(spec.name for spec in CONTRACT_TOPICS)
EVENTS = {"page-times", "new-users", "comments", "comment-reviews"}


def expected_writers(topic: str) -> set[str]:
    """Who may write `topic` (the security issue's rules, not read from acls.conf)."""
    if topic in EVENTS:
        return {"site", "worker"}  # the worker's HTTP ingestion produces events too
    if topic == "control":
        return {"worker", "ops"}
    if topic == "pretraining":
        return {"ops"}
    return {"worker"}  # its outputs, and the trainer's models, model-versions, user-commands


# ---------------------------------------------------------------------------------------------
# The layout file


@dataclass(frozen=True)
class Grant:
    principal: str
    operations: tuple[str, ...]
    resource: str
    pattern: str
    names: tuple[str, ...]


def read_layout(path: Path = ACLS) -> list[Grant]:
    """acls.conf's lines, as ops/kafka/acls.sh reads them."""
    grants = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        principal, operations, resource, pattern, *names = line.split()
        operations_ = tuple(operations.split(","))
        grants.append(Grant(principal, operations_, resource, pattern, tuple(names)))
    return grants


def layout_acls(prefix: str) -> list[ACL]:
    """Every ACL of the layout for a deployment whose names start with `prefix`."""
    return [
        ACL(
            f"User:{grant.principal}",
            "*",
            ACLOperation[re.sub(r"(?<!^)(?=[A-Z])", "_", operation).upper()],
            ACLPermissionType.ALLOW,
            ResourcePattern(
                ResourceType[grant.resource.upper()],
                prefix + name,
                ACLResourcePatternType[grant.pattern.upper()],
            ),
        )
        for grant in read_layout()
        for operation in grant.operations
        for name in grant.names
    ]


# ---------------------------------------------------------------------------------------------
# Servers


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
         "-keyout", ca_key, "-out", ca],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", key,
         "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
         "-extfile", ext, "-out", cert],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


def stop_process(pid: int) -> None:
    """SIGTERM, then SIGKILL if it is still there after 30 s."""
    try:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, f"process {pid} to stop")
    except ProcessLookupError:
        return
    except AssertionError:
        os.kill(pid, signal.SIGKILL)


@dataclass
class SecureKafka:
    """The test's broker: SASL_SSL on `bootstrap`, principals admin, worker, site and ops."""

    bootstrap: str
    cafile: str
    passwords: dict[str, str]

    def env(self, user: str, password: str | None = None) -> dict[str, str]:
        return {
            "SMARTSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "SMARTSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SMARTSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SMARTSTREAM_KAFKA_SASL_USERNAME": user,
            "SMARTSTREAM_KAFKA_SASL_PASSWORD": password or self.passwords[user],
            "SMARTSTREAM_KAFKA_SSL_CAFILE": self.cafile,
        }

    def settings(self, user: str, prefix: str) -> Settings:
        return Settings.from_env({**self.env(user), "SMARTSTREAM_TOPIC_PREFIX": prefix})

    def admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(**self.settings("admin", "").kafka_python_config())

    def authorize(self, prefix: str) -> None:
        """Create the layout's ACLs for the deployment named by `prefix`, as admin, and wait
        until the broker's authorizer has them (they reach it through the metadata log)."""
        wanted = layout_acls(prefix)
        admin = self.admin()
        try:
            result = admin.create_acls(wanted)
            assert not result["failed"], result["failed"]
            everything = ACLFilter(
                None,
                None,
                ACLOperation.ANY,
                ACLPermissionType.ANY,
                ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
            )
            keys = {acl_key(acl) for acl in wanted}
            wait_for(
                lambda: keys <= {acl_key(a) for a in admin.describe_acls(everything)[0]},
                30,
                "the broker's authorizer to hold the new ACLs",
            )
        finally:
            admin.close()


def acl_key(acl: ACL) -> tuple[Any, ...]:
    pattern = acl.resource_pattern
    return (acl.principal, acl.operation, pattern.resource_type, pattern.pattern_type,
            pattern.resource_name)  # fmt: skip


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """Start the broker with .ci/kafka/start-sasl.sh (admin only), add the three principals as
    admin (what ops/kafka/acls.sh does with kafka-configs.sh), stop it at the end."""
    for tool in ("java", "openssl"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is needed for the SASL_SSL broker")
    jars = ROOT / ".ci" / "kafka" / "target" / "dependency"
    if not list(jars.glob("kafka_2.13-*.jar")) and not shutil.which("mvn"):
        pytest.skip("no Kafka jars (.ci/kafka/target/dependency) and no Maven to fetch them")
    directory = tmp_path_factory.mktemp("sasl-kafka")
    passwords = {user: secrets.token_hex(16) for user in ("admin", *PRINCIPALS)}
    started = subprocess.run(
        ["bash", str(ROOT / ".ci" / "kafka" / "start-sasl.sh"), str(directory),
         str(free_port()), str(free_port())],
        env={**os.environ, "KAFKA_ADMIN_PASSWORD": passwords["admin"]},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    pid_file = directory / "kafka.pid"
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        kafka = SecureKafka(started.stdout.strip(), str(directory / "tls" / "ca.crt"), passwords)
        admin = kafka.admin()
        try:
            failed = admin.alter_user_scram_credentials(
                [
                    UserScramCredentialUpsertion(u, ScramMechanism.SCRAM_SHA_512, passwords[u])
                    for u in PRINCIPALS
                ]
            )
        finally:
            admin.close()
        assert failed == dict.fromkeys(PRINCIPALS), failed
        yield kafka
    finally:
        if pid_file.exists():
            stop_process(int(pid_file.read_text()))


class TlsRedis:
    """redis-server on a TLS-only loopback port with docker-compose.yml's ACL user, whose key
    pattern is made to match the test's key prefix."""

    def __init__(self, directory: Path, password: str, prefix: str) -> None:
        if not shutil.which("redis-server"):
            pytest.skip("redis-server is not installed")
        self.directory = directory
        self.password = password
        self.prefix = prefix
        self.port = free_port()
        self.ca, self.cert, self.key = make_certificates(directory / "tls")
        self.proc: subprocess.Popen | None = None

    def url(self, password: str | None = None) -> str:
        return f"rediss://smartstream:{password or self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = compose_redis_arguments(self.password, self.prefix)
        self.proc = subprocess.Popen(
            ["redis-server", *args, "--dir", str(self.directory), "--save", "",
             "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(self.port),
             "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
             "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: self.answers(), 20, "redis-server over TLS")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(), ssl_ca_certs=str(self.ca), socket_timeout=5)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def compose_redis_arguments(password: str, prefix: str) -> list[str]:
    """docker-compose.yml's redis-server arguments, with this password and key prefix."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    args = [re.sub(r"\$\{REDIS_PASSWORD[^}]*\}", password, arg) for arg in command[1:]]
    return [arg.replace("~smartstream:*", f"~{prefix}smartstream:*") for arg in args]


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path / "redis", secrets.token_hex(16), "")
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------
# Kafka: principals and ACLs


def test_each_principal_writes_and_reads_exactly_what_it_is_granted(
    secure_kafka: SecureKafka,
) -> None:
    prefix = "acl-"
    ensure_topics(secure_kafka.settings("admin", prefix))
    secure_kafka.authorize(prefix)
    for principal in PRINCIPALS:
        settings = secure_kafka.settings(principal, prefix)
        writable = set()
        producer = None
        for topic in TOPICS:
            # A refusal sticks to a kafka-python producer: the next topic gets a new one.
            producer = producer or KafkaProducer(**settings.kafka_python_config())
            try:
                producer.send(settings.topic(topic), key=b"k", value=b"{}", partition=0).get(10)
                writable.add(topic)
            except TopicAuthorizationFailedError:
                producer.close()
                producer = None
        if producer:
            producer.close()
        assert writable == {t for t in TOPICS if principal in expected_writers(t)}, principal

    # Every partition 0 now holds a record: reading it back tells whether reading is allowed.
    # Topics a principal may not even describe are hidden from its metadata.
    for principal in PRINCIPALS:
        settings = secure_kafka.settings(principal, prefix)
        visible, readable = set(), set()
        for topic in TOPICS:
            seen, read = reading(settings, settings.topic(topic))
            visible |= {topic} if seen else set()
            readable |= {topic} if read else set()
        assert visible == (EVENTS if principal == "site" else set(TOPICS)), principal
        assert readable == (set(TOPICS) if principal == "worker" else set()), principal


def reading(settings: Settings, topic: str) -> tuple[bool, bool]:
    """(the topic is in the principal's metadata, its first record could be read)."""
    consumer = KafkaConsumer(**settings.kafka_python_config(), enable_auto_commit=False)
    try:
        if not consumer.partitions_for_topic(topic):
            return False, False
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        return True, bool(wait_for(lambda: consumer.poll(timeout_ms=200), 20, f"{topic}'s record"))
    except TopicAuthorizationFailedError:
        return True, False
    finally:
        consumer.close()


def test_clients_without_valid_credentials_are_refused(
    secure_kafka: SecureKafka, caplog: pytest.LogCaptureFixture
) -> None:
    site = secure_kafka.settings("site", "")
    good = site.kafka_python_config()
    wrong_password = Settings.from_env(
        {**secure_kafka.env("site", password="not-" + secure_kafka.passwords["site"])}
    ).kafka_python_config()
    refused = {
        "unauthenticated": {"bootstrap_servers": good["bootstrap_servers"]},
        "TLS without SASL": {**good, "security_protocol": "SSL"},
        "wrong password": wrong_password,
        "no CA": {**good, "ssl_cafile": None},
    }
    KafkaProducer(**good, bootstrap_timeout_ms=10_000).close()  # the same client, authenticated
    reasons = {}
    for name, config in refused.items():
        # Under a full suite's load the broker's close after a failed SCRAM exchange once
        # reached the client before it read the failure (a bare "socket disconnected"): every
        # attempt must be refused, and one of three must show the broker's own answer.
        for _ in range(3 if name == "wrong password" else 1):
            caplog.clear()
            # Long enough for a TLS handshake and a SCRAM exchange on a loaded machine: the
            # refusal must be the broker's answer, not the client's patience running out first.
            timeout = 2_000 if name in ("unauthenticated", "TLS without SASL") else 15_000
            with caplog.at_level(logging.WARNING, logger="kafka"), pytest.raises(KafkaTimeoutError):
                KafkaProducer(**config, bootstrap_timeout_ms=timeout)
            reasons[name] = caplog.text
            if "SaslAuthenticationFailedError" in reasons[name]:
                break
    assert "SaslAuthenticationFailedError" in reasons["wrong password"]
    assert "CERTIFICATE_VERIFY_FAILED" in reasons["no CA"]
    for name in ("unauthenticated", "TLS without SASL"):
        assert "Bootstrap" in reasons[name] and "SaslAuthentication" not in reasons[name]


# ---------------------------------------------------------------------------------------------
# A worker over SASL_SSL, its Redis over TLS with an ACL user


def events_processed(worker: Any) -> float:
    """smartstream_events_total over the user-keyed topics, from GET /metrics."""
    status, text = worker.get("/metrics")
    if status != 200:
        return -1.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("smartstream_events_total{")
        and ("page-times" in line or "new-users" in line)
    )


def test_worker_runs_as_its_principal_over_sasl_ssl_and_mirrors_to_redis_over_tls(
    secure_kafka: SecureKafka, tls_redis: TlsRedis, tmp_path: Path
) -> None:
    """The compose layout (prefix ""): the worker creates the topics, runs the pipeline with the
    site's events, becomes the trainer on `ops`'s request and publishes the model, all under its
    ACLs; it starts while Redis is down and mirrors every user once Redis answers."""
    secure_kafka.authorize("")
    stack = Stack(
        secure_kafka.bootstrap,
        tls_redis.url(),
        tmp_path,
        **secure_kafka.env("worker"),
        SMARTSTREAM_TOPIC_PREFIX="",
        SMARTSTREAM_REDIS_SSL_CAFILE=str(tls_redis.ca),
        SMARTSTREAM_CLUSTERING_THRESHOLD="0",
    )
    try:
        worker = stack.start_worker(SMARTSTREAM_LOG_LEVEL="info")
        tls_redis.start()

        from producers.client import SmartStreamProducer

        producer = SmartStreamProducer(secure_kafka.settings("site", ""))
        traffic = Traffic(generate(200), seed=5)
        sent = 0
        for event in [*traffic.new_users(), *traffic.history()]:
            producer.send(event.topic, event.key, event.value)
            sent += 1
        producer.flush()
        producer.close()
        wait_for(lambda: events_processed(worker) == sent, 120, "the site's events processed")
        _, first = worker.get("/users/1")  # the original population's first user, exactly
        assert first["avg_time_pages"] == pytest.approx(19.9106, abs=1e-4)
        assert (first["visits_pages"], first["visits_pages_a"], first["age"]) == (102, 36, 27)

        ops = subprocess.run(
            [sys.executable, "-m", "streams.cli", "recluster"],
            env={**stack.env, **secure_kafka.env("ops")},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ops.returncode == 0, ops.stderr[-2000:]
        clusters = wait_for(
            lambda: (c := worker.get("/clusters")[1]) and c["current"] and c["current"],
            120,
            "the re-clustering ops requested",
        )
        assert sorted(c["size"] for c in clusters["clusters"]) == [49, 50, 50, 51]

        client = tls_redis.client()

        def mirrored() -> list[dict] | None:
            raw = [client.get(f"smartstream:user:{i}") for i in range(1, 201)]
            users = [json.loads(r) for r in raw if r]
            done = len(users) == 200 and all(u.get("model_version") for u in users)
            return users if done else None

        users = wait_for(mirrored, 60, "every user, assigned, in Redis over TLS")
        assert users[0] == worker.get("/users/1")[1]
        assert sum(bool(u["atypical"]) for u in users) == 9
        log = worker.tail(10_000)
        assert "AuthorizationFailed" not in log and "NOPERM" not in log
    finally:
        stack.stop()


def run_worker(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_worker_refuses_to_start_with_a_wrong_redis_password_or_an_unknown_ca(
    secure_kafka: SecureKafka, tls_redis: TlsRedis, tmp_path: Path
) -> None:
    tls_redis.start()
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMARTSTREAM_")},
        **secure_kafka.env("worker"),
        "SMARTSTREAM_WEB_PORT": str(free_port()),
        "SMARTSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SMARTSTREAM_REDIS_SSL_CAFILE": str(tls_redis.ca),
    }
    wrong = "not-" + tls_redis.password
    bad_password = run_worker({**base, "SMARTSTREAM_REDIS_URL": tls_redis.url(wrong)}, tmp_path)
    assert bad_password.returncode == 78, bad_password.stderr[-2000:]
    assert "Redis authentication failed" in bad_password.stderr
    assert wrong not in bad_password.stderr + bad_password.stdout

    no_ca = {**base, "SMARTSTREAM_REDIS_URL": tls_redis.url(), "SMARTSTREAM_REDIS_SSL_CAFILE": ""}
    unknown_ca = run_worker(no_ca, tmp_path)
    assert unknown_ca.returncode == 78, unknown_ca.stderr[-2000:]
    assert "Redis TLS failed" in unknown_ca.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in unknown_ca.stderr

    other_keys = {"SMARTSTREAM_REDIS_URL": tls_redis.url(), "SMARTSTREAM_TOPIC_PREFIX": "x-"}
    denied_keys = run_worker({**base, **other_keys}, tmp_path)
    assert denied_keys.returncode == 78, denied_keys.stderr[-2000:]
    assert "may not use the keys x-smartstream:*" in denied_keys.stderr


# ---------------------------------------------------------------------------------------------
# The deployment's layout, without servers


def test_acl_layout_covers_every_topic_and_grants_the_rules() -> None:
    grants = read_layout()
    assert {g.principal for g in grants} == set(PRINCIPALS)
    granted: dict[tuple[str, str], set[str]] = {}
    for acl in layout_acls(""):
        pattern = acl.resource_pattern
        if pattern.resource_type == ResourceType.TOPIC:
            if pattern.pattern_type == ACLResourcePatternType.PREFIXED:
                assert pattern.resource_name == "smartstream-", "only the worker's own topics"
                continue
            key = (acl.principal.removeprefix("User:"), pattern.resource_name)
            granted.setdefault(key, set()).add(acl.operation.name)
    for topic in TOPICS:
        writers = {p for p in PRINCIPALS if "WRITE" in granted.get((p, topic), set())}
        assert writers == expected_writers(topic), topic
        assert {"READ", "CREATE"} <= granted[("worker", topic)], topic  # reads all, creates them
        assert granted[("ops", topic)] & {"DESCRIBE", "WRITE"}, topic  # `pretrain` lists them
        for principal in ("site", "ops"):
            assert "READ" not in granted.get((principal, topic), set()), (principal, topic)
    assert ("User:worker", ResourceType.GROUP, "smartstream") in {
        (a.principal, a.resource_pattern.resource_type, a.resource_pattern.resource_name)
        for a in layout_acls("")
    }


def test_acl_script_applies_the_layout_with_kafka_tools(tmp_path: Path) -> None:
    """ops/kafka/acls.sh (compose's kafka-init) turns the layout into kafka-configs.sh and
    kafka-acls.sh calls: recorded here by stand-in tools (the broker tests above apply the same
    layout through the admin API)."""
    calls = tmp_path / "calls"
    for tool in ("kafka-configs.sh", "kafka-acls.sh"):
        stand_in = tmp_path / tool
        stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool}" "$@" "--end" >> "{calls}"\n')
        stand_in.chmod(0o755)
    names = ("admin", *PRINCIPALS)
    passwords = {f"KAFKA_{u.upper()}_PASSWORD": secrets.token_hex(12) for u in names}
    done = subprocess.run(
        ["bash", str(ROOT / "ops" / "kafka" / "acls.sh")],
        env={**os.environ, **passwords, "KAFKA_BIN": str(tmp_path), "KAFKA_BOOTSTRAP": "k:9092",
             "SMARTSTREAM_TOPIC_PREFIX": "p-"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    invocations, current = [], []
    for line in calls.read_text().splitlines():
        if line == "--end":
            invocations.append(current)
            current = []
        else:
            current.append(line)
    users = {}
    applied = set()
    for call in invocations:
        tool, args = call[0], call[1:]
        assert args[:4] == ["--bootstrap-server", "k:9092", "--command-config", args[3]]
        if tool == "kafka-configs.sh":
            users[args[args.index("--entity-name") + 1]] = args[args.index("--add-config") + 1]
            continue
        principal = args[args.index("--allow-principal") + 1]
        pattern = args[args.index("--resource-pattern-type") + 1]
        operations = [args[i + 1] for i, a in enumerate(args) if a == "--operation"]
        resources = [
            (a[2:], args[i + 1]) for i, a in enumerate(args) if a in ("--topic", "--group")
        ]
        applied |= {(principal, o, r, pattern, n) for o in operations for r, n in resources}
    assert users == {
        u: f"SCRAM-SHA-512=[iterations=8192,password={passwords[f'KAFKA_{u.upper()}_PASSWORD']}]"
        for u in PRINCIPALS
    }
    expected = {
        (acl.principal, name_of(acl.operation), acl.resource_pattern.resource_type.name.lower(),
         acl.resource_pattern.pattern_type.name.lower(), acl.resource_pattern.resource_name)
        for acl in layout_acls("p-")
    }  # fmt: skip
    assert applied == expected


def name_of(operation: ACLOperation) -> str:
    """kafka-acls.sh's spelling of an operation (Read, DescribeConfigs)."""
    return "".join(part.capitalize() for part in operation.name.split("_"))


def test_compose_uses_a_principal_per_service_and_binds_ports_to_loopback() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    users = {
        name: service["environment"].get("SMARTSTREAM_KAFKA_SASL_USERNAME")
        for name, service in services.items()
        if isinstance(service.get("environment"), dict)
        and "SMARTSTREAM_KAFKA_BOOTSTRAP" in service["environment"]
    }
    assert users == {"worker": "worker", "simulator": "site", "ops": "ops"}
    for name in users:
        env = services[name]["environment"]
        assert env["SMARTSTREAM_KAFKA_SECURITY_PROTOCOL"] in ("SASL_PLAINTEXT", "SASL_SSL")
        assert env["SMARTSTREAM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        # Each service gets its own secret from .env, never a literal or another's.
        secret = f"${{KAFKA_{users[name].upper()}_PASSWORD:?"
        assert env["SMARTSTREAM_KAFKA_SASL_PASSWORD"].startswith(secret)
    assert "${REDIS_PASSWORD" in services["worker"]["environment"]["SMARTSTREAM_REDIS_URL"]
    assert services["worker"]["depends_on"]["kafka-init"] == {
        "condition": "service_completed_successfully"
    }
    assert services["kafka"]["command"] == ["bash", "/ops/kafka/broker.sh"]
    assert services["kafka-init"]["command"] == ["bash", "/ops/kafka/acls.sh"]
    redis_args = services["redis"]["command"]
    assert redis_args[redis_args.index("default") + 1] == "off"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"

    example = (ROOT / ".env.example").read_text()
    wanted = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert wanted <= set(re.findall(r"^([A-Z_]+)=", example, re.M))
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    broker = (ROOT / "ops" / "kafka" / "security.sh").read_text()
    for line in (
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin",
        "allow.everyone.if.no.acl.found=false",
    ):
        assert line in broker
