"""The benchmark's open-loop feed schedule and wrk's report parsing (pure parts of the harness)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools.bench_api import parse_wrk, to_run
from tools.bench_common import BenchError
from tools.bench_feed import due, feed_total, paced
from tools.bench_scenario_report import capacity, scenario_targets

rates = st.floats(min_value=0.1, max_value=10_000, allow_nan=False)


@given(rates, st.floats(min_value=0, max_value=1_000), st.floats(min_value=0, max_value=1_000))
def test_due_grows_with_time_and_never_passes_the_total(rate: float, a: float, b: float) -> None:
    total = feed_total(rate, 30)
    early, late = sorted((a, b))
    assert 0 <= due(rate, early, total) <= due(rate, late, total) <= total


@given(rates, st.integers(min_value=0, max_value=100_000))
def test_the_nth_log_is_due_at_n_over_rate(rate: float, n: int) -> None:
    total = n + 10
    assert due(rate, 0, total) == 0
    # log n (0-based) is due at n / rate: just after it, n + 1 logs are due, just before it n
    assert due(rate, (n + 0.01) / rate, total) == n + 1
    if n:
        assert due(rate, (n - 0.01) / rate, total) == n


async def test_paced_feed_sends_every_log_once_in_order() -> None:
    # Given a fast feed of 50 logs in batches
    sent: list[tuple[int, int]] = []

    async def send(first: int, count: int) -> None:
        sent.append((first, count))

    # When it runs
    result = await paced(send, 1_000, 50)
    # Then the ranges are contiguous and cover 0..49 exactly
    assert sum(c for _, c in sent) == 50 and result.count == 50
    expected = 0
    for first, count in sent:
        assert first == expected and count >= 1
        expected += count


async def test_single_paced_feed_calls_once_per_log_at_its_rate() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def send(first: int, count: int) -> None:
        assert count == 1 and first == len(calls)
        calls.append(loop.time())

    result = await paced(send, 200, 10, single=True)
    assert len(calls) == 10 and result.count == 10
    assert calls == sorted(calls)
    # ten logs at 200/s: the last one is due 45 ms after the first, never earlier
    assert calls[-1] - calls[0] >= 0.045 - 0.002


def test_wrk_report_line_is_parsed() -> None:
    output = (
        b"Running 10s test @ http://127.0.0.1:1\n"
        b'WRK_JSON {"requests":1000,"duration_us":2000000,"bytes":5,'
        b'"errors":{"connect":0,"read":1,"write":0,"status":3,"timeout":2},'
        b'"latency_us":{"mean":1500.0,"stdev":1.0,"max":9000,"p50":1200,"p90":2000,"p99":5000,"p999":8000}}\n'
    )
    run = to_run(parse_wrk(output), 0.5, "wrk")
    assert run.rate == 500
    assert run.non_2xx == 3 and run.socket_errors == 3
    assert run.latency_ms["p50"] == 1.2 and run.latency_ms["p99"] == 5.0
    with pytest.raises(BenchError):
        parse_wrk(b"unable to connect")


def test_capacity_is_bounded_by_one_core_for_the_api() -> None:
    assert capacity({"api": 0.5, "postgresql (bench database backends)": 0.1}, 2) == 2000
    assert capacity({"api": 0.5, "postgresql (bench database backends)": 1.5}, 2) == 1000
    assert capacity({}, 2) is None


def test_scenario_targets_judge_only_what_ran() -> None:
    report = {
        "scenarios": {
            "trickle": {
                "classes": {"bulk": {"latency_ms": {"p50": 80.0, "p95": 150.0, "p99": 300.0}}},
                "processes": {"poller": {"peak_rss_mb": 50.0}},
            },
            "open-loop": {"error": "failed"},
        }
    }
    verdicts = {t["name"]: t["verdict"] for t in scenario_targets(report)}
    assert verdicts["trickle: p50 ms"] == "pass"
    assert verdicts["trickle: p99 ms"] == "miss"
    assert not any(name.startswith("open-loop") for name in verdicts)
    assert any(name.startswith("scenarios: peak RSS") for name in verdicts)
