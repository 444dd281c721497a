"""The site's ``SMARTSTREAM`` settings dict, mapped onto :class:`streams.settings.Settings`.

Its keys are the ``SMARTSTREAM_*`` names without the prefix (``KAFKA_BOOTSTRAP``, ``REDIS_URL``,
``TOPIC_PREFIX``, ``PUBLIC_INGEST_KEY``, ...), so a site's settings.py and the workers'
environment say the same thing in the same words. The dict wins; the environment fills in what it
leaves out. The keys of :data:`SITE_OPTIONS` concern only the site.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from streams.settings import PREFIX, Settings

SITE_OPTIONS: dict[str, Any] = {
    # The worker's POST /events/page-time as browsers reach it; the tag adds ?key=.
    "BEACON_ENDPOINT": "",
    # URL of smartstream-beacon.js when the site serves it (a Content-Security-Policy without
    # inline scripts); empty: the tag inlines the script.
    "BEACON_SRC": "",
    # callable(request) -> the user id of the page, or None to send no beacon (dotted path too).
    "USER_ID": "producers.django.conf.authenticated_user_id",
    # The longest a send may hold a request (broker bootstrap, topic metadata, a full buffer).
    "SEND_TIMEOUT_SECONDS": 1.0,
    # Redis socket timeouts of the readers.
    "READ_TIMEOUT_SECONDS": 0.5,
    # How long the exit flush may wait for the broker.
    "FLUSH_TIMEOUT_SECONDS": 10.0,
    # Extra kafka-python KafkaProducer options, e.g. {"linger_ms": 20, "compression_type": "gzip"}.
    "PRODUCER": {},
}
SETTINGS_KEYS = frozenset(f.name.upper() for f in fields(Settings))


@dataclass(frozen=True)
class Config:
    """Everything the integration reads, checked once."""

    settings: Settings
    beacon_endpoint: str
    beacon_src: str
    user_id: Callable[[Any], Any]
    send_timeout: float
    read_timeout: float
    flush_timeout: float
    producer: dict[str, Any]


def authenticated_user_id(request: Any) -> Any:
    """The default USER_ID: the logged-in user's primary key; anonymous visitors send nothing."""
    user = getattr(request, "user", None)
    return user.pk if user is not None and user.is_authenticated else None


def text_id(value: Any) -> str | None:
    """An id as the contract carries it: a string (an integer key as its decimal string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):  # KAFKA_BOOTSTRAP as a list of host:port
        return ",".join(str(v) for v in value)
    return str(value)


def build(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """A Config from a SMARTSTREAM dict; ImproperlyConfigured names what is wrong."""
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured("SMARTSTREAM must be a dict")
    unknown = sorted(set(options) - SETTINGS_KEYS - set(SITE_OPTIONS))
    if unknown:
        raise ImproperlyConfigured(f"SMARTSTREAM: unknown keys {unknown}")
    env = dict(os.environ if environ is None else environ)
    env.update({PREFIX + k: _env_text(v) for k, v in options.items() if k in SETTINGS_KEYS})
    try:
        settings = Settings.from_env(env)
    except ValueError as exc:
        raise ImproperlyConfigured(f"SMARTSTREAM: {exc}") from None
    site = {**SITE_OPTIONS, **{k: v for k, v in options.items() if k in SITE_OPTIONS}}
    user_id = site["USER_ID"]
    if isinstance(user_id, str):
        user_id = import_string(user_id)
    if not callable(user_id):
        raise ImproperlyConfigured("SMARTSTREAM['USER_ID'] must be a callable or its dotted path")
    if not isinstance(site["PRODUCER"], Mapping):
        raise ImproperlyConfigured("SMARTSTREAM['PRODUCER'] must be a dict")
    try:
        timeouts = [
            float(site[k])
            for k in ("SEND_TIMEOUT_SECONDS", "READ_TIMEOUT_SECONDS", "FLUSH_TIMEOUT_SECONDS")
        ]
    except (TypeError, ValueError):
        raise ImproperlyConfigured("SMARTSTREAM: timeouts must be numbers of seconds") from None
    if not all(0 < t < 3600 for t in timeouts):
        raise ImproperlyConfigured("SMARTSTREAM: timeouts must be between 0 and 3600 seconds")
    return Config(
        settings=settings,
        beacon_endpoint=str(site["BEACON_ENDPOINT"]),
        beacon_src=str(site["BEACON_SRC"]),
        user_id=user_id,
        send_timeout=timeouts[0],
        read_timeout=timeouts[1],
        flush_timeout=timeouts[2],
        producer=dict(site["PRODUCER"]),
    )


@functools.cache
def config() -> Config:
    """The site's configuration (cached; reset when the SMARTSTREAM setting changes)."""
    return build(getattr(django_settings, "SMARTSTREAM", {}))


def reset() -> None:
    config.cache_clear()
