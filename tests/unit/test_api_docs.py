"""The API's own documentation: Swagger UI and ReDoc render from assets the API serves itself (no CDN,
so /docs works without internet), and every request body in the OpenAPI document carries examples
that the API itself accepts."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.api import app as api_app
from services.api.docs import ASSET_FILES, ASSETS_PATH
from services.api.schemas import campaigns, messages, routing, templates
from services.api.settings import ApiSettings

MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for module in (messages, campaigns, templates, routing)
    for model in vars(module).values()
    if isinstance(model, type) and issubclass(model, BaseModel) and model.__module__ == module.__name__
}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    settings = ApiSettings(
        database_url="postgresql://nobody@127.0.0.1:1/none",  # type: ignore[arg-type]
        api_scheduler_enabled=False,
    )
    return api_app.create_app(settings)


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        return await client.get(path)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_load_only_local_assets(app: FastAPI, page: str) -> None:
    # Given the page / When its HTML is read
    response = await get(app, page)
    assert response.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    sources += re.findall(r"url: '([^']+)'", response.text)
    # Then every script, style and icon it loads comes from the API itself
    assert sources
    assert all(s.startswith("/") for s in sources), sources
    for source in sources:
        if source.startswith(ASSETS_PATH):
            asset = await get(app, source)
            assert asset.status_code == 200 and len(asset.content) > 1000, source


async def test_every_asset_is_served(app: FastAPI) -> None:
    for name in ASSET_FILES:
        assert (await get(app, f"{ASSETS_PATH}/{name}")).status_code == 200, name


def request_bodies(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    bodies = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            if schema is not None:
                bodies.append((f"{method.upper()} {path}", schema))
    return bodies


def test_every_json_request_body_has_examples_the_api_accepts(app: FastAPI) -> None:
    document = app.openapi()
    components = document["components"]["schemas"]
    bodies = request_bodies(document)
    assert bodies
    for operation, schema in bodies:
        # Given the schema of the body (a reference to a model, or an array of them)
        options = [schema, *schema.get("anyOf", [])]  # an optional body: anyOf [model, null]
        reference = next(
            (o.get("$ref") or o.get("items", {}).get("$ref") for o in options if "$ref" in o or "items" in o),
            None,
        )
        assert reference, operation
        name = reference.rsplit("/", 1)[1]
        examples = components[name].get("examples")
        # Then it has examples, and each one validates against the model the API parses it with
        assert examples, f"{operation}: {name} has no examples"
        for example in examples:
            MODELS[name].model_validate(example)
