"""Optional bearer token on the write routes and the dashboard (SMARTSTREAM_API_TOKEN).

`navigator.sendBeacon` cannot set headers, so the token may also come as `?token=` in the URL.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from faust.web import Request, Response, View

from streams.app import settings


def authorized(request: Request) -> bool:
    if not settings.api_token:
        return True
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    # aiohttp keeps undecodable header bytes as surrogates: encode them back, never raise (500).
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), settings.api_token.encode()
    )


def token_required(
    method: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """Answer 401 unless the request carries the configured token."""

    @functools.wraps(method)
    async def guarded(self: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not authorized(request):
            return self.json({"error": "missing or wrong bearer token"}, status=401)
        return await method(self, request, *args, **kwargs)

    return guarded
