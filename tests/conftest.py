"""Fixtures: each test that needs them gets its own RabbitMQ vhost and PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.db.pool import create_pool
from tools.stack import Environment, Stack, create_environment, destroy_environment


@pytest.fixture
async def environment() -> AsyncIterator[Environment]:
    env = await create_environment("sbtest")
    try:
        yield env
    finally:
        await destroy_environment(env)


@pytest.fixture
async def pool(environment: Environment) -> AsyncIterator[asyncpg.Pool]:
    db = await create_pool(environment.database_url, max_size=4)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def stack(
    environment: Environment, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    running = Stack(environment, tmp_path / "logs")
    try:
        yield running
    finally:
        codes = running.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for process in running.processes.values():
                if process.log_path.exists():
                    tail = process.log_path.read_text(errors="replace").splitlines()[-15:]
                    print(f"----- {process.name} (exit {codes.get(process.name)}) -----")
                    print("\n".join(tail))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
