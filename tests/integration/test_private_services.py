"""A harness's own RabbitMQ node and PostgreSQL cluster (tools/private_services/): they start on ports
of their own, keep their data across a restart, and leave no process, port or directory behind."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import psutil
import pytest

from tests.helpers import wait_until
from tools.private_services import (
    PrivatePostgres,
    PrivateServiceError,
    PrivateServices,
    port_open,
)

SHARED_PORTS = {5432, 5672, 15672, 25672}


def processes_of(services: PrivateServices) -> list[psutil.Process]:
    """Every process whose command line names the services' directory or node (beam, epmd's session,
    postgres and its workers), found through the PIDs the services hold and their children."""
    found: dict[int, psutil.Process] = {}
    for pid in services.pids():
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for p in (process, *process.children(recursive=True)):
            found[p.pid] = p
    return list(found.values())


async def queued(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await connection.close()


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_private_servers_restart_with_their_data_and_leave_nothing_behind() -> None:
    if not PrivatePostgres.available():
        pytest.skip("initdb/pg_ctl not installed")
    services = PrivateServices(prefix="sbtest")
    try:
        # Given a private RabbitMQ node and PostgreSQL cluster
        await asyncio.to_thread(services.start)
        ports = {
            services.rabbitmq.amqp_port,
            services.rabbitmq.management_port,
            services.rabbitmq.dist_port,
            services.rabbitmq.epmd_port,
            services.postgres.port,
        }
        assert not ports & SHARED_PORTS
        assert all(port_open(port) for port in ports)
        status = services.rabbitmq.ctl("status")  # rabbitmqctl -n <node> reaches it: the cookie works
        assert "rabbitmq_consistent_hash_exchange" in status
        async with httpx.AsyncClient(auth=("guest", "guest")) as client:
            overview = await client.get(f"{services.rabbitmq.management_url}/api/overview")
        assert overview.json()["node"] == services.rabbitmq.node
        conn = await asyncpg.connect(services.postgres.dsn())
        await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        await conn.close()
        connection = await aio_pika.connect(services.rabbitmq.amqp_url())
        channel = await connection.channel()
        await channel.declare_queue("kept", durable=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="kept"
        )
        await connection.close()
        beam_and_workers = processes_of(services)

        # When each is stopped and started again
        await asyncio.to_thread(services.stop_broker)
        assert not port_open(services.rabbitmq.amqp_port)
        await asyncio.to_thread(services.start_broker)
        await asyncio.to_thread(services.stop_database)
        assert not port_open(services.postgres.port)
        await asyncio.to_thread(services.start_database)

        # Then both answer again with what they held
        conn = await asyncpg.connect(services.postgres.dsn())
        assert await conn.fetchval("SELECT n FROM kept") == 42
        await conn.close()
        assert await queued(services.rabbitmq.amqp_url(), "kept") == 1
        beam_and_workers += processes_of(services)
    finally:
        # And once closed, no process of theirs runs, no port answers, the directory is gone
        await asyncio.to_thread(services.close)
    assert not [p.pid for p in beam_and_workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not any(port_open(port) for port in ports)
    assert not services.root.exists()
    with pytest.raises(PrivateServiceError):
        services.start()


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_close_during_a_start_waits_for_it_and_stops_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not PrivatePostgres.available():
        pytest.skip("initdb/pg_ctl not installed")
    # Given a start running in another thread (as a harness cancelled mid-start leaves it behind)
    services = PrivateServices(prefix="sbtest")
    monkeypatch.setattr(services.rabbitmq, "start", lambda: None)  # PostgreSQL is enough here
    errors: list[BaseException] = []

    def start() -> None:
        try:
            services.start()
        except BaseException as exc:
            errors.append(exc)

    starting = threading.Thread(target=start)
    starting.start()

    async def initdb_running() -> bool:
        return services.postgres.data.exists()

    await wait_until(initdb_running, timeout=30, interval=0.05, what="initdb")
    # When it is closed meanwhile
    await asyncio.to_thread(services.close)
    await asyncio.to_thread(starting.join, 60)
    # Then the start completed first, and the server it brought up is stopped and removed
    assert not errors
    assert services.postgres.pid() is None
    assert not port_open(services.postgres.port)
    assert not Path(services.root).exists()
