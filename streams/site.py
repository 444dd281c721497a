"""The demo site, the original's "Seeing is believing" pages (SPEC §8): pages of type A..J for a
user, with the live time-on-page counter, the user's group and group means, "New User", "Go to
Another Page", the group-mean modal and the beacon on leaving; and the comments page. Every
action goes through the HTTP routes and Kafka like real traffic."""

from __future__ import annotations

from pathlib import Path

from faust.web import Request, Response, View

from streams.app import app
from streams.auth import Role, html_response, requires
from streams.moderation import filters, latest_comments
from streams.user_events import recent_users

PAGE = (Path(__file__).parent / "static" / "page.html").read_bytes()
DEFAULT_FILTER = "comments"


@app.page("/pages/{page_type}/{user_id}")
class SitePage(View):
    """The page is static: it reads its type and user from the address and fills itself in."""

    async def get(self, request: Request, page_type: str, user_id: str) -> Response:
        return html_response(self, PAGE)


@app.page("/pages")
class SiteIndex(View):
    async def get(self, request: Request) -> Response:
        user = next(reversed(recent_users), "1")
        return self.bytes(b"", status=302, headers={"Location": f"/pages/A/{user}"})


@app.page("/site/data")
class SiteData(View):
    """Latest comments and user ids: what the dashboard's data guards, so the admin role."""

    @requires(Role.ADMIN)
    async def get(self, request: Request) -> Response:
        serving = filters.get(DEFAULT_FILTER)
        info = None
        if serving is not None and serving.inference:
            info = {
                "name": serving.name,
                "version": serving.version,
                "classifier": serving.inference["classifier"],
            }
        return self.json(
            {
                "users": list(reversed(recent_users)),
                "comments": list(latest_comments)[:10],
                "filter": info,
            }
        )
