"""``{% load smartstream %}{% smartstream_beacon "A" %}``: the time-on-page beacon of a page.

Renders producers/web/smartstream-beacon.js (inline, or ``BEACON_SRC``) with the endpoint, the
page's user and page type as data attributes. sendBeacon cannot set headers, so the credential
travels as ``?key=`` in the endpoint: the PUBLIC ingest key, which may sit in page source and only
allows beacons and new users; the server token never reaches a page. Every value is HTML-escaped.
A page without a user (anonymous, by default) or a wrong page type renders nothing: a template
never fails because of the beacon.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from producers.django.conf import config, text_id
from streams.records import PAGE_TYPES

log = logging.getLogger(__name__)
register = template.Library()
BEACON_JS = Path(__file__).resolve().parents[2] / "web" / "smartstream-beacon.js"


@functools.cache
def beacon_script() -> SafeString:
    """The beacon's source, ours, so safe to inline once no "</" can close the element (in JS
    text "<\\/" means the same)."""
    return mark_safe(BEACON_JS.read_text(encoding="utf-8").replace("</", "<\\/"))


def endpoint_with_key(endpoint: str, key: str) -> str:
    """`endpoint` with ``key=`` set in its query (any key already there replaced)."""
    if not key:
        return endpoint
    parts = urlsplit(endpoint)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "key"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("key", key)])))


@register.simple_tag(takes_context=True)
def smartstream_beacon(context: template.Context, page_type: str, user_id: Any = None) -> str:
    """The beacon of this page; `user_id` overrides the USER_ID callable's answer."""
    try:
        cfg = config()
        if user_id is None:
            request = getattr(context, "request", None) or context.get("request")
            user_id = cfg.user_id(request) if request is not None else None
        uid = text_id(user_id)
        kind = page_type.upper() if isinstance(page_type, str) else ""
        if uid is None:
            return ""
        if len(kind) != 1 or kind not in PAGE_TYPES:
            log.warning("smartstream_beacon: page type must be one letter A..J, got %r", page_type)
            return ""
        if not cfg.beacon_endpoint:
            log.warning("smartstream_beacon: SMARTSTREAM['BEACON_ENDPOINT'] is not set")
            return ""
        endpoint = endpoint_with_key(cfg.beacon_endpoint, cfg.settings.public_ingest_key)
    except Exception:
        log.exception("smartstream_beacon failed; the page renders without it")
        return ""
    attributes = format_html(
        'data-endpoint="{}" data-user-id="{}" data-page-type="{}"', endpoint, uid, kind
    )
    if cfg.beacon_src:
        return format_html('<script src="{}" {}></script>', cfg.beacon_src, attributes)
    return format_html("<script {}>{}</script>", attributes, beacon_script())
