"""GET /dashboard: the operators' page (static HTML + JS polling JSON, no external assets), and
GET /dashboard/data, what it draws that no other route serves."""

from __future__ import annotations

import time
from pathlib import Path

from faust.web import Request, Response, View

from streams import review
from streams.app import app, settings
from streams.auth import Role, html_response, requires
from streams.moderation import filters, latest_comments
from streams.monitoring import DEAD_LETTERS, EVENTS, consumer_lag, counter_values, is_ready
from streams.serving import serving

PAGE = (Path(__file__).parent / "static" / "dashboard.html").read_bytes()


@app.page("/dashboard")
class DashboardView(View):
    async def get(self, request: Request) -> Response:
        """The page holds no data (its script asks for the admin token and sends it as a
        header to /dashboard/data), so it is served to anyone."""
        return html_response(self, PAGE)


@app.page("/dashboard/data")
class DashboardDataView(View):
    @requires(Role.ADMIN)
    async def get(self, request: Request) -> Response:
        document = serving.document or {}
        population = serving.population
        return self.json(
            {
                "now": time.time(),
                "ready": is_ready(),
                "events": counter_values(EVENTS),
                "dead_letters": counter_values(DEAD_LETTERS),
                "lag": consumer_lag() if is_ready() else {},
                "sample": document.get("sample"),
                "version": serving.version,
                "online_band": list(population.band)
                if population is not None and population.n
                else None,
                "filters": sorted(filters),
                "comments": list(latest_comments),
                "features": settings.clustering_features.split(","),
                "moderation": review.figures(),
            }
        )
