"""The site's client: produce the contract's events with kafka-python, keyed correctly (a
user's events by user id, a comment's by comment id), each encoded by its topic's codec."""

from __future__ import annotations

import time
import uuid
from typing import Any

from streams import topics as t
from streams.records import Comment, CommentReview, NewUser, PageTime
from streams.sender import Sender


class SmartStreamProducer(Sender):
    """The contract's producer with a helper per site event."""

    def page_time(self, user_id: str, page_type: str, seconds: float, **fields: Any) -> Any:
        event = PageTime(
            user_id=user_id,
            page_type=page_type,
            seconds=seconds,
            event_id=fields.pop("event_id", uuid.uuid4().hex),
            ts=fields.pop("ts", time.time()),
            **fields,
        )
        return self.send(t.PAGE_TIMES, user_id, event)

    def new_user(self, user_id: str, **fields: Any) -> Any:
        event = NewUser(user_id=user_id, ts=fields.pop("ts", time.time()), **fields)
        return self.send(t.NEW_USERS, user_id, event)

    def comment(self, comment_id: str, text: str, **fields: Any) -> Any:
        event = Comment(
            comment_id=comment_id, text=text, ts=fields.pop("ts", time.time()), **fields
        )
        return self.send(t.COMMENTS, comment_id, event)

    def review(self, comment_id: str, is_spam: bool, reviewer: str | None = None) -> Any:
        verdict = CommentReview(
            comment_id=comment_id, is_spam=is_spam, reviewer=reviewer, ts=time.time()
        )
        return self.send(t.COMMENT_REVIEWS, comment_id, verdict)
