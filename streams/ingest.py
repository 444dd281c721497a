"""HTTP ingestion (CONTRACT.md): the write routes of page-time, new-user and comment events,
answered 204 only once the broker acknowledged the record.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.app import (
    app,
    comments_topic,
    new_users_topic,
    page_times_topic,
    produce_acknowledged,
    settings,
)
from streams.auth import Role, json_body, requires
from streams.records import Rejected, loads_object, parse_comment, parse_new_user, parse_page_time


async def read_json_body(request: Request) -> dict[str, Any]:
    """The whole body as a JSON object (application/json or the beacon's text/plain), read to
    its end: one read returns only what has arrived so far, and a body split over TCP segments
    would be cut short."""
    limit = settings.max_payload_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise Rejected(f"payload too large: {length} bytes > {limit}")
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise Rejected(f"payload too large: more than {limit} bytes")
    return loads_object(bytes(body), limit)


class _Ingest(View):
    async def _produce(self, request: Request) -> Response:
        try:
            obj = await read_json_body(request)
            topic, key, value = self.record(obj)
        except Rejected as exc:
            return self.json({"error": str(exc)}, status=400)
        failure = await produce_acknowledged(topic, key.encode(), value)
        if failure is not None:
            return self.json({"error": failure}, status=503)
        return self.bytes(b"", status=204)

    def record(self, obj: dict[str, Any]) -> tuple[faust.TopicT, str, bytes]:
        raise NotImplementedError


@app.page("/events/page-time")
class PageTimeIngest(_Ingest):
    """The beacon's route: text/plain bodies allowed (navigator.sendBeacon), public key."""

    @requires(Role.INGEST)
    async def post(self, request: Request) -> Response:
        return await self._produce(request)

    def record(self, obj: dict[str, Any]) -> tuple[faust.TopicT, str, bytes]:
        event = parse_page_time(obj, settings.max_seconds)
        if event.event_id is None or event.ts is None:
            event = type(event)(
                event.user_id,
                event.page_type,
                event.seconds,
                event.event_id or uuid.uuid4().hex,
                event.ts or time.time(),
            )
        return page_times_topic, event.user_id, event.dumps()


@app.page("/events/new-user")
class NewUserIngest(_Ingest):
    @requires(Role.INGEST)
    @json_body
    async def post(self, request: Request) -> Response:
        return await self._produce(request)

    def record(self, obj: dict[str, Any]) -> tuple[faust.TopicT, str, bytes]:
        event = parse_new_user(obj)
        return new_users_topic, event.user_id, event.dumps()


@app.page("/comments")
class CommentIngest(_Ingest):
    @requires(Role.SERVER)
    @json_body
    async def post(self, request: Request) -> Response:
        return await self._produce(request)

    def record(self, obj: dict[str, Any]) -> tuple[faust.TopicT, str, bytes]:
        comment = parse_comment(obj)
        return comments_topic, comment.comment_id, comment.dumps()
