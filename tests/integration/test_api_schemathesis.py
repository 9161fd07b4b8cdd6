"""Schemathesis against the ASGI app in-process: every operation, valid and invalid inputs.

No answer may be a 5xx, and every answer must match the published OpenAPI schema (status codes,
content types, headers, bodies). Bounded: a few examples per operation, well under a minute.

One check is left out: ``positive_data_acceptance`` expects every schema-valid request to be
accepted, but some rules are beyond JSON Schema on purpose (a recipient valid for its channel,
a template that exists, a campaign in a state that allows the action); those get a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.api.app import create_app
from services.api.keys import generate_key, hash_key
from services.api.store.keys import insert_key
from tests.integration.test_api_support import PEPPER, api_settings
from tools.stack import Environment

MAX_EXAMPLES = 40
KEY: dict[str, str] = {}


@pytest.fixture
async def api_key(environment: Environment) -> str:
    new = generate_key()
    conn = await asyncpg.connect(environment.database_url)
    try:
        # An operator key, so that the routing configuration's writes are fuzzed too, not only refused.
        await insert_key(
            conn, "fuzz", new.key_id, hash_key(new.key, PEPPER), "schemathesis", None, admin=True
        )
    finally:
        await conn.close()
    return new.key


@pytest.fixture
def api_schema(environment: Environment, api_key: str) -> Iterator[schemathesis.schemas.BaseSchema]:
    app = create_app(api_settings(environment.settings))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    KEY["X-API-Key"] = api_key
    try:
        yield schema
    finally:
        # The app's lifespan (its database pool) ran in schemathesis' event loop thread: end it there.
        schemathesis_asgi.shutdown_lifespans()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_no_schema_violations(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers=dict(KEY), excluded_checks=[positive_data_acceptance])
