"""Credentials by role (README "Security"), checked on every route that writes, reveals personal
data or shows internals.

* Public ingest key (`SMARTSTREAM_PUBLIC_INGEST_KEY`): may appear in page source, so it only
  allows page-time beacons and new-user events; `navigator.sendBeacon` cannot set headers, so it
  comes as `?key=` (or as a bearer token).
* Server token (`SMARTSTREAM_API_TOKEN`, its contract meaning): the site's back end: every
  ingestion route, comments and reviews, reads of users, comments, models and counters.
* Admin token (`SMARTSTREAM_ADMIN_TOKEN`): everything, including the dashboard's data, model
  operations and erasure. Without one, the server token holds the admin role too.

Tokens travel only in `Authorization: Bearer` headers. With no credential configured every route
is open (the demo). Comparisons are constant-time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from base64 import b64encode
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any

from faust.web import Request, Response, View

from streams.app import settings


class Role(IntEnum):
    """What a credential allows; each role includes the ones below it."""

    INGEST = 1
    SERVER = 2
    ADMIN = 3


def configured() -> bool:
    return settings.credentials_configured


def _same(given: str, expected: str) -> bool:
    # aiohttp keeps undecodable header bytes as surrogates: encode them back, never raise (500).
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def granted(request: Request) -> Role | None:
    """The role the request's credential grants, or None."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        given = header[7:]
    elif header:
        return None
    else:
        given = request.query.get("key", "")
        key = settings.public_ingest_key
        return Role.INGEST if given and key and _same(given, key) else None
    for secret, role in (
        (settings.admin_token, Role.ADMIN),
        (settings.api_token, Role.SERVER if settings.admin_token else Role.ADMIN),
        (settings.public_ingest_key, Role.INGEST),
    ):
        if secret and _same(given, secret):
            return role
    return None


Handler = Callable[..., Awaitable[Response]]


def requires(role: Role) -> Callable[[Handler], Handler]:
    """Answer 401 without a valid credential and 403 with one whose role is too low, when any
    credential is configured."""

    def decorator(method: Handler) -> Handler:
        @functools.wraps(method)
        async def guarded(self: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            if configured():
                have = granted(request)
                if have is None:
                    return self.json({"error": "missing or wrong credential"}, status=401)
                if have < role:
                    return self.json({"error": f"needs the {role.name.lower()} role"}, status=403)
            return await method(self, request, *args, **kwargs)

        return guarded

    return decorator


def json_body(method: Handler) -> Handler:
    """Refuse a write whose body is not declared as JSON (415): a cross-site page can make a
    visitor's browser post text/plain without a preflight, never application/json."""

    @functools.wraps(method)
    async def guarded(self: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return self.json({"error": "Content-Type must be application/json"}, status=415)
        return await method(self, request, *args, **kwargs)

    return guarded


_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


@functools.cache
def _policy(page: bytes) -> str:
    hashes = " ".join(
        f"'sha256-{b64encode(hashlib.sha256(s).digest()).decode()}'" for s in _SCRIPT.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def html_response(view: View, page: bytes) -> Response:
    """A static page with a Content-Security-Policy that allows its own inline scripts (by
    hash) and nothing from elsewhere, and no Referer on its links (pages carry `?key=`)."""
    headers = {"Content-Security-Policy": _policy(page), "Referrer-Policy": "no-referrer"}
    return view.bytes(page, content_type="text/html", headers=headers)
