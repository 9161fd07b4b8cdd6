"""Health, readiness, metrics, and PostgreSQL going away: 503 at once, recovery by itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.runtime.settings import Settings
from tests.integration.test_api_support import Api, api_for, running_api, sms
from tools.ports import free_port
from tools.stack import Environment


class TcpProxy:
    """A TCP relay to PostgreSQL that the test can cut (closing every connection) and restore."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


@pytest.fixture
async def api(environment: Environment) -> AsyncIterator[Api]:
    async with api_for(environment) as running:
        yield running


async def test_health_readiness_metrics_and_the_published_openapi(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok", "failing": []}
    assert (await api.client.get("/readyz")).status_code == 200
    headers = await api.key("acme")
    await api.client.post("/v1/messages", json=sms(), headers=headers)
    metrics = (await api.client.get("/metrics")).text
    assert 'switchboard_api_requests_total{method="POST",route="/v1/messages",status="202"}' in metrics
    assert 'switchboard_api_messages_accepted_total{source="api"}' in metrics
    schema = (await api.client.get("/openapi.json")).json()
    assert "/v1/messages/batch" in schema["paths"]
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


async def test_without_postgres_the_api_answers_503_quickly_and_recovers_by_itself(
    environment: Environment,
) -> None:
    # Given the API reaching PostgreSQL through a relay that can be cut
    url = urlsplit(environment.database_url)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    await proxy.up()
    dsn = urlunsplit((url.scheme, f"{url.username or 'postgres'}@127.0.0.1:{proxy.port}", url.path, "", ""))
    shared = Settings(database_url=dsn)
    try:
        async with running_api(shared, api_db_connect_timeout_s=1.0) as api:
            headers = await api.key("acme")
            assert (await api.client.post("/v1/messages", json=sms(), headers=headers)).status_code == 202
            # When PostgreSQL goes away (every connection cut, nothing listening)
            await proxy.down()
            started = time.monotonic()
            response = await api.client.post("/v1/messages", json=sms(), headers=headers)
            elapsed = time.monotonic() - started
            # Then the API answers 503 with Retry-After, quickly, and readiness says so
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"
            assert elapsed < 3
            ready = await api.client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["failing"] == ["postgres"]
            # ... and keeps answering quickly while it is away
            for _ in range(3):
                started = time.monotonic()
                assert (await api.client.get("/v1/messages", headers=headers)).status_code == 503
                assert time.monotonic() - started < 3
            # When PostgreSQL is back
            await proxy.up()
            # Then the API serves again by itself within a few seconds
            deadline = time.monotonic() + 10
            status = 0
            while time.monotonic() < deadline:
                status = (await api.client.post("/v1/messages", json=sms(), headers=headers)).status_code
                if status == 202:
                    break
                await asyncio.sleep(0.2)
            assert status == 202
            assert (await api.client.get("/readyz")).status_code == 200
    finally:
        await proxy.down()
