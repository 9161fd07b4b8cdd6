"""``python -m services.dlq``: list, show, requeue, purge, export and count dead letters.

Reading never removes anything (see services/dlq/browse.py); ``requeue`` and ``purge`` remove only
what they act on, after a dry pass and a confirmation (``--yes`` skips it).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import orjson
import typer
from rich.console import Console
from rich.markup import escape

from services.dlq import render
from services.dlq.actions import ScanOptions, ScanReport, connect, dlq_guard, purge, requeue, scan
from services.dlq.browse import Delivery
from services.dlq.entries import DlqEntry, EntryKind, body_fields
from services.dlq.export import Exporter, ExportFormat
from services.dlq.filters import EntryFilter
from services.dlq.requeue import Verdict
from services.dlq.settings import DlqSettings
from services.dlq.stats import DlqStats
from services.dlq.store import log_story
from shared.bus.amqp import BROKER_ERRORS
from shared.core.errors import ChannelGone
from shared.core.models import utcnow
from shared.db.pool import create_pool
from shared.ops.cli_errors import explain_line, one_line_errors
from shared.runtime.logs import configure_logging, get_logger

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Inspect and act on the dead-letter queue: list, show, stats, requeue, purge, export.",
)
console = Console(stderr=True)
# Piped output (a file, grep, a test) gets wide tables instead of an 80-column squeeze.
out = Console(width=None if sys.stdout.isatty() else 200)
log = get_logger("dlq")
T = TypeVar("T")

Ids = Annotated[
    list[str] | None,
    typer.Argument(help="Log ids, or message keys (dl-<log>-<attempt>, sha-...).", show_default=False),
]
Kind = Annotated[list[EntryKind] | None, typer.Option("--kind", help="dead_letter or poison.")]
Reason = Annotated[
    list[str] | None,
    typer.Option(
        "--reason", help="permanent_error, attempts_exhausted, poison_message, rejected, delivery_limit, ..."
    ),
]
ErrorClass = Annotated[
    list[str] | None, typer.Option("--error-class", help="transient, recoverable, permanent.")
]
ErrorCode = Annotated[
    list[str] | None, typer.Option("--error-code", help="e.g. INVALID_NUMBER, HARD_BOUNCE.")
]
Channel = Annotated[list[str] | None, typer.Option("--channel")]
Provider = Annotated[list[str] | None, typer.Option("--provider")]
Tenant = Annotated[list[str] | None, typer.Option("--tenant")]
Campaign = Annotated[list[int] | None, typer.Option("--campaign")]
OlderThan = Annotated[
    str | None, typer.Option("--older-than", help="Dead-lettered at least this long ago: 30m, 2h, 7d.")
]
NewerThan = Annotated[str | None, typer.Option("--newer-than", help="Dead-lettered at most this long ago.")]
Reveal = Annotated[bool, typer.Option("--reveal", help="Recipients in clear (and bodies, for show/export).")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON output (one object per line for list).")]
All = Annotated[bool, typer.Option("--all", help="Every dead letter (no ids or filter needed).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


NO_FILTER: dict[str, Any] = dict.fromkeys(
    (
        "kinds",
        "reasons",
        "error_classes",
        "error_codes",
        "channels",
        "providers",
        "tenants",
        "campaigns",
        "older_than",
        "newer_than",
    )
)


def _filter(
    ids: list[str] | None = None,
    *,
    kinds: list[EntryKind] | None,
    reasons: list[str] | None,
    error_classes: list[str] | None,
    error_codes: list[str] | None,
    channels: list[str] | None,
    providers: list[str] | None,
    tenants: list[str] | None,
    campaigns: list[int] | None,
    older_than: str | None,
    newer_than: str | None,
) -> EntryFilter:
    try:
        return EntryFilter.build(
            ids=ids or [],
            kinds=kinds or [],
            reasons=reasons or [],
            error_classes=error_classes or [],
            error_codes=error_codes or [],
            channels=channels or [],
            providers=providers or [],
            tenants=tenants or [],
            campaigns=campaigns or [],
            older_than=older_than,
            newer_than=newer_than,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.callback()
def main(
    ctx: typer.Context,
    window: Annotated[int, typer.Option(help="Messages taken per read window (bounds memory).")] = 1000,
    idle: Annotated[float, typer.Option(help="Seconds without a message that end a scan early.")] = 2.0,
    batch_size: Annotated[int, typer.Option(help="Dead letters per requeue transaction.")] = 200,
) -> None:
    # Keep stdout for results (``--json``): log lines go to stderr, with the progress bars.
    shared = DlqSettings()
    configure_logging("dlq", "INFO", shared.log_format, stream=sys.stderr)
    ctx.obj = ScanOptions(window=window, idle_s=idle, batch_size=batch_size)


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with one_line_errors(DlqSettings(), console):
        try:
            return asyncio.run(work())
        except (*BROKER_ERRORS, ChannelGone, OSError, asyncpg.PostgresError) as exc:
            if explain_line(exc, DlqSettings()) is not None:
                raise
            console.print(f"[bold red]error:[/] {escape(repr(exc)[:500])}")
            raise typer.Exit(2) from exc


async def _guarded(settings: DlqSettings) -> None:
    problem = await dlq_guard(settings)
    if problem and problem.startswith("refusing"):
        console.print(f"[bold red]{problem}[/]")
        raise typer.Exit(3)
    if problem:
        console.print(f"[yellow]{problem}[/]")


async def _scan(
    settings: DlqSettings,
    options: ScanOptions,
    wanted: EntryFilter,
    on_match: Callable[[Delivery], Awaitable[None] | None],
    what: str,
) -> ScanReport:
    await _guarded(settings)
    connection = await connect(settings)
    try:
        with render.RichProgress(console, what) as progress:
            return await scan(connection, wanted, on_match, options, progress)
    finally:
        await connection.close()


def _notes(report: ScanReport) -> None:
    for note in render.scan_notes(report):
        console.print(note)


@app.command("list")
def list_command(
    ctx: typer.Context,
    kind: Kind = None,
    reason: Reason = None,
    error_class: ErrorClass = None,
    error_code: ErrorCode = None,
    channel: Channel = None,
    provider: Provider = None,
    tenant: Tenant = None,
    campaign: Campaign = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    limit: Annotated[
        int | None, typer.Option(help="Rows to show (table default 50; --json default all).")
    ] = None,
    as_json: AsJson = False,
    reveal: Reveal = False,
) -> None:
    """A table of dead letters (or JSON lines with --json); the DLQ is left as it was."""
    wanted = _filter(
        kinds=kind,
        reasons=reason,
        error_classes=error_class,
        error_codes=error_code,
        channels=channel,
        providers=provider,
        tenants=tenant,
        campaigns=campaign,
        older_than=older_than,
        newer_than=newer_than,
    )
    cap = limit if limit is not None else (None if as_json else 50)
    rows: list[DlqEntry] = []
    shown = 0

    def on_match(delivery: Delivery) -> None:
        nonlocal shown
        if cap is not None and shown >= cap:
            return
        shown += 1
        if as_json:
            sys.stdout.write(orjson.dumps(delivery.entry.public(reveal)).decode() + "\n")
        else:
            rows.append(delivery.entry)

    report = _run(lambda: _scan(DlqSettings(), ctx.obj, wanted, on_match, "reading the dlq"))
    if not as_json:
        out.print(
            render.entries_table(
                rows,
                f"dead letters: {report.matched:,} matching of {report.seen:,} (showing {len(rows):,})",
                reveal,
            )
        )
    _notes(report)


@app.command("show")
def show_command(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(help="A log id, or a message key (dl-..., sha-...).")],
    reveal: Reveal = False,
    as_json: AsJson = False,
    scan_dlq: Annotated[
        bool, typer.Option("--scan/--no-scan", help="Look for its letters in the DLQ.")
    ] = True,
) -> None:
    """One dead letter in full, with its log and attempt history from PostgreSQL."""
    settings = DlqSettings()
    wanted = EntryFilter.build(ids=[ident])
    found: list[tuple[DlqEntry, bytes]] = []

    def on_match(delivery: Delivery) -> None:
        if len(found) < 20:
            found.append((delivery.entry, delivery.body))

    async def work() -> tuple[ScanReport | None, dict[str, Any] | None, list[dict[str, Any]]]:
        report = await _scan(settings, ctx.obj, wanted, on_match, "looking for it") if scan_dlq else None
        log_ids = {e.log_id for e, _ in found if e.log_id is not None}
        if ident.isdigit():
            log_ids.add(int(ident))
        if not log_ids:
            return report, None, []
        pool = await create_pool(settings.database_dsn(), min_size=1, max_size=1, process="dlq")
        try:
            story, attempts = await log_story(pool, min(log_ids))
        finally:
            await pool.close()
        return report, story, attempts

    report, story, attempts = _run(work)
    if as_json:
        document = {
            "letters": [
                {
                    **e.public(reveal),
                    **({"payload": render.letter_payload(b), **body_fields(b)} if reveal else {}),
                }
                for e, b in found
            ],
            "log": story,
            "attempts": attempts,
        }
        sys.stdout.write(orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if scan_dlq and not found:
        out.print(f"[yellow]no message in the dlq for {ident}[/]")
    for entry, body in found:
        out.print(render.show_letter(entry, body, reveal))
    if story is not None or ident.isdigit():
        for part in render.show_log(story, attempts, reveal):
            out.print(part)
    if report is not None:
        _notes(report)


def _confirm_or_exit(question: str, yes: bool) -> None:
    if not yes and not typer.confirm(question, default=False, err=True):
        console.print("nothing changed")
        raise typer.Exit(1)


def _selection(all_: bool, wanted: EntryFilter) -> None:
    if all_ and not wanted.is_empty():
        raise typer.BadParameter("--all cannot be combined with ids or filters")
    if not all_ and wanted.is_empty():
        raise typer.BadParameter("give log ids, a filter, or --all")


@app.command("requeue")
def requeue_command(
    ctx: typer.Context,
    ids: Ids = None,
    kind: Kind = None,
    reason: Reason = None,
    error_class: ErrorClass = None,
    error_code: ErrorCode = None,
    channel: Channel = None,
    provider: Provider = None,
    tenant: Tenant = None,
    campaign: Campaign = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    all_: All = False,
    dry_run: DryRun = False,
    yes: Yes = False,
    attempts: Annotated[
        int | None, typer.Option(help="Fresh attempts per log (default SWITCHBOARD_MAX_ATTEMPTS).")
    ] = None,
) -> None:
    """Reset the selected dead letters' logs to PENDING with a fresh attempt budget, and remove the letters.

    Safe to interrupt and run again: a log is reset once (see services/dlq/requeue.py); a letter
    whose log has moved on is removed as stale; poison messages are skipped (purge them).
    """
    _selection(
        all_,
        wanted := _filter(
            ids,
            kinds=kind,
            reasons=reason,
            error_classes=error_class,
            error_codes=error_code,
            channels=channel,
            providers=provider,
            tenants=tenant,
            campaigns=campaign,
            older_than=older_than,
            newer_than=newer_than,
        ),
    )
    settings = DlqSettings()
    budget = attempts or settings.max_attempts
    options: ScanOptions = ctx.obj

    async def work(dry: bool) -> ScanReport:
        await _guarded(settings)
        pool = await create_pool(settings.database_dsn(), min_size=1, max_size=2, process="dlq")
        connection = await connect(settings)
        try:
            with render.RichProgress(console, "checking" if dry else "requeueing") as progress:
                return await requeue(
                    connection, pool, wanted, budget, dry_run=dry, options=options, progress=progress
                )
        finally:
            await connection.close()
            await pool.close()

    if dry_run or not yes:
        plan = _run(lambda: work(True))
        out.print(render.tally_table(plan, "requeue plan", dry_run=True))
        _notes(plan)
        counts = plan.tally.counts
        if dry_run:
            return
        if not plan.tally.removed:
            console.print("nothing to requeue")
            return
        _confirm_or_exit(
            f"Requeue {counts[Verdict.REQUEUED]:,} dead letters (and remove "
            f"{counts[Verdict.STALE]:,} stale ones)?",
            yes,
        )
    report = _run(lambda: work(False))
    out.print(render.tally_table(report, "requeue", dry_run=False))
    _notes(report)
    log.info("dlq_requeued", **{v.name.lower(): n for v, n in report.tally.counts.items()}, budget=budget)


@app.command("settle")
def settle_command(
    ctx: typer.Context,
    tenant: Tenant = None,
    campaign: Campaign = None,
    channel: Channel = None,
    dry_run: DryRun = False,
) -> None:
    """Remove the dead letters whose logs have moved on (retried through the API's retry-failed, requeued,
    re-sent): the DLQ then holds a letter only for logs that are still FAILED or BOUNCED. No log is touched.
    """
    wanted = _filter(
        None,
        kinds=None,
        reasons=None,
        error_classes=None,
        error_codes=None,
        channels=channel,
        providers=None,
        tenants=tenant,
        campaigns=campaign,
        older_than=None,
        newer_than=None,
    )
    settings = DlqSettings()
    options: ScanOptions = ctx.obj

    async def work() -> ScanReport:
        await _guarded(settings)
        pool = await create_pool(settings.database_dsn(), min_size=1, max_size=2, process="dlq")
        connection = await connect(settings)
        try:
            with render.RichProgress(console, "checking" if dry_run else "settling") as progress:
                return await requeue(
                    connection,
                    pool,
                    wanted,
                    settings.max_attempts,
                    dry_run=dry_run,
                    stale_only=True,
                    options=options,
                    progress=progress,
                )
        finally:
            await connection.close()
            await pool.close()

    report = _run(work)
    out.print(render.tally_table(report, "settle", dry_run=dry_run))
    _notes(report)
    log.info("dlq_settled", **{v.name.lower(): n for v, n in report.tally.counts.items()})


@app.command("purge")
def purge_command(
    ctx: typer.Context,
    ids: Ids = None,
    kind: Kind = None,
    reason: Reason = None,
    error_class: ErrorClass = None,
    error_code: ErrorCode = None,
    channel: Channel = None,
    provider: Provider = None,
    tenant: Tenant = None,
    campaign: Campaign = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    all_: All = False,
    dry_run: DryRun = False,
    yes: Yes = False,
) -> None:
    """Remove the selected messages from the DLQ for good (their logs stay FAILED/BOUNCED)."""
    _selection(
        all_,
        wanted := _filter(
            ids,
            kinds=kind,
            reasons=reason,
            error_classes=error_class,
            error_codes=error_code,
            channels=channel,
            providers=provider,
            tenants=tenant,
            campaigns=campaign,
            older_than=older_than,
            newer_than=newer_than,
        ),
    )
    settings = DlqSettings()
    options: ScanOptions = ctx.obj

    async def work(dry: bool) -> ScanReport:
        await _guarded(settings)
        connection = await connect(settings)
        try:
            with render.RichProgress(console, "counting" if dry else "purging") as progress:
                return await purge(connection, wanted, dry_run=dry, options=options, progress=progress)
        finally:
            await connection.close()

    if dry_run or not yes:
        plan = _run(lambda: work(True))
        console.print(f"{plan.matched:,} of {plan.seen:,} messages match")
        _notes(plan)
        if dry_run or not plan.matched:
            return
        _confirm_or_exit(f"Purge {plan.matched:,} messages from the dlq? This cannot be undone", yes)
    report = _run(lambda: work(False))
    out.print(f"purged {report.matched:,} messages ({report.seen - report.matched:,} left in the dlq)")
    _notes(report)
    log.info("dlq_purged", purged=report.matched, seen=report.seen)


@app.command("export")
def export_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The file to write.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="jsonl or csv.")] = ExportFormat.JSONL,
    kind: Kind = None,
    reason: Reason = None,
    error_class: ErrorClass = None,
    error_code: ErrorCode = None,
    channel: Channel = None,
    provider: Provider = None,
    tenant: Tenant = None,
    campaign: Campaign = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    reveal: Reveal = False,
) -> None:
    """Write the (selected) dead letters to a file as they are read; the DLQ is left as it was."""
    wanted = _filter(
        kinds=kind,
        reasons=reason,
        error_classes=error_class,
        error_codes=error_code,
        channels=channel,
        providers=provider,
        tenants=tenant,
        campaigns=campaign,
        older_than=older_than,
        newer_than=newer_than,
    )
    with Exporter(path, fmt, reveal) as exporter:
        report = _run(
            lambda: _scan(
                DlqSettings(),
                ctx.obj,
                wanted,
                lambda d: exporter.write(d.entry, d.body),
                f"exporting to {path}",
            )
        )
    out.print(f"exported {exporter.count:,} of {report.seen:,} messages to {path} ({fmt.value})")
    _notes(report)


@app.command("stats")
def stats_command(
    ctx: typer.Context,
    kind: Kind = None,
    reason: Reason = None,
    error_class: ErrorClass = None,
    error_code: ErrorCode = None,
    channel: Channel = None,
    provider: Provider = None,
    tenant: Tenant = None,
    campaign: Campaign = None,
    older_than: OlderThan = None,
    newer_than: NewerThan = None,
    as_json: AsJson = False,
) -> None:
    """Counts by kind, reason, channel, provider, error code and age."""
    wanted = _filter(
        kinds=kind,
        reasons=reason,
        error_classes=error_class,
        error_codes=error_code,
        channels=channel,
        providers=provider,
        tenants=tenant,
        campaigns=campaign,
        older_than=older_than,
        newer_than=newer_than,
    )
    stats, now = DlqStats(), utcnow()
    report = _run(
        lambda: _scan(DlqSettings(), ctx.obj, wanted, lambda d: stats.add(d.entry, now), "counting")
    )
    if as_json:
        sys.stdout.write(orjson.dumps(stats.as_dict()).decode() + "\n")
    elif stats.total == 0:
        filtered = wanted != _filter(**NO_FILTER)
        out.print("no dead letter matches these filters" if filtered else "the DLQ is empty")
    else:
        out.print(
            f"[bold]{stats.total:,}[/] messages (oldest {render.when(stats.oldest)}, newest "
            f"{render.when(stats.newest)})"
        )
        for table in render.stats_tables(stats):
            out.print(table)
    _notes(report)
