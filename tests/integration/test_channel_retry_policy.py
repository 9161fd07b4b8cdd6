"""Per-channel retry policies end to end: three channels, three modes, applied by the responder to real logs.

The test database records, for every retry the responder schedules, the delay it chose (a trigger on
the log's PROCESSING -> PENDING update: ``next_attempt_at - now()`` within the responder's own
transaction). So the delays are compared with each policy exactly (within its jitter), with no
bound on how fast the machine is; the attempt rows then show that no attempt left before its time.
"""

from __future__ import annotations

from itertools import pairwise

import asyncpg
import httpx
import pytest

from tests.helpers import all_terminal, insert_logs, wait_until
from tests.integration.test_api_routing import sender_reloaded
from tests.integration.test_api_support import api_for
from tests.integration.test_providers import QUIET, start_stack
from tools.stack import Environment, Stack

JITTER = 0.2  # RetryPolicy's default: a delay is drawn from [(1 - jitter) * d, d]
EPSILON_S = 0.01

RECORD_RETRIES_SQL = """
CREATE TABLE test_retry_schedule (
    log_id bigint, attempt int, channel text, delay_s double precision, due timestamptz
);
CREATE FUNCTION test_record_retry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_retry_schedule
    VALUES (NEW.id, NEW.attempts, NEW.channel,
            extract(epoch FROM NEW.next_attempt_at - now()), NEW.next_attempt_at);
    RETURN NULL;
END $$;
CREATE TRIGGER test_record_retry AFTER UPDATE ON communication_logs FOR EACH ROW
    WHEN (OLD.status = 'PROCESSING' AND NEW.status = 'PENDING') EXECUTE FUNCTION test_record_retry();
"""

POLICIES = {
    # channel: (policy as the routing API takes it, the delay ceiling after failed attempt n, attempts)
    "sms": (
        {"retry_mode": "linear", "retry_initial_s": 0.5, "retry_max_s": 10, "retry_max_attempts": 4},
        [0.5, 1.0, 1.5],
        4,
    ),
    "email": (
        {"retry_mode": "exponential", "retry_initial_s": 0.3, "retry_max_s": 1.0, "retry_max_attempts": 5},
        [0.3, 0.6, 1.0, 1.0],  # 1.2 and 2.4 capped at retry_max_s
        5,
    ),
    "whatsapp": (
        {"retry_mode": "custom", "retry_delays_s": [1.5, 0.2], "retry_max_attempts": 3},
        [1.5, 0.2],  # the last delay repeats
        3,
    ),
}
RECIPIENTS = {"sms": "+1415555{:04d}", "email": "user{}@example.com", "whatsapp": "+4477009{:05d}"}


@pytest.mark.e2e
async def test_each_channel_retries_by_its_own_policy(
    stack: Stack, pool: asyncpg.Pool, environment: Environment
) -> None:
    await pool.execute(RECORD_RETRIES_SQL)
    # Given the pipeline and a provider that fails every call transiently (500)
    start_stack(stack, 1, False, **QUIET)
    await stack.start()
    async with httpx.AsyncClient() as admin:
        response = await admin.post(
            f"{stack.url('mock_provider')}/admin/config", json={"transient_rate": 1.0}
        )
        response.raise_for_status()
    # ... and, through the routing API, one provider per channel and three retry policies
    async with api_for(environment) as api:
        ops = await api.key("ops", admin=True)
        for channel, (policy, _, _) in POLICIES.items():
            name = f"mock-{channel}"
            assert (
                await api.client.put(f"/v1/routing/providers/{name}", json={"kind": "mock_json"}, headers=ops)
            ).status_code == 201
            assert (
                await api.client.put(f"/v1/routing/channels/{channel}/routes/{name}", json={}, headers=ops)
            ).status_code == 201
            put = await api.client.put(
                f"/v1/routing/channels/{channel}/policy", json={"strategy": "primary", **policy}, headers=ops
            )
            assert put.status_code == 200, put.text
    version = await pool.fetchval("SELECT version FROM routing_version")
    # (the responder checks the version before each batch it applies; the sender logs its reload)
    await wait_until(lambda: sender_reloaded(stack, version), timeout=20, what="the sender's reload")
    # When two logs per channel, each allowed 10 attempts, are sent
    rows = [
        {"channel": channel, "recipient": RECIPIENTS[channel].format(n), "max_attempts": 10}
        for channel in POLICIES
        for n in range(2)
    ]
    ids = await insert_logs(pool, rows)
    channel_of = {log_id: row["channel"] for log_id, row in zip(ids, rows, strict=True)}
    await wait_until(lambda: all_terminal(pool), timeout=120, what="every log terminal")

    # Then each log made its channel's number of attempts, and failed
    for log_id in ids:
        channel = channel_of[log_id]
        _, ceilings, attempts = POLICIES[channel]
        row = await pool.fetchrow("SELECT status, attempts FROM communication_logs WHERE id = $1", log_id)
        assert (row["status"], row["attempts"]) == ("FAILED", attempts), (channel, dict(row))
        # ... each retry was scheduled after the delay its channel's policy gives, within the jitter
        scheduled = await pool.fetch(
            "SELECT attempt, delay_s, due FROM test_retry_schedule WHERE log_id = $1 ORDER BY attempt", log_id
        )
        assert [s["attempt"] for s in scheduled] == list(range(1, attempts))
        for entry in scheduled:
            ceiling = ceilings[min(entry["attempt"], len(ceilings)) - 1]
            assert ceiling * (1 - JITTER) - EPSILON_S <= entry["delay_s"] <= ceiling + EPSILON_S, (
                channel,
                entry["attempt"],
                entry["delay_s"],
                ceiling,
            )
        # ... and no attempt left before its retry was due: the attempt times follow the schedule
        made = await pool.fetch(
            "SELECT attempt, finished_at, recorded_at FROM delivery_attempts"
            " WHERE log_id = $1 ORDER BY attempt",
            log_id,
        )
        assert [a["attempt"] for a in made] == list(range(1, attempts + 1))
        for entry, (earlier, later) in zip(scheduled, pairwise(made), strict=True):
            assert later["finished_at"] >= entry["due"], (channel, entry["attempt"])
            gap = (later["finished_at"] - earlier["recorded_at"]).total_seconds()
            assert gap >= entry["delay_s"] - EPSILON_S, (channel, entry["attempt"], gap)
    # The three shapes differ as their modes say: linear grows by its step, exponential doubles up to
    # its cap, custom follows its list (a long first wait, then short ones)
    delays = {
        channel: [
            round(r["delay_s"] / POLICIES[channel][1][min(r["attempt"], len(POLICIES[channel][1])) - 1], 6)
            for r in await pool.fetch(
                "SELECT attempt, delay_s FROM test_retry_schedule WHERE channel = $1", channel
            )
        ]
        for channel in POLICIES
    }
    assert all(
        1 - JITTER - EPSILON_S <= ratio <= 1 + EPSILON_S for ratios in delays.values() for ratio in ratios
    )
    assert {channel: len(ratios) for channel, ratios in delays.items()} == {
        "sms": 6,
        "email": 8,
        "whatsapp": 4,
    }
