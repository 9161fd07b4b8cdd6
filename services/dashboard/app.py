"""The dashboard's HTTP surface: the page, its script and style, and the JSON snapshot it polls."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from aiohttp import web

from services.dashboard.auth import require_token
from services.dashboard.collect import Collector

STATIC = Path(__file__).resolve().parent / "static"
COLLECTOR = web.AppKey("collector", Collector)
NO_STORE = {"Cache-Control": "no-store"}


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=NO_STORE)


async def snapshot(request: web.Request) -> web.Response:
    body = await request.app[COLLECTOR].snapshot()
    return web.json_response(body, headers=NO_STORE)


async def search(request: web.Request) -> web.Response:
    """``/api/search?q=<log id or recipient>``: matching messages with their attempt timeline."""
    query = request.query.get("q", "")
    if len(query) > 320:
        return web.json_response({"error": "the query is longer than 320 characters"}, status=400)
    try:
        body = await request.app[COLLECTOR].search(query)
    except (OSError, asyncpg.PostgresError) as exc:
        return web.json_response({"error": f"database unavailable: {type(exc).__name__}"}, status=503)
    return web.json_response(body, headers=NO_STORE)


def build_app(collector: Collector, token: str = "") -> web.Application:
    """The page and its API; with ``token``, every request must carry it (services/dashboard/auth.py)."""
    app = web.Application(middlewares=[require_token(token)] if token else [])
    app[COLLECTOR] = collector
    app.router.add_get("/", index)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/search", search)
    app.router.add_static("/static/", STATIC, show_index=False)
    return app
