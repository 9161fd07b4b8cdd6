"""Helpers for the API tests (no tests here): the app in-process on a test database, keys, uploads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from services.api.app import create_app
from services.api.keys import generate_key, hash_key
from services.api.settings import ApiSettings
from services.api.store.keys import insert_key
from shared.runtime.settings import Settings
from tools.stack import Environment

PEPPER = "test-pepper"
TEST_SETTINGS: dict[str, Any] = {
    "api_key_pepper": PEPPER,
    "api_scheduler_enabled": False,
    "api_rate_limit_per_s": 10_000.0,
    "api_rate_limit_burst": 10_000,
    # Fuzzers and these tests send many bad keys from one test client: the per-source throttle of failed
    # keys (tests/security/test_api_abuse.py sets its own) would answer them 429 instead of 401.
    "api_auth_failures_per_window": 1_000_000,
}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    settings: ApiSettings
    shared: Settings

    async def key(
        self, tenant: str, rate_limit_per_s: float | None = None, admin: bool = False
    ) -> dict[str, str]:
        """A new key for ``tenant`` (an operator key if ``admin``), as the headers to send it with."""
        new = generate_key()
        conn = await asyncpg.connect(self.shared.database_dsn())
        try:
            await insert_key(
                conn, tenant, new.key_id, hash_key(new.key, PEPPER), "test", rate_limit_per_s, admin
            )
        finally:
            await conn.close()
        return {"X-API-Key": new.key}


def api_settings(shared: Settings | None = None, **overrides: Any) -> ApiSettings:
    """The API's settings for a test: the backends of ``shared`` (the test environment's), the test
    defaults above, then ``overrides``."""
    backends = {} if shared is None else {name: getattr(shared, name) for name in Settings.model_fields}
    return ApiSettings(**{**backends, **TEST_SETTINGS, **overrides})


@asynccontextmanager
async def running_api(shared: Settings, **overrides: Any) -> AsyncIterator[Api]:
    """The app with its lifespan run, and an httpx client that calls it in-process."""
    settings = api_settings(shared, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client:
            yield Api(app, client, settings, shared)


@asynccontextmanager
async def api_for(environment: Environment, **overrides: Any) -> AsyncIterator[Api]:
    async with running_api(environment.settings, **overrides) as api:
        yield api


def csv_upload(name: str, channel: str, text: str) -> dict[str, Any]:
    """The multipart fields of a contact-list upload."""
    return {
        "data": {"name": name, "channel": channel},
        "files": {"file": ("contacts.csv", text.encode(), "text/csv")},
    }


def sms(recipient: str = "+447911123456", **fields: Any) -> dict[str, Any]:
    return {"channel": "sms", "recipient": recipient, "payload": {"body": "hello"}, **fields}
