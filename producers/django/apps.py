"""The Django app: label ``smartstream``; checks the SMARTSTREAM dict at startup (``manage.py
check``, runserver, tests) and rebuilds clients when the setting changes (override_settings)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed


class SmartStreamConfig(AppConfig):
    name = "producers.django"
    label = "smartstream"
    verbose_name = "SmartStream"

    def ready(self) -> None:
        checks.register(check_settings)
        setting_changed.connect(on_setting_changed)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A wrong SMARTSTREAM dict is an error at startup, not a surprise at the first event."""
    from producers.django import conf

    try:
        conf.build(getattr(conf.django_settings, "SMARTSTREAM", {}))
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="smartstream.E001")]
    return []


def on_setting_changed(setting: str, **kwargs: Any) -> None:
    """New settings, new clients: the buffered events are flushed to the old broker first."""
    if setting != "SMARTSTREAM":
        return
    from producers.django import conf, events, readers

    events.close()
    readers.reader.close()
    conf.reset()
