"""The benchmark harness (``make bench``) at a tiny scale: every figure is there and plausible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tools.bench import BenchOptions, run_bench, write
from tools.bench_common import crossing, split, sustained_rate
from tools.bench_profile import summarise
from tools.bench_report import render
from tools.bench_scenarios import ScenarioOptions

SWITCHBOARD = ("poller", "sender", "responder", "mock_provider")


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


def check_usage(processes: dict[str, Any], expected: tuple[str, ...]) -> None:
    for prefix in expected:
        assert any(name.startswith(prefix) for name in processes), (prefix, list(processes))
    for name, usage in processes.items():
        assert usage["cpu_s"] >= 0, name
        assert positive(usage["peak_rss_mb"]), name


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_tiny_benchmark_reports_every_figure(tmp_path: Path) -> None:
    # Given a benchmark of 500 logs at 0 and 200 ms, a raw baseline and claim scaling at 1 000 / 20 000 rows
    options = BenchOptions(
        scenarios=("throughput", "raw", "claim"),
        count=500,
        provider_latencies_ms=(0.0, 200.0),
        claim_sizes=(1_000, 20_000),
        max_seconds=120,
        output=tmp_path / "bench.json",
        log_dir=tmp_path / "logs",
    )
    # When it runs and writes its report
    report = await run_bench(options)
    write(report, options.output)
    report = orjson.loads(options.output.read_bytes())

    # Then no phase failed, and no latency scenario ran
    assert report["error"] is None, report["error"]
    assert report["scenarios"] == {}
    # ... each pipeline run carried every log, failure-free, with rates, latencies and usage per process
    assert set(report["pipeline"]) == {"0", "200"}
    for latency, run in report["pipeline"].items():
        assert run["failure_free"] is True
        assert run["sent"] == 500 and run["statuses"] == {"SENT": 500}, latency
        assert positive(run["throughput_per_s"]) and positive(run["sustained_per_s"]), latency
        p50, p95, p99 = (run["latency_ms"][k] for k in ("p50", "p95", "p99"))
        assert 0 < p50 <= p95 <= p99, run["latency_ms"]
        for stage in ("poller", "sender", "responder"):
            assert run["stages"][stage]["handed_on"] == 500, (latency, stage)
            assert positive(run["stages"][stage]["sustained_per_s"]), (latency, stage)
        check_usage(run["processes"], SWITCHBOARD)
        assert positive(sum(u["cpu_s"] for u in run["processes"].values()))
        assert run["invariants"]["ok"], run["invariants"]
        assert run["invariants"]["provider_sends"] == 500
        assert set(run["exit_codes"].values()) == {0}
    # ... a provider answering in 200 ms shows in the latency
    assert report["pipeline"]["200"]["latency_ms"]["p50"] >= 200

    # ... the raw baseline relayed and updated as many, with its own rates and usage
    raw = report["raw"]
    assert raw["count"] == 500
    assert positive(raw["throughput_per_s"]) and positive(raw["sustained_per_s"])
    assert all(positive(raw["stages"][s]["sustained_per_s"]) for s in ("publish", "relay", "update"))
    assert positive(raw["latency_ms"]["p50"])
    check_usage(raw["processes"], ("raw-publisher", "raw-relay", "raw-sink"))

    # ... claim scaling measured the real statement at both sizes, with its plan
    claim = report["claim"]
    assert set(claim["sizes"]) == {"1000", "20000"}
    for size, figures in claim["sizes"].items():
        assert positive(figures["execution_ms"]) and positive(figures["full_claim_wall_ms"]), size
        assert figures["claimed_rows"] == claim["batch"], size
        assert figures["indexes"] and "Execution Time" in figures["plan"], size
    assert "logs_claim_idx" in claim["sizes"]["20000"]["indexes"]
    assert positive(claim["ratio_large_to_small"])

    # ... and every target has a value and a verdict, and the tables render
    assert [t["verdict"] for t in report["targets"]] != []
    for target in report["targets"]:
        assert target["verdict"] in ("pass", "miss"), target
        assert positive(target["value"]), target
    assert render(report) is not None


@pytest.mark.e2e
@pytest.mark.timeout(420)
async def test_tiny_latency_scenarios_report_every_figure(tmp_path: Path) -> None:
    # Given every latency scenario at a tiny size (the API one with wrk)
    scenario = ScenarioOptions(
        campaign_size=400,
        urgent_count=10,
        urgent_rate=20,
        open_loop_s=2,
        trickle_rate=20,
        trickle_s=2,
        single_provider_count=400,
        api_seconds=2,
        api_connections=4,
        api_rates=(),
    )
    options = BenchOptions(
        scenarios=(
            "single-provider",
            "trickle",
            "urgent-during-campaign",
            "urgent-during-campaign-api",
            "open-loop",
            "api-single",
        ),
        scenario=scenario,
        max_seconds=120,
        output=tmp_path / "bench.json",
        log_dir=tmp_path / "logs",
    )
    # When it runs and writes its report
    report = await run_bench(options)
    write(report, options.output)
    report = orjson.loads(options.output.read_bytes())

    # Then no scenario failed, and the throughput phases did not run
    assert report["error"] is None, report["error"]
    assert report["pipeline"] == {} and report["raw"] is None and report["claim"] is None
    scenarios = report["scenarios"]
    expected = {
        "single-provider": {"bulk": 400},
        "trickle": {"bulk": 40},
        "urgent-during-campaign": {"bulk": 400, "urgent": 10},
        "urgent-during-campaign-api": {"bulk": 400, "urgent": 10},
    }
    for name, classes in expected.items():
        run = scenarios[name]
        # ... every log of every class was sent once, with ordered percentiles
        assert {c: f["logs"] for c, f in run["classes"].items()} == classes, name
        for cls, figures in run["classes"].items():
            assert figures["sent"] == figures["logs"], (name, cls)
            latency = figures["latency_ms"]
            assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"], (name, cls)
        assert run["invariants"]["ok"], (name, run["invariants"])
        assert run["invariants"]["provider_sends"] == sum(classes.values()), name
        check_usage(run["processes"], SWITCHBOARD)
    # ... open-loop took its rate from single-provider and reports its first and last windows
    open_loop = scenarios["open-loop"]
    single_rate = scenarios["single-provider"]["classes"]["bulk"]["sustained_per_s"]
    assert open_loop["rate_per_s"] == pytest.approx(0.8 * single_rate, abs=0.1)
    assert open_loop["classes"]["bulk"]["sent"] == open_loop["feed"]["fed"]
    assert set(open_loop["windows"]) == {"first", "last"}
    # ... the urgent logs through the API were all accepted, and their request latency measured
    through_api = scenarios["urgent-during-campaign-api"]
    assert positive(through_api["api_request_ms"]["p50"])
    assert "api" in through_api["processes"]
    assert through_api["urgent_logs"] == 10 and through_api["urgent_sent_before_campaign_end"] <= 10
    # ... wrk saturated the API with accepted sends, a wrong key got only 401s, a fixed rate ran
    api = scenarios["api-single"]
    saturation, refused = api["saturation"], api["refused_401"]
    assert positive(saturation["requests_per_s"]) and saturation["non_2xx"] == 0
    assert saturation["socket_errors"] == 0
    assert positive(saturation["cpu_ms_per_request"]["api"])
    assert refused["requests"] > 0 and refused["non_2xx"] == refused["requests"]
    (half,) = api["fixed_rate"].values()
    assert half["half_of_saturation"] and half["non_2xx"] == 0 and positive(half["requests_per_s"])
    accepted = saturation["requests"] + half["requests"]
    assert api["rows_in_database"] >= accepted
    # ... every scenario has its targets, and the tables render
    names = [t["name"] for t in report["targets"]]
    assert any(n.startswith("trickle") for n in names) and any(n.startswith("api-single") for n in names)
    assert render(report) is not None


def test_sustained_rate_leaves_out_ramp_and_tail() -> None:
    # Given a counter that reaches 100 in 10 s, slowly at first
    series = [(0.0, 0.0), (5.0, 10.0), (6.0, 50.0), (7.0, 90.0), (10.0, 100.0)]
    # Then the 10 %..90 % window is 5 s..7 s
    assert crossing(series, 10) == 5.0
    assert crossing(series, 30) == 5.5
    assert sustained_rate(series, 100) == pytest.approx(40.0)
    assert sustained_rate(series[:2], 100) is None


def test_shards_are_split_evenly_between_replicas() -> None:
    assert split([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert split([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    assert split([0, 1, 2, 3], 1) == [[0, 1, 2, 3]]


def test_profile_summary_attributes_time_to_functions_and_libraries() -> None:
    handle = "<module> (runpy.py:1);Sender.handle (services/sender/__main__.py:70)"
    raw = (
        f"{handle};decode (shared/core/models.py:9) 3\n"
        f"{handle};publish (aio_pika/exchange.py:5) 1\n"
        "<module> (runpy.py:1);Runner.run (asyncio/runners.py:118) 6\n"
    )
    summary = summarise(raw)
    assert summary["samples"] == 4
    assert summary["loop_or_waiting_samples"] == 6
    assert dict(summary["self_by_library_pct"]) == {"switchboard": 75.0, "amqp client": 25.0}
    assert dict(summary["switchboard_inclusive_pct"])["Sender.handle (services/sender/__main__.py)"] == 100.0
