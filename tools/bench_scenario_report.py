"""The latency scenarios' tables and targets (issue 17's figures), beside tools/bench_report.py's."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from tools.bench_api import API_SINGLE
from tools.bench_scenarios import (
    OPEN_LOOP,
    SINGLE_PROVIDER,
    TRICKLE,
    URGENT_DURING_CAMPAIGN,
    URGENT_DURING_CAMPAIGN_API,
)

RSS_LIMIT_MB = 200.0
DATABASE = "postgresql (bench database backends)"
JUDGED = ("poller", "sender", "responder", "api")


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else str(value)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "miss")


def _target(name: str, value: float | None, wanted: str, ok: bool) -> dict[str, Any]:
    verdict = _verdict(None if value is None else ok)
    return {"name": name, "value": value, "target": wanted, "verdict": verdict}


def _latency(run: dict[str, Any], cls: str, key: str) -> float | None:
    value = ((run.get("classes") or {}).get(cls) or {}).get("latency_ms", {}).get(key)
    return float(value) if value is not None else None


def scenario_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's targets, for the scenarios that ran (a scenario that did not run adds none)."""
    scenarios: dict[str, Any] = {k: v for k, v in (report.get("scenarios") or {}).items() if "error" not in v}
    out: list[dict[str, Any]] = []
    for name in (URGENT_DURING_CAMPAIGN, URGENT_DURING_CAMPAIGN_API):
        if name in scenarios:
            p99 = _latency(scenarios[name], "urgent", "p99")
            out.append(_target(f"{name}: urgent p99 ms", p99, "< 1000 (stretch 300)", (p99 or 0) < 1000))
    if TRICKLE in scenarios:
        p50, p99 = (_latency(scenarios[TRICKLE], "bulk", k) for k in ("p50", "p99"))
        out.append(_target("trickle: p50 ms", p50, "<= 100", (p50 or 0) <= 100))
        out.append(_target("trickle: p99 ms", p99, "<= 250", (p99 or 0) <= 250))
    if SINGLE_PROVIDER in scenarios:
        rate = ((scenarios[SINGLE_PROVIDER].get("classes") or {}).get("bulk") or {}).get("sustained_per_s")
        out.append(_target("single-provider: sustained logs/s", rate, ">= 1000", (rate or 0) >= 1000))
    if OPEN_LOOP in scenarios:
        run = scenarios[OPEN_LOOP]
        p99 = _latency(run, "bulk", "p99")
        rate = run.get("rate_per_s") or 0
        out.append(
            _target(
                f"open-loop at {_f(rate)} logs/s: p99 ms (wanted at >= 800 logs/s)",
                p99,
                "< 500",
                (p99 or 0) < 500 and rate >= 800,
            )
        )
    api = scenarios.get(API_SINGLE)
    if api:
        rate = (api.get("saturation") or {}).get("requests_per_s")
        out.append(_target("api-single: requests/s at saturation", rate, ">= 1000", (rate or 0) >= 1000))
        for point in (api.get("fixed_rate") or {}).values():
            if point.get("target_per_s", 0) >= 500:
                p99 = point["latency_ms"]["p99"]
                label = f"api-single: p99 ms at {_f(point['requests_per_s'])} requests/s"
                out.append(_target(label, p99, "< 50", p99 < 50))
                break
    peaks = {
        f"{scenario}/{process}": usage["peak_rss_mb"]
        for scenario, run in scenarios.items()
        for process, usage in run.get("processes", {}).items()
        if process.split("-")[0] in JUDGED
    }
    if peaks:
        worst = max(peaks, key=lambda k: peaks[k])
        out.append(
            _target(
                f"scenarios: peak RSS MB (worst: {worst})",
                peaks[worst],
                f"< {RSS_LIMIT_MB:g}",
                peaks[worst] < RSS_LIMIT_MB,
            )
        )
    return out


def comparisons(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Figures set against a baseline measured in the same run."""
    scenarios = report.get("scenarios") or {}
    out: list[tuple[str, str]] = []
    trickle = _latency(scenarios.get(TRICKLE) or {}, "bulk", "p99")
    for name in (URGENT_DURING_CAMPAIGN, URGENT_DURING_CAMPAIGN_API):
        urgent = _latency(scenarios.get(name) or {}, "urgent", "p99")
        if urgent and trickle:
            out.append((f"{name}: urgent p99 / trickle p99 (idle pipeline)", f"{urgent / trickle:.2f}"))
    single_run = scenarios.get(SINGLE_PROVIDER) or {}
    single = (single_run.get("classes") or {}).get("bulk", {}).get("sustained_per_s")
    raw = (report.get("raw") or {}).get("sustained_per_s")
    if single and raw:
        out.append(("single-provider logs/s / raw relay msg/s", f"{single / raw:.2f}"))
    api = scenarios.get(API_SINGLE) or {}
    accepted, refused = api.get("saturation"), api.get("refused_401")
    if accepted and refused and refused.get("requests_per_s"):
        out.append(
            (
                "api-single: accepted / refused (401) requests/s",
                f"{accepted['requests_per_s'] / refused['requests_per_s']:.2f}",
            )
        )
    return out


def classes_table(report: dict[str, Any]) -> Table:
    table = Table(
        title="Latency scenarios: created_at -> sent_at per priority class "
        "(failure-free mock provider, each log its own recipient)"
    )
    for column in (
        "scenario",
        "class",
        "logs",
        "fed /s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "sustained /s",
        "invariants",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "class", "invariants") else "right")
    for name, run in (report.get("scenarios") or {}).items():
        if name == API_SINGLE:
            continue
        if "error" in run:
            table.add_row(name, "[red]failed[/]", run["error"][:80], end_section=True)
            continue
        classes = list((run.get("classes") or {}).items())
        invariants = "[green]ok[/]" if run.get("invariants", {}).get("ok") else "[red]VIOLATION[/]"
        for n, (cls, figures) in enumerate(classes):
            latency = figures["latency_ms"]
            table.add_row(
                name,
                cls,
                _f(figures["logs"]),
                _f((run.get("feed") or {}).get("fed_per_s"), 1) if n == 0 else "",
                _f(latency["p50"]),
                _f(latency["p95"]),
                _f(latency["p99"]),
                _f(latency["max"]),
                _f(figures.get("sustained_per_s")),
                invariants if n == 0 else "",
                end_section=n == len(classes) - 1,
            )
    return table


def capacity(cpu_ms: dict[str, float], cores: int) -> float | None:
    """Requests/s one API process could answer if the machine were its and the database's alone: the
    API runs on one core; with the database backends it shares ``cores``."""
    api, database = cpu_ms.get("api"), cpu_ms.get(DATABASE, 0.0)
    if not api:
        return None
    return min(1000 / api, cores * 1000 / (api + database))


def api_table(report: dict[str, Any]) -> Table | None:
    api = (report.get("scenarios") or {}).get(API_SINGLE)
    if not api or "error" in api:
        return None
    table = Table(
        title=f"api-single: POST /v1/messages from wrk ({api['connections']} connections, "
        f"{api['wrk_threads']} thread(s), {api['seconds']:g} s each; one message and Idempotency-Key "
        "a request). capacity: what one API process could answer on these cores with this CPU per request"
    )
    for column in (
        "run",
        "requests/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "non-2xx",
        "API CPU ms/req",
        "DB CPU ms/req",
        "capacity /s",
        "wrk CPU s",
    ):
        table.add_column(column, justify="left" if column == "run" else "right")
    runs = [("saturation", api.get("saturation")), ("refused (401)", api.get("refused_401"))]
    runs += [(f"fixed {k}/s", v) for k, v in (api.get("fixed_rate") or {}).items()]
    for label, run in runs:
        if not run:
            continue
        latency, cpu = run["latency_ms"], run.get("cpu_ms_per_request", {})
        table.add_row(
            label,
            _f(run["requests_per_s"], 1),
            _f(latency["p50"], 1),
            _f(latency["p90"], 1),
            _f(latency["p99"], 1),
            _f(latency["max"], 1),
            _f(run["non_2xx"]),
            _f(cpu.get("api"), 3),
            _f(cpu.get(DATABASE), 3),
            _f(capacity(cpu, report.get("machine", {}).get("cores") or 1)),
            _f(run.get("wrk_cpu_s"), 1),
        )
    return table


def comparison_table(report: dict[str, Any]) -> Table | None:
    rows = comparisons(report)
    if not rows:
        return None
    table = Table(title="Against a baseline of the same run")
    table.add_column("comparison")
    table.add_column("ratio", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def scenario_views(report: dict[str, Any]) -> list[Table]:
    if not report.get("scenarios"):
        return []
    pipeline_scenarios = [name for name in report["scenarios"] if name != API_SINGLE]
    views = [
        classes_table(report) if pipeline_scenarios else None,
        api_table(report),
        comparison_table(report),
    ]
    return [v for v in views if v is not None]
