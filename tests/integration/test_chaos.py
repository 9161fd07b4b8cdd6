"""A small chaos run inside `make test`: kills of every process type and a broker restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.chaos import ChaosConfig, passed, run_chaos, write_report


@pytest.mark.e2e
@pytest.mark.timeout(600)
async def test_small_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    # Given 2 000 logs flowing through two replicas of every process
    config = ChaosConfig(
        logs=2_000,
        recipients=400,
        kills_per_type=1,
        restart_broker=True,
        restart_database=False,
        outage_s=5.0,
        chaos_window_s=12.0,
        quiesce_timeout_s=300.0,
        log_dir=tmp_path / "chaos",
    )
    # When one process of each type is killed and RabbitMQ restarts meanwhile
    report, summary = await run_chaos(config)
    # (the same report as make chaos's, beside the processes' logs, for a look after a failure)
    write_report(tmp_path / "chaos.json", report, summary)
    # Then nothing is lost, sent twice, out of order or missing its dead letter
    assert report.violations() == dict.fromkeys(report.VIOLATIONS, 0), report.to_json()
    assert report.logs == 2_000
    assert summary["kills"] == {"poller": 1, "sender": 1, "responder": 1}
    assert any(e["event"] == "start" and e["target"] == "rabbitmq" for e in summary["events"])
    verdict = {k: summary.get(k) for k in ("exit_codes", "shutdown_s", "unexpected_exits", "outages_s")}
    assert passed(report, summary), (verdict, str(tmp_path / "chaos.json"))
