"""SIGTERM in the middle of the flow: every process exits 0 within 10 s and nothing is lost or sent twice."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers import all_terminal, insert_logs, ledger, wait_until
from tests.integration.test_pipeline import start_pipeline
from tools.stack import Stack


@pytest.mark.e2e
async def test_sigterm_mid_flow_loses_nothing_and_exits_quickly(stack: Stack, pool) -> None:
    # Given a pipeline with a slow provider (300 ms a call) and work in flight everywhere
    start_pipeline(stack, senders=1, mock_latency_ms="300", mock_latency_jitter_ms="50")
    await stack.start()
    ids = await insert_logs(
        pool, [{"channel": "email", "recipient": f"person{i}@example.net"} for i in range(400)]
    )
    await wait_until(lambda: _some_sent(pool), timeout=30, what="the first sends")

    # When poller, sender and responder get SIGTERM at the same moment
    started = time.monotonic()
    codes = stack.stop("poller", "sender-0", "responder", timeout=12)
    elapsed = time.monotonic() - started

    # Then each exits 0 within 10 s
    assert codes == {"poller": 0, "sender-0": 0, "responder": 0}
    assert elapsed < 10, f"shutdown took {elapsed:.1f}s"
    # ... and, once restarted, every log still ends terminal with exactly one provider send each
    await stack.restart("poller")
    await stack.restart("sender-0")
    await stack.restart("responder")
    await wait_until(lambda: all_terminal(pool), timeout=120, what="every log terminal after restart")
    sends = [r for r in await ledger(stack.url("mock_provider")) if not r["replay"]]
    assert len(sends) == len({r["log_id"] for r in sends})
    sent = await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'SENT'")
    assert sent == len(sends)
    assert len(ids) == await pool.fetchval("SELECT count(*) FROM communication_logs")
    await asyncio.sleep(0)


async def _some_sent(pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'SENT'") >= 20
