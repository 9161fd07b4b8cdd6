"""The demo (``make demo``) end to end, small: every process, a campaign with a provider outage in the
middle, the summary, a clean stop."""

from __future__ import annotations

import io
import os
from pathlib import Path

import asyncpg
import orjson
import pytest
from rich.console import Console

from shared.bus.topology import DEAD_LETTER_QUEUE
from tests.helpers import drain_queue
from tools.demo import LEDGER_FILE, DemoOptions, run_demo
from tools.demo_env import DemoError, demo_lock
from tools.demo_providers import fallback_totals
from tools.invariants import check
from tools.stack import Environment

COUNT = 500


@pytest.mark.e2e
@pytest.mark.timeout(60)
async def test_demo_runs_a_campaign_through_a_provider_outage_and_stops_cleanly(
    environment: Environment, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # Given an isolated environment, a small, fast campaign, and the first sms provider down for a while
    options = DemoOptions(
        count=COUNT,
        seed=7,
        provider_latency_ms=2,
        backoff_base_s=0.2,
        backoff_cap_s=1,
        timeout_s=45,
        refresh_s=0.2,
        exact_dlq=True,
        # down as the delivery starts: a small campaign is mostly sent within a second or two
        outage_after_s=0,
        outage_seconds=2,
    )
    output = io.StringIO()
    console = Console(file=output, width=160, force_terminal=False)

    # When the demo runs
    result = await run_demo(options, environment, tmp_path, console)

    # Then the campaign completed and every process exited 0
    assert result.completed and not result.timed_out and not result.crashed, output.getvalue()
    assert result.exit_codes and set(result.exit_codes.values()) == {0}, result.exit_codes
    assert set(result.exit_codes) == {
        "mock_provider",
        "poller-0",
        "poller-urgent",
        "sender-0",
        "sender-1",
        "sender-urgent-0",
        "responder",
    }
    # ... the numbers add up
    summary = result.summary
    assert summary is not None
    s = summary.statuses
    assert summary.total == COUNT == sum(s.values())
    assert set(s) <= {"SENT", "FAILED", "BOUNCED"}
    assert summary.dead_lettered == s.get("FAILED", 0) + s.get("BOUNCED", 0) == summary.dlq_added > 0
    assert summary.retries > 0 and summary.retried_logs > 0
    assert summary.attempts == summary.attempts_on_logs == COUNT + summary.retries
    assert sum(sum(c.values()) for c in summary.per_channel.values()) == COUNT
    assert summary.throughput > 0 and summary.window_s > 0
    assert summary.p50_s is not None and summary.p99_s is not None and 0 < summary.p50_s <= summary.p99_s
    assert summary.ledger["accepted"] == s["SENT"] and summary.ledger["duplicate_logs"] == 0
    assert result.checks and all(result.checks.values()), result.checks
    assert result.ok
    # ... the outage happened during the delivery: sms and mms fell back to the second provider, with
    # the reasons recorded, and nothing caught in it was lost or sent twice
    outage = result.outage
    assert outage is not None and outage.started_after_s is not None, output.getvalue()
    assert (outage.provider, outage.fallback) == ("mocksms", "mocksms2")
    assert outage.sent_in_window("mocksms") == 0 < outage.sent_in_window("mocksms2")
    assert outage.caught > 0 and outage.caught_open == outage.caught_sent_twice == 0
    assert sum(1 for name in result.checks if name.startswith("outage:")) == 2
    reasons = fallback_totals(result.providers)
    assert reasons and set(reasons) <= {"primary_failed", "provider_unavailable"}, reasons
    by_provider = {row.provider: row for row in result.providers}
    assert by_provider["mocksms2"].fallback and by_provider["mocksms"].outcomes.get("recoverable", 0) > 0
    assert sum(row.attempts for row in result.providers) == summary.attempts
    # ... and the operator got a summary, the exit codes and the logs on disk
    text = output.getvalue()
    assert "Summary: campaign" in text and "Processes" in text and "throughput" in text
    assert "Per provider" in text and "provider_unavailable" in text and "Outage: mocksms down" in text
    saved = orjson.loads((result.run_dir / "summary.json").read_bytes())
    assert saved["ok"] is True and saved["summary"]["total"] == COUNT
    assert saved["outage"]["fallback"] == "mocksms2" and saved["providers"]
    assert (result.run_dir / "poller-0.log").stat().st_size > 0
    assert (tmp_path / "latest").resolve() == result.run_dir.resolve()
    # ... and the architecture's invariants hold: nothing lost or sent twice, order kept, one dead letter each
    ledger = [orjson.loads(line) for line in (result.run_dir / LEDGER_FILE).read_bytes().splitlines()]
    letters = [m.body for m in await drain_queue(environment.amqp_url, DEAD_LETTER_QUEUE)]
    report = await check(pool, ledger, letters, strict=True)
    assert report.ok, report.violations()
    assert report.dead_letters == summary.dead_lettered


def test_a_second_demo_is_refused_while_one_holds_the_lock(tmp_path: Path) -> None:
    # Given a demo holding the lock, When another one starts, Then it is refused with the holder's pid
    refused = pytest.raises(DemoError, match=rf"another demo is running \(pid {os.getpid()}")
    with demo_lock(tmp_path), refused, demo_lock(tmp_path):
        pass
    # ... and once the first is done, the lock is free again
    with demo_lock(tmp_path):
        pass
