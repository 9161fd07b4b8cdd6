"""How the dlq admin shows things: rich tables and panels (no I/O besides the console given)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.dlq.actions import ScanReport
from services.dlq.entries import DlqEntry, EntryKind, body_fields
from services.dlq.requeue import Verdict
from services.dlq.stats import DlqStats
from shared.core.recipients import mask


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _attempts(entry: DlqEntry) -> str:
    if entry.letter is not None:
        return f"{entry.letter.attempt}/{entry.letter.max_attempts}"
    return str(entry.attempt) if entry.attempt is not None else "-"


def _reason(entry: DlqEntry) -> str:
    detail = entry.error_code or (entry.error_message or "")[:40]
    return f"{entry.reason} ({detail})" if detail else entry.reason


def entries_table(entries: Iterable[DlqEntry], title: str, reveal: bool = False) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in (
        "log id",
        "kind",
        "channel",
        "recipient",
        "reason (error)",
        "class",
        "attempts",
        "provider",
        "dead-lettered at (UTC)",
        "source queue",
    ):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            str(e.log_id) if e.log_id is not None else e.key,
            e.kind.value,
            e.channel or "-",
            (e.recipient if reveal else e.masked_recipient) or "-",
            _reason(e),
            e.error_class or "-",
            _attempts(e),
            e.provider or "-",
            when(e.dead_lettered_at),
            e.source_queue or e.source or "-",
            style="yellow" if e.kind == EntryKind.POISON else None,
        )
    return table


def scan_notes(report: ScanReport) -> list[str]:
    notes = []
    if report.other_consumers:
        notes.append(
            f"[yellow]{report.other_consumers} other consumer(s) on the dlq: messages they hold were "
            "not seen[/]"
        )
    if report.incomplete > 0:
        notes.append(
            f"[yellow]{report.incomplete} message(s) counted at the start were not seen (held by another "
            "consumer, or removed meanwhile)[/]"
        )
    return notes


def _fields_table(fields: Mapping[str, Any], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in fields.items():
        table.add_row(key, "-" if value is None or value == "" else str(value))
    return table


def letter_payload(body: bytes) -> dict[str, Any] | None:
    """The message the letter's log was to send (dead letters carry the log's payload)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    payload = data.get("payload") if isinstance(data, dict) else None
    return payload if isinstance(payload, dict) else None


def show_letter(entry: DlqEntry, body: bytes, reveal: bool) -> Panel:
    fields = entry.public(reveal)
    parts: list[Any] = [_fields_table(fields, "dead letter")]
    payload = letter_payload(body)
    if payload is not None:
        if reveal:
            shown = {
                k: orjson.dumps(v).decode() if isinstance(v, dict | list) else v for k, v in payload.items()
            }
            parts.append(_fields_table(shown, "payload (the message)"))
        else:
            parts.append(
                f"payload: {len(payload)} field(s): {', '.join(sorted(payload))} (--reveal shows them)"
            )
    if reveal:
        parts.append(_fields_table(body_fields(body), "body"))
    title = f"{entry.kind.value} {entry.key}"
    return Panel(
        Group(*parts), title=title, border_style="yellow" if entry.kind == EntryKind.POISON else "red"
    )


def show_log(log: Mapping[str, Any] | None, attempts: list[dict[str, Any]], reveal: bool) -> list[Any]:
    if log is None:
        return ["[yellow]no such log in the database[/]"]
    row = dict(log)
    if not reveal and row.get("recipient"):
        row["recipient"] = mask(str(row["recipient"]))
    history = Table(title="delivery attempts", title_justify="left")
    for column in (
        "attempt",
        "provider",
        "outcome",
        "error",
        "fallback",
        "vendor ref",
        "details",
        "latency ms",
        "cost",
        "replay",
        "finished",
    ):
        history.add_column(column, overflow="fold")
    for a in attempts:
        error = " ".join(x for x in (a.get("error_code"), a.get("error_message")) if x)
        history.add_row(
            str(a["attempt"]),
            a.get("provider") or "-",
            a["outcome"],
            error or "-",
            a.get("fallback_reason") or "-",
            a.get("vendor_ref") or "-",
            orjson.dumps(a["details"]).decode() if a.get("details") else "-",
            f"{a['latency_ms']:.1f}",
            str(a["cost"]),
            "yes" if a["replay"] else "",
            when(a["finished_at"]),
        )
    return [_fields_table(row, f"log {row['id']}"), history]


def stats_tables(stats: DlqStats) -> list[Table]:
    tables = []
    for name, counter in stats.dimensions().items():
        table = Table(title=f"by {name}", title_justify="left")
        table.add_column(name)
        table.add_column("count", justify="right")
        for value, count in counter.most_common(15):
            table.add_row(value, f"{count:,}")
        tables.append(table)
    return tables


def tally_table(report: ScanReport, title: str, dry_run: bool) -> Table:
    table = Table(title=title + (" (dry run: nothing changed)" if dry_run else ""), title_justify="left")
    table.add_column("outcome")
    table.add_column("letters", justify="right")
    for verdict in Verdict:
        count = report.tally.counts[verdict]
        if count or verdict in (Verdict.REQUEUED, Verdict.STALE):
            table.add_row(verdict.value, f"{count:,}")
    table.add_row("[dim]seen in the dlq[/]", f"[dim]{report.seen:,}[/]")
    return table


class RichProgress:
    """A progress bar on the console, told the total once the scan knows it."""

    def __init__(self, console: Console, description: str) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task(description, total=None)

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bar.stop()

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)
