"""The dashboard's HTTP surface: the page, its script and style, and the JSON snapshot it polls."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.dashboard.collect import Collector

STATIC = Path(__file__).resolve().parent / "static"
COLLECTOR = web.AppKey("collector", Collector)
NO_STORE = {"Cache-Control": "no-store"}


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=NO_STORE)


async def snapshot(request: web.Request) -> web.Response:
    body = await request.app[COLLECTOR].snapshot()
    return web.json_response(body, headers=NO_STORE)


def build_app(collector: Collector) -> web.Application:
    app = web.Application()
    app[COLLECTOR] = collector
    app.router.add_get("/", index)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_static("/static/", STATIC, show_index=False)
    return app
