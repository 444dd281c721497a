"""The one configuration object: every knob is a ``SMARTSTREAM_*`` environment variable.

The README's configuration table and docker-compose.yml use exactly these names; a test checks
that docker-compose.yml sets no variable this object does not know.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

PREFIX = "SMARTSTREAM_"


def _env_name(attr: str) -> str:
    return PREFIX + attr.upper()


@dataclass(frozen=True)
class Settings:
    """Runtime configuration; build it with :meth:`from_env`."""

    # Kafka: a comma-separated host:port list; empty under `demo` means "start the embedded broker".
    kafka_bootstrap: str = ""
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    # True when the broker is the embedded Tansu: its ListOffsets under-reports multi-record
    # batches, so changelog producers must send one record per batch for exact recovery.
    kafka_embedded: bool = False
    redis_url: str = ""
    # The CA that signs a rediss:// server's certificate (empty: the system's CAs).
    redis_ssl_cafile: str = ""
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    topic_prefix: str = ""
    partitions: int = 8
    store: str = "memory://"
    data_dir: str = "./run/data"
    broker_session_timeout: float = 10.0
    broker_heartbeat_interval: float = 1.0
    # The most records one fetch hands to an agent (the hot path writes each touched user once
    # per fetch): per-batch overhead vs how long a batch holds the event loop.
    batch_max: int = 5000
    # Input validation.
    max_seconds: float = 86400.0
    max_payload_bytes: int = 65536
    # HTTP ingestion answers 204 only once the broker acknowledged the record; 503 after this.
    ingest_timeout_seconds: float = 5.0
    # Weighted counter of the clustering model (SPEC §3.2, §4): 0 threshold disables it.
    clustering_threshold: int = 1000
    clustering_weight_page_time: int = 1
    clustering_weight_new_user: int = 5
    clustering_cron: str = ""
    clustering_features: str = "avg_time_pages,avg_time_pages_a"
    clustering_components: int = 10
    clustering_restarts: int = 15
    clustering_seed: int = 123456
    # The re-clustering's fit sees at most this many users: a uniform sample by a hash of their
    # ids (models.sample), so its memory and time do not grow with the population.
    clustering_sample_size: int = 200_000
    # Processes a re-clustering's helper reads the worker's partitions and runs the cold fit's
    # restarts on.
    clustering_jobs: int = 2
    # A run (sample and fit, in the helper process) that takes longer is stopped: the previous
    # version keeps serving.
    clustering_fit_timeout_seconds: float = 600.0
    atypical_metric: str = "avg1"
    # Spam filters: comma-separated NAME:PRESET (presets in models.spam.PRESETS); a comment's
    # `filter` field names its filter.
    spam_filters: str = "comments:best"
    moderation_review_threshold: int = 5
    moderation_cron: str = ""
    # The uncertain band: a calibrated score in [low, high) is labelled "pending" (is_spam null)
    # until a moderator decides (streams.review). Equal values disable it: v1 consumers keep a
    # boolean for every comment a model labelled.
    moderation_pending_low: float = 0.5
    moderation_pending_high: float = 0.5
    # Credentials by role (streams.auth): the server token, the admin token, and the public
    # ingest key that page source may carry (beacons and new users only).
    api_token: str = ""
    admin_token: str = ""
    public_ingest_key: str = ""
    # GET /metrics requires the admin token (Prometheus sends it as a bearer token) when true.
    metrics_require_token: bool = False
    log_level: str = "info"  # faust levels: crit, error, warn, info, debug
    # The worker's log lines: `text` for people, `json` (one object per line) for log shippers.
    log_format: str = "text"

    @classmethod
    def env_names(cls) -> set[str]:
        """Every environment variable this object reads."""
        return {_env_name(f.name) for f in fields(cls)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SMARTSTREAM_*`` variables, converting each to the field's type."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = _env_name(f.name)
            if name not in env:
                continue
            values[f.name] = _convert(name, env[name], f.default)
        return cls(**values)

    @property
    def spam_filter_presets(self) -> dict[str, str]:
        """{filter name: preset name} from SMARTSTREAM_SPAM_FILTERS."""
        out = {}
        for item in self.spam_filters.split(","):
            name, _, preset = item.strip().partition(":")
            if name:
                out[name] = preset or "best"
        return out

    @property
    def credentials_configured(self) -> bool:
        """Any credential set: then every route but /health needs one (streams.auth)."""
        return bool(self.api_token or self.admin_token or self.public_ingest_key)

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    def topic(self, name: str) -> str:
        """The full name of a contract topic, with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    @property
    def app_id(self) -> str:
        """Faust app id: prefixes the group id and the changelog topics."""
        return f"{self.topic_prefix}smartstream"

    @property
    def redis_prefix(self) -> str:
        return f"{self.topic_prefix}smartstream:"

    def kafka_python_config(self) -> dict[str, Any]:
        """Connection settings for kafka-python clients (producers, admin)."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            cfg.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        if self.kafka_ssl_cafile:
            cfg["ssl_cafile"] = self.kafka_ssl_cafile
        return cfg

    def redis_options(self) -> dict[str, Any]:
        """redis-py client options beyond the URL: the CA file, for rediss:// URLs only (a plain
        connection refuses TLS options)."""
        if self.redis_ssl_cafile and self.redis_url.startswith("rediss://"):
            return {"ssl_ca_certs": self.redis_ssl_cafile}
        return {}

    def aiokafka_config(self) -> dict[str, Any]:
        """Connection settings for aiokafka clients (the worker's own producer and readers)."""
        cfg: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        if self.kafka_security_protocol == "PLAINTEXT":
            return cfg
        from aiokafka.helpers import create_ssl_context

        cfg["security_protocol"] = self.kafka_security_protocol
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            cfg["ssl_context"] = create_ssl_context(cafile=self.kafka_ssl_cafile or None)
        if self.kafka_sasl_mechanism:
            cfg.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        return cfg


def _convert(name: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}: expected an integer, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{name}: expected a number, got {raw!r}") from None
    return raw
