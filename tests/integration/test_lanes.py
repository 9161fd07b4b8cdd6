"""Priority lanes end to end: an urgent log overtakes a bulk backlog; the broker holds seconds of work."""

from __future__ import annotations

import aio_pika
import pytest

from shared.bus.topology import DISPATCH, Lane, lane_queue
from tests.helpers import all_terminal, insert_logs, ledger, wait_until
from tests.integration.test_pipeline import start_pipeline
from tools.stack import Stack

BACKLOG = 4000
# A provider that accepts everything after 20 ms, so the order of arrival is the pipeline's alone.
STEADY = {
    "mock_latency_ms": "20",
    "mock_latency_jitter_ms": "5",
    "mock_transient_rate": "0",
    "mock_permanent_rate": "0",
    "mock_rate_limit_rate": "0",
    "dispatch_budget_s": "1",
}


async def bulk_depth(amqp_url: str, shards: int = 4) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        total = 0
        for n in range(shards):
            queue = await channel.declare_queue(lane_queue(DISPATCH, Lane.BULK, n), passive=True)
            total += queue.declaration_result.message_count or 0
        return total
    finally:
        await connection.close()


def start_lane_pipeline(stack: Stack) -> None:
    """A poller and a sender for each lane (SWITCHBOARD_LANES), as bench, demo and deploy files run."""
    mock = stack.add("mock_provider", **STEADY)
    settings = {**STEADY, "provider_url": f"http://127.0.0.1:{mock.port}"}
    for lane in ("bulk", "urgent"):
        stack.add("poller", f"poller-{lane}", **settings, lanes=f'["{lane}"]')
        stack.add("sender", f"sender-{lane}", **settings, lanes=f'["{lane}"]')
    stack.add("responder", **settings)


@pytest.mark.e2e
@pytest.mark.parametrize("processes", ["shared by the lanes", "one per lane"])
async def test_urgent_logs_reach_the_provider_before_a_bulk_backlog_drains(
    stack: Stack, pool, processes: str
) -> None:
    # Given a pipeline with one sender (or a poller and a sender per lane) and a steady 20 ms provider
    if processes == "one per lane":
        start_lane_pipeline(stack)
    else:
        start_pipeline(stack, senders=1, **STEADY)
    await stack.start()
    # ... and a bulk backlog of several thousand logs being drained
    bulk = [{"channel": "sms", "recipient": f"+3162{i:07d}", "priority": 1} for i in range(BACKLOG)]
    bulk_ids = await insert_logs(pool, bulk)

    async def draining() -> bool:
        return len(await ledger(stack.url("mock_provider"))) >= 200

    await wait_until(draining, timeout=60, what="the backlog draining")
    # ... of which the broker holds about a second of work, the rest still waiting in PostgreSQL
    pending = await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'PENDING'")
    depth = await bulk_depth(stack.environment.amqp_url)
    assert pending >= BACKLOG // 4, "the poller put the whole backlog in the broker"
    assert depth < BACKLOG - pending

    # When five urgent logs arrive, two of them to recipients whose bulk logs are still queued
    sent_before = len(await ledger(stack.url("mock_provider")))
    urgent = [{"channel": "sms", "recipient": f"+3169{i:07d}", "priority": 0} for i in range(3)]
    urgent += [{"channel": "sms", "recipient": bulk[-1 - i]["recipient"], "priority": 0} for i in range(2)]
    urgent_ids = await insert_logs(pool, urgent)
    await wait_until(lambda: all_terminal(pool), timeout=180, what="every log terminal")

    # Then each urgent log reached the provider while most of the backlog was still to come
    arrivals = [row["log_id"] for row in await ledger(stack.url("mock_provider")) if not row["replay"]]
    assert sorted(arrivals) == sorted(bulk_ids + urgent_ids)
    remaining = BACKLOG - sent_before
    bulk_set = set(bulk_ids)
    for log_id in urgent_ids:
        bulk_after = sum(1 for other in arrivals[arrivals.index(log_id) :] if other in bulk_set)
        assert bulk_after > remaining // 2, f"urgent log {log_id} waited behind the backlog"
