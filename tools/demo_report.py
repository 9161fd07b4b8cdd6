"""What the demo measures (from PostgreSQL, the broker and the mock provider) and how it shows it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
from rich.console import Group, RenderableType
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

OPEN_STATUSES = ("PENDING", "PROCESSING")
STATUS_ORDER = ("PENDING", "PROCESSING", "SENT", "DELIVERED", "FAILED", "BOUNCED", "CANCELLED")
STATUS_STYLE = {
    "PENDING": "yellow",
    "PROCESSING": "cyan",
    "SENT": "green",
    "DELIVERED": "green",
    "FAILED": "red",
    "BOUNCED": "magenta",
    "CANCELLED": "dim",
}

COUNTS_SQL = """
SELECT channel, status, count(*) AS n FROM communication_logs WHERE campaign_id = $1 GROUP BY channel, status
"""
CAMPAIGN_SQL = """
SELECT sent_count, failed_count, bounced_count, retry_count FROM campaigns WHERE id = $1
"""
OUTBOX_SQL = "SELECT count(*) FROM dead_letter_outbox WHERE (body->>'campaign_id')::bigint = $1"
ATTEMPTS_SQL = """
SELECT count(*) AS attempts,
       count(*) FILTER (WHERE a.attempt > 1) AS retries,
       count(DISTINCT a.log_id) FILTER (WHERE a.attempt > 1) AS retried_logs,
       min(a.finished_at - make_interval(secs => a.latency_ms / 1000)) AS first_call
FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id
WHERE l.campaign_id = $1
"""
RETRY_REASONS_SQL = """
SELECT coalesce(a.error_code, a.outcome) AS code, count(*) AS n
FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id
WHERE l.campaign_id = $1 AND a.outcome IN ('transient', 'recoverable')
GROUP BY 1 ORDER BY 2 DESC
"""
FAILURE_REASONS_SQL = """
SELECT status, coalesce(last_error_code, '?') AS code, count(*) AS n FROM communication_logs
WHERE campaign_id = $1 AND status IN ('FAILED', 'BOUNCED') GROUP BY 1, 2 ORDER BY 3 DESC
"""
TIMING_SQL = """
SELECT min(created_at) AS first_created,
       max(updated_at) FILTER (WHERE status NOT IN ('PENDING', 'PROCESSING')) AS last_terminal,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY updated_at)
           FILTER (WHERE status NOT IN ('PENDING', 'PROCESSING')) AS p95_terminal,
       sum(attempts) AS attempts_on_logs,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at))
           FILTER (WHERE status IN ('SENT', 'DELIVERED') AND sent_at IS NOT NULL) AS sent_latency
FROM communication_logs WHERE campaign_id = $1
"""
CHANNEL_LATENCY_SQL = """
SELECT channel,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at)) AS p
FROM communication_logs WHERE campaign_id = $1 AND sent_at IS NOT NULL GROUP BY channel
"""


@dataclass(slots=True)
class Snapshot:
    """One look at the campaign while it runs."""

    per_channel: dict[str, dict[str, int]]
    retries: int
    outbox: int

    @property
    def statuses(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for counts in self.per_channel.values():
            for status, n in counts.items():
                totals[status] = totals.get(status, 0) + n
        return totals

    @property
    def open(self) -> int:
        return sum(n for s, n in self.statuses.items() if s in OPEN_STATUSES)

    @property
    def terminal(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in OPEN_STATUSES)


async def snapshot(pool: asyncpg.Pool, campaign_id: int) -> Snapshot:
    per_channel: dict[str, dict[str, int]] = {}
    for r in await pool.fetch(COUNTS_SQL, campaign_id):
        per_channel.setdefault(r["channel"], {})[r["status"]] = r["n"]
    counters = await pool.fetchrow(CAMPAIGN_SQL, campaign_id)
    outbox = await pool.fetchval(OUTBOX_SQL, campaign_id)
    return Snapshot(per_channel, counters["retry_count"] if counters else 0, outbox or 0)


@dataclass(slots=True)
class Rate:
    """Terminal logs per second over the last few seconds."""

    window_s: float = 3.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, terminal: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self.samples.append((now, terminal))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass(slots=True)
class Summary:
    campaign_id: int
    total: int
    statuses: dict[str, int]
    per_channel: dict[str, dict[str, int]]
    attempts: int
    attempts_on_logs: int
    retries: int
    retried_logs: int
    retry_reasons: dict[str, int]
    failure_reasons: dict[str, int]
    dead_lettered: int
    outbox_pending: int
    dlq_depth: int
    dlq_added: int
    campaign_counters: dict[str, int]
    window_s: float
    bulk_s: float | None  # from the first provider call until 95 % of the logs were terminal
    elapsed_s: float
    throughput: float
    p50_s: float | None
    p99_s: float | None
    channel_latency: dict[str, tuple[float, float]]
    ledger: dict[str, Any]

    @property
    def open(self) -> int:
        return sum(self.statuses.get(s, 0) for s in OPEN_STATUSES)

    def checks(self, exact_dlq: bool) -> dict[str, bool]:
        """The invariants a finished run must hold (``exact_dlq`` when nothing else shares the vhost)."""
        s = self.statuses
        sent = s.get("SENT", 0) + s.get("DELIVERED", 0)
        dlq_ok = self.dlq_added == self.dead_lettered if exact_dlq else self.dlq_added >= self.dead_lettered
        return {
            "every log terminal": self.open == 0 and sum(s.values()) == self.total,
            "one attempt row per attempt": self.attempts == self.attempts_on_logs,
            "campaign counters match": self.campaign_counters
            == {
                "sent": sent,
                "failed": s.get("FAILED", 0),
                "bounced": s.get("BOUNCED", 0),
                "retries": self.retries,
            },
            "every failure dead-lettered": self.outbox_pending == 0 and dlq_ok,
            "no duplicate send at the provider": self.ledger.get("duplicate_logs", 0) == 0,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def measure(
    pool: asyncpg.Pool, campaign_id: int, dlq_depth: int, dlq_baseline: int, ledger: dict[str, Any]
) -> Summary:
    snap = await snapshot(pool, campaign_id)
    attempts = await pool.fetchrow(ATTEMPTS_SQL, campaign_id)
    timing = await pool.fetchrow(TIMING_SQL, campaign_id)
    counters = await pool.fetchrow(CAMPAIGN_SQL, campaign_id)
    total = await pool.fetchval("SELECT total_count FROM campaigns WHERE id = $1", campaign_id)
    failures: dict[str, int] = {}
    for r in await pool.fetch(FAILURE_REASONS_SQL, campaign_id):
        failures[f"{r['status']} {r['code']}"] = r["n"]
    start, end = attempts["first_call"], timing["last_terminal"]
    window = (end - start).total_seconds() if start and end else 0.0
    bulk = (timing["p95_terminal"] - start).total_seconds() if start and timing["p95_terminal"] else None
    elapsed = (end - timing["first_created"]).total_seconds() if end and timing["first_created"] else 0.0
    latency = timing["sent_latency"] or [None, None]
    statuses = snap.statuses
    return Summary(
        campaign_id=campaign_id,
        total=total,
        statuses=statuses,
        per_channel=snap.per_channel,
        attempts=attempts["attempts"],
        attempts_on_logs=timing["attempts_on_logs"] or 0,
        retries=attempts["retries"],
        retried_logs=attempts["retried_logs"],
        retry_reasons={r["code"]: r["n"] for r in await pool.fetch(RETRY_REASONS_SQL, campaign_id)},
        failure_reasons=failures,
        dead_lettered=statuses.get("FAILED", 0) + statuses.get("BOUNCED", 0),
        outbox_pending=snap.outbox,
        dlq_depth=dlq_depth,
        dlq_added=dlq_depth - dlq_baseline,
        campaign_counters={
            "sent": counters["sent_count"],
            "failed": counters["failed_count"],
            "bounced": counters["bounced_count"],
            "retries": counters["retry_count"],
        },
        window_s=window,
        bulk_s=bulk,
        elapsed_s=elapsed,
        throughput=snap.terminal / window if window > 0 else 0.0,
        p50_s=latency[0],
        p99_s=latency[1],
        channel_latency={
            r["channel"]: (r["p"][0], r["p"][1]) for r in await pool.fetch(CHANNEL_LATENCY_SQL, campaign_id)
        },
        ledger=ledger,
    )


# ---------------------------------------------------------------- rendering


def _n(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def channel_table(
    per_channel: dict[str, dict[str, int]],
    title: str | None = None,
    latency: dict[str, tuple[float | None, float | None]] | None = None,
) -> Table:
    """Counts per channel and status; with ``latency`` (channel or "all" -> p50, p99) two more columns."""
    statuses = [s for s in STATUS_ORDER if any(s in c for c in per_channel.values())]
    table = Table(title=title, title_justify="left")
    table.add_column("channel", no_wrap=True)
    for status in statuses:
        table.add_column(status, justify="right", style=STATUS_STYLE[status])
    table.add_column("total", justify="right", style="bold")
    if latency is not None:
        table.add_column("p50", justify="right")
        table.add_column("p99", justify="right")

    def timing(key: str) -> list[str]:
        if latency is None:
            return []
        p50, p99 = latency.get(key, (None, None))
        return [_s(p50), _s(p99)]

    totals = {s: 0 for s in statuses}
    for channel in sorted(per_channel):
        counts = per_channel[channel]
        for s in statuses:
            totals[s] += counts.get(s, 0)
        table.add_row(
            channel, *(_n(counts.get(s, 0)) for s in statuses), _n(sum(counts.values())), *timing(channel)
        )
    table.add_row(
        "all", *(_n(totals[s]) for s in statuses), _n(sum(totals.values())), *timing("all"), style="bold"
    )
    return table


def live_view(
    progress: Progress,
    snap: Snapshot | None,
    rate: float,
    dlq_depth: int | None,
    dlq_baseline: int,
    backlog: dict[str, int],
    processes_up: int,
    processes: int,
    extra: Sequence[RenderableType] = (),
) -> RenderableType:
    """Progress bars, counts per channel and status, the rates and queues; then ``extra`` lines."""
    parts: list[RenderableType] = [progress]
    if snap is not None and snap.per_channel:
        parts.append(channel_table(snap.per_channel))
        dlq = "?" if dlq_depth is None else f"{_n(dlq_depth)} (+{_n(dlq_depth - dlq_baseline)})"
        first = Text()
        first.append(f"rate {rate:,.0f} logs/s", style="bold")
        first.append(f"   retries {_n(snap.retries)}   ")
        first.append(f"DLQ depth {dlq}", style="magenta")
        queued = {name: _n(backlog.get(name, 0)) for name in ("dispatch", "responses")}
        second = Text(f"queued: dispatch {queued['dispatch']}, responses {queued['responses']}   ")
        second.append(
            f"processes {processes_up}/{processes} up",
            style="green" if processes_up == processes else "bold red",
        )
        parts += [first, second, *extra]
    return Group(*parts)


def summary_table(summary: Summary, checks: dict[str, bool], extra: Sequence[RenderableType] = ()) -> Group:
    """The figures, the per-channel table, ``extra`` (providers, the outage), then the checks."""
    s = summary.statuses
    table = Table(title=f"Summary: campaign {summary.campaign_id}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_column("detail", style="dim")
    table.add_row(
        "logs", _n(summary.total), f"{_n(summary.open)} still open" if summary.open else "all terminal"
    )
    table.add_row("sent", _n(s.get("SENT", 0) + s.get("DELIVERED", 0)), "", style="green")
    table.add_row("failed", _n(s.get("FAILED", 0)), "", style="red")
    table.add_row("bounced", _n(s.get("BOUNCED", 0)), "", style="magenta")
    top = ", ".join(f"{k} {v}" for k, v in list(summary.failure_reasons.items())[:5])
    table.add_row("dead-lettered", _n(summary.dead_lettered), top)
    table.add_row("DLQ depth", _n(summary.dlq_depth), f"+{_n(summary.dlq_added)} during this run")
    reasons = ", ".join(f"{k} {v}" for k, v in list(summary.retry_reasons.items())[:4])
    table.add_row("retries", _n(summary.retries), f"on {_n(summary.retried_logs)} logs; {reasons}")
    table.add_row(
        "provider calls",
        _n(summary.attempts),
        f"ledger: {_n(summary.ledger.get('accepted', 0))} accepted, "
        f"{summary.ledger.get('replays', 0)} replays, {summary.ledger.get('duplicate_logs', 0)} duplicates",
    )
    table.add_row(
        "throughput",
        f"{summary.throughput:,.0f} logs/s",
        f"{summary.window_s:.1f} s from first provider call to last terminal log"
        + (f"; 95 % terminal after {summary.bulk_s:.1f} s" if summary.bulk_s is not None else ""),
    )
    table.add_row("latency p50", _s(summary.p50_s), "creation to SENT")
    table.add_row("latency p99", _s(summary.p99_s), "creation to SENT (retried logs included)")
    latency: dict[str, tuple[float | None, float | None]] = {
        **summary.channel_latency,
        "all": (summary.p50_s, summary.p99_s),
    }
    per_channel = channel_table(summary.per_channel, "Per channel (latency: creation to SENT)", latency)
    check_lines = Text()
    for name, ok in checks.items():
        check_lines.append("  ✓ " if ok else "  ✗ ", style="green" if ok else "bold red")
        check_lines.append(name + "\n")
    return Group(table, per_channel, *extra, Text("Checks", style="bold"), check_lines)


def exit_table(rows: list[tuple[str, int | None, int | None, str]]) -> Table:
    table = Table(title="Processes", title_justify="left")
    for name in ("process", "pid", "exit", "log"):
        table.add_column(name)
    for name, pid, code, log in rows:
        style = "green" if code == 0 else "bold red"
        table.add_row(name, str(pid or "-"), Text("killed" if code is None else str(code), style=style), log)
    return table
