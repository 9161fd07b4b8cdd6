"""The benchmark's verdicts (targets: pass / miss) and its rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tools.bench_scenario_report import scenario_targets, scenario_views

RSS_LIMIT_MB = 200.0
OWN_SERVICES = (
    "poller",
    "sender",
    "responder",
)  # the mock provider is a test double, reported but not judged


def headline(run: dict[str, Any] | None) -> float | None:
    """A run's throughput figure: the sustained rate (10 %..90 %), else the overall one."""
    if not run:
        return None
    value = run.get("sustained_per_s") or run.get("throughput_per_s")
    return float(value) if value else None


def _verdict(value: float | None, ok: bool) -> str:
    return "n/a" if value is None else ("pass" if ok else "miss")


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    pipeline = report.get("pipeline") or {}
    zero, slow = pipeline.get("0"), pipeline.get("200")
    raw = headline(report.get("raw"))
    at_zero = headline(zero)
    ratio = round(at_zero / raw, 2) if at_zero and raw else None
    at_slow = headline(slow)
    slowdown = round(at_slow / at_zero, 2) if at_zero and at_slow else None
    claim = (report.get("claim") or {}).get("ratio_large_to_small")
    peaks = {
        f"{latency} ms/{name}": usage["peak_rss_mb"]
        for latency, run in pipeline.items()
        for name, usage in run.get("processes", {}).items()
        if name.split("-")[0] in OWN_SERVICES
    }
    worst = max(peaks.values()) if peaks else None
    worst_name = max(peaks, key=lambda k: peaks[k]) if peaks else None
    throughput = [
        {
            "name": "pipeline / raw at 0 ms provider latency",
            "value": ratio,
            "target": ">= 0.5",
            "verdict": _verdict(ratio, ratio is not None and ratio >= 0.5),
        },
        {
            "name": "throughput at 200 ms / at 0 ms",
            "value": slowdown,
            "target": ">= 0.8",
            "verdict": _verdict(slowdown, slowdown is not None and slowdown >= 0.8),
        },
        {
            "name": "claim time at largest / smallest table",
            "value": claim,
            "target": "<= 2",
            "verdict": _verdict(claim, claim is not None and claim <= 2),
        },
        {
            "name": f"peak RSS of every Switchboard process (MB; worst: {worst_name})",
            "value": worst,
            "target": f"< {RSS_LIMIT_MB:g}",
            "verdict": _verdict(worst, worst is not None and worst < RSS_LIMIT_MB),
        },
    ]
    if not pipeline and not report.get("raw") and not report.get("claim") and report.get("scenarios"):
        throughput = []  # only scenarios ran: their own targets say it all
    return throughput + scenario_targets(report)


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else str(value)


def pipeline_table(report: dict[str, Any]) -> Table:
    table = Table(
        title="Pipeline: logs from PENDING to SENT (failure-free mix: no transient, permanent or "
        "rate-limit answers, no provider jitter)"
    )
    for column in (
        "provider latency",
        "logs",
        "sustained logs/s",
        "overall logs/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "poller /s",
        "sender /s",
        "responder /s",
        "invariants",
    ):
        table.add_column(column, justify="left" if column == "invariants" else "right")
    for latency, run in (report.get("pipeline") or {}).items():
        stages = run.get("stages", {})
        lat = run.get("latency_ms", {})
        table.add_row(
            f"{latency} ms",
            _f(run.get("sent")),
            _f(run.get("sustained_per_s")),
            _f(run.get("throughput_per_s")),
            _f(lat.get("p50")),
            _f(lat.get("p95")),
            _f(lat.get("p99")),
            *(_f(stages.get(s, {}).get("sustained_per_s")) for s in OWN_SERVICES),
            "[green]ok[/]" if run.get("invariants", {}).get("ok") else "[red]VIOLATION[/]",
        )
    return table


def database_table(report: dict[str, Any], top: int = 4) -> Table:
    table = Table(
        title="Database time by statement during each pipeline run "
        "(mean number of bench-database backends executing it; pg_stat_activity samples)"
    )
    table.add_column("run")
    table.add_column("statement")
    table.add_column("mean active backends", justify="right")
    for latency, run in (report.get("pipeline") or {}).items():
        rows = (run.get("database_time") or {}).get("mean_active_backends", [])[:top]
        for n, (statement, share) in enumerate(rows):
            table.add_row(f"{latency} ms", statement[:100], _f(share, 3), end_section=n == len(rows) - 1)
    return table


def process_table(report: dict[str, Any]) -> Table:
    table = Table(
        title="CPU and memory per process (psutil samples; broker: whole RabbitMQ, shared with other vhosts)"
    )
    for column in ("run", "process", "CPU s", "CPU % of wall", "peak RSS MB"):
        table.add_column(column, justify="left" if column in ("run", "process") else "right")
    runs = [(f"{k} ms", v) for k, v in (report.get("pipeline") or {}).items()]
    if report.get("raw"):
        runs.append(("raw", report["raw"]))
    for label, run in runs:
        wall = run.get("machine", {}).get("wall_s") or 0
        for name, usage in {**run.get("processes", {}), **run.get("context", {})}.items():
            share = 100 * usage["cpu_s"] / wall if wall else None
            table.add_row(label, name, _f(usage["cpu_s"], 1), _f(share), _f(usage["peak_rss_mb"], 1))
        machine = run.get("machine", {})
        other = machine.get("unaccounted_cpu_s")
        table.add_row(
            label,
            "[dim]anything else (other jobs)[/]",
            _f(other, 1),
            _f(100 * other / wall if wall and other is not None else None),
            "",
        )
        table.add_row(
            label,
            f"[dim]machine ({machine.get('cores')} cores)[/]",
            _f(machine.get("busy_cpu_s"), 1),
            f"{_f(machine.get('busy_pct'))} busy",
            "",
            end_section=True,
        )
    return table


def raw_table(report: dict[str, Any]) -> Table:
    raw = report["raw"]
    table = Table(title="Raw baseline: bare aio-pika relay over the same two hops + one UPDATE per batch")
    for column in (
        "messages",
        "sustained /s",
        "overall /s",
        "publish /s",
        "relay /s",
        "update /s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "pipeline / raw at 0 ms",
    ):
        table.add_column(column, justify="right")
    stages, lat = raw.get("stages", {}), raw.get("latency_ms", {})
    ratio = targets(report)[0]["value"]
    table.add_row(
        _f(raw.get("count")),
        _f(raw.get("sustained_per_s")),
        _f(raw.get("throughput_per_s")),
        *(_f(stages.get(s, {}).get("sustained_per_s")) for s in ("publish", "relay", "update")),
        _f(lat.get("p50")),
        _f(lat.get("p95")),
        _f(lat.get("p99")),
        _f(ratio, 2),
    )
    return table


def claim_view(report: dict[str, Any]) -> Group:
    claim = report["claim"]
    table = Table(
        title=f"Claim scaling: claim_sql({claim['ordering']}), priority {claim['priority']}, "
        f"batch {claim['batch']}, EXPLAIN (ANALYZE, BUFFERS) rolled back, median"
    )
    for column in (
        "table rows",
        "pending (priority)",
        "generate s",
        "execution ms (median / min)",
        "buffers",
        "statement wall ms",
        "full claim() ms",
        "generic plan ms",
        "rows claimed",
        "indexes used",
    ):
        table.add_column(column, justify="left" if column == "indexes used" else "right")
    lines: list[Text] = []
    for size, figures in claim["sizes"].items():
        table.add_row(
            _f(int(size)),
            _f(figures["pending_rows_of_priority"]),
            _f(figures["generate_s"], 1),
            f"{_f(figures['execution_ms'], 2)} / {_f(figures.get('execution_ms_min'), 2)}",
            _f(figures.get("buffers")),
            _f(figures["statement_wall_ms"], 2),
            _f(figures["full_claim_wall_ms"], 2),
            _f(figures.get("generic_plan", {}).get("execution_ms"), 2),
            _f(figures["claimed_rows"]),
            ", ".join(figures["indexes"]),
        )
        lines.append(Text(f"plan at {int(size):,} rows:", style="bold"))
        lines.extend(Text("  " + line, style="dim") for line in figures["key_lines"])
    return Group(table, *lines)


def targets_table(report: dict[str, Any]) -> Table:
    table = Table(title="Targets (measured, not enforced)")
    for column in ("target", "value", "wanted", "verdict"):
        table.add_column(column, justify="left" if column == "target" else "right")
    colour = {"pass": "green", "miss": "red", "n/a": "dim"}
    for t in report.get("targets", []):
        table.add_row(t["name"], _f(t["value"], 2), t["target"], f"[{colour[t['verdict']]}]{t['verdict']}[/]")
    return table


def render(report: dict[str, Any]) -> Group:
    parts: list[Any] = []
    if report.get("pipeline"):
        parts += [pipeline_table(report), database_table(report)]
    if report.get("pipeline") or report.get("raw"):
        parts.append(process_table(report))
    if report.get("raw"):
        parts.append(raw_table(report))
    if report.get("claim"):
        parts.append(claim_view(report))
    parts += scenario_views(report)
    parts.append(targets_table(report))
    for note in report.get("notes", []):
        parts.append(Text("note: " + note, style="dim"))
    return Group(*parts)
