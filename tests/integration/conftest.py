"""Fixtures of the integration tests that need servers of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tools.private_services import PrivatePostgres


@pytest.fixture
async def own_postgres() -> AsyncIterator[PrivatePostgres]:
    if not PrivatePostgres.available():
        pytest.skip("initdb/pg_ctl not installed")
    server = PrivatePostgres()
    try:
        await asyncio.to_thread(server.init)
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.close)
