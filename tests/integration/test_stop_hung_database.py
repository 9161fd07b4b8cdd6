"""SIGTERM while PostgreSQL has stopped answering: every pipeline process still exits, 0 and logged.

A chaos run once left a poller running 15 s after SIGTERM: a lane checks ``stop`` only between cycles, and
its cycle waited on a query (then on the query's cancellation, then on the pool's close) to a database that
had gone away. Here the processes run against a PostgreSQL of the test's own (tools/private_services/),
which the test freezes with SIGSTOP (queries, cancel requests and new connections all hang) and thaws
afterwards; the machine's shared PostgreSQL is never touched.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

from shared.db.pool import create_pool
from tests.helpers import insert_logs, wait_until
from tools.private_services import PrivatePostgres
from tools.stack import Stack, create_environment, destroy_environment

GRACE_S = "2"
PIPELINE = ("poller", "sender", "responder")


@contextmanager
def frozen(server: PrivatePostgres) -> Iterator[None]:
    """SIGSTOP the postmaster and every backend of ``server`` (SIGCONT on the way out)."""
    pid = server.pid()
    assert pid is not None
    postmaster = psutil.Process(pid)
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in processes:
            with suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_sigterm_with_a_frozen_database_stops_every_process(
    own_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    # Given the pipeline on a PostgreSQL of the test's own, with logs flowing
    environment = await create_environment("sbhang", database_url=own_postgres.dsn("sbhang"))
    stack = Stack(environment, tmp_path / "logs")
    mock = stack.add("mock_provider", mock_latency_ms="20")
    quick = {
        "poll_interval_s": "0.1",
        "standby_delay_s": "0.5",
        "stop_grace_s": GRACE_S,
        "provider_url": f"http://127.0.0.1:{mock.port}",
    }
    for name in PIPELINE:
        stack.add(name, **quick)
    pool = await create_pool(environment.database_url, max_size=2)
    try:
        await stack.start(timeout=60)
        await insert_logs(pool, [{"channel": "sms", "recipient": f"+1646555{i:04d}"} for i in range(300)])

        async def some_sent() -> bool:
            count = await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'SENT'")
            return bool(count)

        await wait_until(some_sent, timeout=60, what="the first sends")
        pool.terminate()  # its connections would hang too

        # When PostgreSQL stops answering (every query, cancel request and connection hangs)
        with frozen(own_postgres):
            await asyncio.sleep(1.0)  # long enough for every process to be waiting on it
            # ... and every process gets SIGTERM
            codes = await asyncio.to_thread(stack.stop, *PIPELINE, timeout=20)

        # Then each exits 0 on its own (None: it had to be SIGKILLed after 20 s) and says it stopped
        assert codes == dict.fromkeys(PIPELINE, 0), codes
        for name in PIPELINE:
            text = stack.processes[name].log_path.read_text(errors="replace")
            assert '"service_stopped"' in text, f"{name}: {text[-2000:]}"
    finally:
        stack.stop(timeout=5)
        pool.terminate()
        await destroy_environment(environment)
