"""The one settings object, and docker-compose.yml speaking its language."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_settings_read_and_convert_environment():
    s = Settings.from_env(
        {
            "SMARTSTREAM_PARTITIONS": "12",
            "SMARTSTREAM_KAFKA_EMBEDDED": "yes",
            "SMARTSTREAM_MAX_SECONDS": "60.5",
            "SMARTSTREAM_TOPIC_PREFIX": "x-",
            "SMARTSTREAM_KAFKA_BOOTSTRAP": "a:1, b:2",
        }
    )
    assert s.partitions == 12 and s.kafka_embedded is True and s.max_seconds == 60.5
    assert s.topic("page-times") == "x-page-times" and s.app_id == "x-smartstream"
    assert s.bootstrap_servers == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="SMARTSTREAM_PARTITIONS"):
        Settings.from_env({"SMARTSTREAM_PARTITIONS": "many"})


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.env_names() if f"`{name}`" not in readme]
    assert not missing


def test_contract_variables_exist():
    names = Settings.env_names()
    for name in (
        "SMARTSTREAM_KAFKA_BOOTSTRAP",
        "SMARTSTREAM_REDIS_URL",
        "SMARTSTREAM_WEB_PORT",
        "SMARTSTREAM_TOPIC_PREFIX",
        "SMARTSTREAM_PARTITIONS",
    ):
        assert name in names


def test_compose_uses_only_known_variables_and_pinned_images():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "simulator"} <= set(services)
    known = Settings.env_names()
    seen = set()
    for name, service in services.items():
        image = service.get("image", "")
        if name in ("kafka", "redis"):
            repo, _, tag = image.partition(":")
            assert repo in ("apache/kafka", "redis") and tag and tag != "latest", image
        for var in service.get("environment", {}) or {}:
            if var.startswith("SMARTSTREAM_"):
                assert var in known, f"{name}: {var} is not a setting"
                seen.add(var)
    assert "SMARTSTREAM_KAFKA_BOOTSTRAP" in seen and "SMARTSTREAM_REDIS_URL" in seen
    assert "build" in services["worker"]
    readme = (ROOT / "README.md").read_text()
    for var in seen:
        assert var in readme, f"{var} is not documented in the README"
