"""``python -m tools.demo`` (``make demo``): every process, a 10 000-log campaign, live progress, a summary.

A few seconds into the delivery the first sms provider goes down for a while (the mock provider's
``POST /admin/outage``; ``--no-outage`` leaves it up): the live view shows the calls per provider and
their circuit breakers, the summary where the traffic went and why (``delivery_attempts.fallback_reason``).

Runs against the environment the settings point at (database and vhost ``switchboard`` by default, as
``make setup`` prepares them), so that an operator can watch it in the RabbitMQ management UI. Process
logs go to ``var/demo/run-<time>/`` (``var/demo/latest`` points at the last run). Exit status: 0 when
the campaign completed, every check held and every process stopped with 0; 1 otherwise; 2 when it
could not start; 130 on Ctrl-C. Choices and the definitions of the figures: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from shared.db.migrate import database_name
from shared.db.pool import create_pool
from shared.ops.management import Management
from tools.bench_pipeline import add_pollers, add_senders
from tools.demo_campaign import Campaign, build_campaign, create_campaign, insert_logs
from tools.demo_env import DemoError, Routing, broker_view, demo_lock, dlq_depth, preflight, routing
from tools.demo_outage import OutagePlan, OutageReport, Watchers, describe_plan, outage_report, outage_view
from tools.demo_providers import ProviderRow, fallback_table, provider_rows, provider_table
from tools.demo_report import Rate, Summary, exit_table, live_view, measure, snapshot, summary_table
from tools.signals import Interrupted, cancelled_by_signals
from tools.stack import ROOT, Environment, Stack, default_environment

DEFAULT_ROOT = ROOT / "var" / "demo"
LEDGER_FILE = "provider-ledger.jsonl"
# Stopped in this order: the producer first, the provider last.
STOP_ORDER = ("poller", "sender", "responder", "mock_provider")


class StartFailed(Exception):
    """A process exited or did not get ready while starting."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    count: int = 10_000
    senders: int = 2
    urgent_senders: int = 1
    provider_latency_ms: float = 20.0
    seed: int = 42
    timeout_s: float = 300.0
    keep_running: bool = False
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 5.0
    max_attempts: int = 5
    refresh_s: float = 0.5
    # A simulated outage of one provider during the delivery (default: the first sms provider).
    outage: bool = True
    outage_provider: str | None = None
    outage_seconds: float = 8.0
    outage_after_s: float = 3.0
    # Demo-friendly circuit breakers (service defaults 30 s and 5 s), so that recovery shows too.
    circuit_open_s: float = 2.0
    circuit_probe_grace_s: float = 1.0
    # True when nothing else writes to the vhost's dlq meanwhile (an isolated environment)
    exact_dlq: bool = False

    def process_settings(self) -> dict[str, str]:
        return {
            "backoff_base_s": str(self.backoff_base_s),
            "backoff_cap_s": str(self.backoff_cap_s),
            "mock_latency_ms": str(self.provider_latency_ms),
            "mock_latency_jitter_ms": str(self.provider_latency_ms / 2),
            "mock_seed": str(self.seed),
            "circuit_open_s": str(self.circuit_open_s),
            "circuit_probe_grace_s": str(self.circuit_probe_grace_s),
        }


@dataclass(slots=True)
class DemoResult:
    run_dir: Path
    summary: Summary | None = None
    providers: list[ProviderRow] = field(default_factory=list)
    outage: OutageReport | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    completed: bool = False
    timed_out: bool = False
    interrupted: bool = False
    crashed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.completed
            and not self.crashed
            and all(self.checks.values())
            and all(code == 0 for code in self.exit_codes.values())
        )


def build_stack(environment: Environment, run_dir: Path, options: DemoOptions) -> Stack:
    stack = Stack(environment, run_dir)
    settings = options.process_settings()
    # The provider's ledger of accepted sends, kept on disk for whoever wants to check what went out.
    mock = stack.add("mock_provider", mock_ledger_path=str(run_dir / LEDGER_FILE), **settings)
    settings["provider_url"] = f"http://127.0.0.1:{mock.port}"
    add_pollers(stack, settings, 1, urgent=options.urgent_senders > 0)
    shards = environment.settings.shards
    # Each sender owns some shards (single active consumer) and stands by for the others; the bulk
    # lane's senders and the urgent lane's have processes of their own (docs/ordering.md).
    add_senders(stack, settings, list(range(shards)), options.senders, options.urgent_senders)
    stack.add("responder", **settings)
    for process in stack.processes.values():
        process.new_session = True  # Ctrl-C reaches the demo only; it stops them in order
    return stack


def stop_in_order(stack: Stack) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for service in STOP_ORDER:
        names = [p.name for p in stack.processes.values() if p.service == service]
        if names:
            codes.update(stack.stop(*names))
    return codes


def describe(
    console: Console,
    environment: Environment,
    stack: Stack,
    options: DemoOptions,
    run_dir: Path,
    outage: OutagePlan | None,
) -> None:
    db = urlsplit(environment.database_url)
    ui = environment.settings.rabbitmq_management_url.rstrip("/")
    console.print(
        f"[bold]Switchboard demo[/]: {options.count:,} logs, {options.senders} senders, provider "
        f"latency {options.provider_latency_ms:g} ms, seed {options.seed}"
    )
    console.print(
        f"  database [cyan]{database_name(environment.database_url)}[/] on {db.hostname}:{db.port}   "
        f"vhost [cyan]{environment.vhost}[/]"
    )
    console.print(f"  watch    management UI {ui}/#/queues (select vhost {environment.vhost!r})")
    console.print(f"  logs     {_relative(run_dir)}/<process>.log (JSON lines)")
    console.print(f"  outage   {describe_plan(outage) if outage else 'none (--no-outage)'}")
    table = Table(show_header=True, box=None, pad_edge=False)
    for column in ("process", "pid", "endpoint"):
        table.add_column(column, style="dim" if column == "pid" else None)
    for process in stack.processes.values():
        path = "/ledger/stats" if process.service == "mock_provider" else "/metrics"
        table.add_row(process.name, str(process.pid), f"{stack.url(process.name)}{path}")
    console.print(table)


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


async def ledger_stats(stack: Stack) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{stack.url('mock_provider')}/ledger/stats")
            response.raise_for_status()
            stats: dict[str, Any] = response.json()
            return stats
    except httpx.HTTPError:
        return {}


@contextlib.asynccontextmanager
async def running(stack: Stack, result: DemoResult, console: Console) -> AsyncIterator[Stack]:
    """Start every process; whatever happens inside, stop them all and record their exit codes."""
    try:
        try:
            await stack.start(timeout=30)
        except (RuntimeError, TimeoutError) as exc:
            result.crashed = [p.name for p in stack.processes.values() if not p.alive()] or ["start"]
            raise StartFailed(str(exc)) from exc
        yield stack
    finally:
        result.exit_codes = stop_in_order(stack)
        rows = [
            (p.name, p.pid, result.exit_codes.get(p.name), p.log_path.name) for p in stack.processes.values()
        ]
        console.print(exit_table(rows))
        console.print(f"logs: {_relative(result.run_dir)}/")


async def watch(
    stack: Stack,
    pool: asyncpg.Pool,
    campaign_id: int,
    inserting: asyncio.Task[None],
    options: DemoOptions,
    progress: Progress,
    live: Live,
    dlq_baseline: int,
    result: DemoResult,
    watchers: Watchers,
) -> None:
    """Refresh the live view until the campaign is done, a process dies or the time runs out; take the
    provider down when the outage is due."""
    deliver = progress.add_task("deliver", total=options.count)
    rate = Rate()
    deadline = time.monotonic() + options.timeout_s
    dlq: int | None = None
    backlog: dict[str, int] = {}
    broker_due = 0.0
    watchers.started = time.monotonic()
    async with Management(stack.environment.settings) as management, httpx.AsyncClient(timeout=5) as client:
        while True:
            if watchers.outage is not None:
                await watchers.outage.tick(
                    client, stack.url("mock_provider"), time.monotonic() - watchers.started
                )
            snap = await snapshot(pool, campaign_id)
            if time.monotonic() >= broker_due:  # the management API is not free for the broker: 1/s
                dlq, backlog = await broker_view(management, stack.environment.vhost)
                await watchers.providers.refresh(client)
                broker_due = time.monotonic() + 1.0
            progress.update(deliver, completed=snap.terminal)
            up = sum(p.alive() for p in stack.processes.values())
            live.update(
                live_view(
                    progress,
                    snap,
                    rate.add(snap.terminal),
                    dlq,
                    dlq_baseline,
                    backlog,
                    up,
                    len(stack.processes),
                    watchers.lines(),
                )
            )
            if inserting.done():
                inserting.result()  # an insert that failed stops the demo here
                if snap.terminal == options.count and snap.outbox == 0:
                    result.completed = True
                    return
            result.crashed = [p.name for p in stack.processes.values() if not p.alive()]
            if result.crashed:
                return
            if time.monotonic() > deadline:
                result.timed_out = True
                return
            await asyncio.sleep(options.refresh_s)


async def run_demo(
    options: DemoOptions, environment: Environment, root: Path, console: Console
) -> DemoResult:
    """The whole demo against ``environment``; logs and the lock under ``root``. Never leaves a process."""
    run_dir = root / f"run-{datetime.now():%Y%m%d-%H%M%S}"
    result = DemoResult(run_dir)
    with demo_lock(root):
        dlq_baseline = await preflight(environment, environment.settings.shards)
        plan = await routing(
            environment,
            options.outage,
            options.outage_provider,
            options.outage_after_s,
            options.outage_seconds,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        latest = root / "latest"
        latest.unlink(missing_ok=True)
        latest.symlink_to(run_dir.name)
        stack = build_stack(environment, run_dir, options)
        try:
            async with running(stack, result, console):
                describe(console, environment, stack, options, run_dir, plan.outage)
                await drive(stack, options, plan, dlq_baseline, result, console)
        except asyncio.CancelledError:
            result.interrupted = True
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except StartFailed as exc:
            console.print(f"[bold red]{exc}[/]")
    (run_dir / "summary.json").write_bytes(
        orjson.dumps(
            {
                "ok": result.ok,
                "completed": result.completed,
                "timed_out": result.timed_out,
                "interrupted": result.interrupted,
                "crashed": result.crashed,
                "exit_codes": result.exit_codes,
                "checks": result.checks,
                "summary": result.summary.as_dict() if result.summary else None,
                "providers": [asdict(row) for row in result.providers],
                "outage": result.outage.as_dict() if result.outage else None,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    return result


def progress_bars(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    )


async def deliver(
    stack: Stack,
    pool: asyncpg.Pool,
    campaign: Campaign,
    campaign_id: int,
    options: DemoOptions,
    dlq_baseline: int,
    result: DemoResult,
    console: Console,
    watchers: Watchers,
) -> None:
    """Insert the campaign's logs while the live view follows them until they are all terminal."""
    progress = progress_bars(console)
    insert = progress.add_task("insert", total=len(campaign.logs))
    try:
        with Live(progress, console=console, refresh_per_second=4) as live:
            inserting = asyncio.create_task(
                insert_logs(
                    pool,
                    campaign_id,
                    campaign.logs,
                    options.max_attempts,
                    lambda n: progress.advance(insert, n),
                )
            )
            try:
                await watch(
                    stack,
                    pool,
                    campaign_id,
                    inserting,
                    options,
                    progress,
                    live,
                    dlq_baseline,
                    result,
                    watchers,
                )
            finally:
                if not inserting.done():
                    inserting.cancel()
                await asyncio.gather(inserting, return_exceptions=True)
    finally:
        if not console.is_terminal:
            console.line()  # a live display ends its last line only on a terminal


async def drive(
    stack: Stack,
    options: DemoOptions,
    plan: Routing,
    dlq_baseline: int,
    result: DemoResult,
    console: Console,
) -> None:
    """Create and deliver the campaign (taking a provider down meanwhile), then measure and print the
    summary."""
    campaign = build_campaign(options.count, options.seed)
    pool = await create_pool(stack.environment.database_url, max_size=3)
    try:
        campaign_id = await create_campaign(pool, campaign)
        mix = ", ".join(f"{c} {n:,}" for c, n in sorted(campaign.by_channel().items()))
        console.print(f"campaign [bold]{campaign_id}[/] {campaign.name!r}: {mix}")
        watchers = Watchers.of(stack, plan.providers, plan.outage)
        await deliver(stack, pool, campaign, campaign_id, options, dlq_baseline, result, console, watchers)
        if result.crashed:
            console.print(f"[bold red]process exited during the run: {', '.join(result.crashed)}[/]")
        if result.timed_out:
            console.print(f"[bold red]the campaign did not complete within {options.timeout_s:g} s[/]")
        depth = await dlq_depth(stack.environment)
        ledger = await ledger_stats(stack)
        result.summary = await measure(pool, campaign_id, depth, dlq_baseline, ledger)
        result.checks = result.summary.checks(options.exact_dlq)
        result.providers = await provider_rows(pool, campaign_id, plan.providers)
        extra: list[RenderableType] = [provider_table(result.providers), fallback_table(result.providers)]
        if watchers.outage is not None:
            result.outage = await outage_report(
                pool, campaign_id, watchers.outage, watchers.started, stack.url("mock_provider")
            )
            result.checks.update(result.outage.checks())
            extra.append(outage_view(result.outage))
        console.print(summary_table(result.summary, result.checks, extra))
        if options.keep_running and result.completed:
            console.print("processes keep running (metrics and UI above); [bold]Ctrl-C[/] stops them")
            await asyncio.Event().wait()
    finally:
        await pool.close()


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    count: Annotated[int, typer.Option(min=1, help="Logs in the campaign.")] = 10_000,
    senders: Annotated[int, typer.Option(min=1, max=16, help="Sender processes.")] = 2,
    provider_latency_ms: Annotated[
        float, typer.Option(min=0, help="Mean latency of the mock provider.")
    ] = 20.0,
    seed: Annotated[int, typer.Option(help="Seed of the campaign and of the provider's failure mix.")] = 42,
    timeout_s: Annotated[
        float, typer.Option(min=1, help="Exit 1 if the campaign is not done by then.")
    ] = 300.0,
    keep_running: Annotated[bool, typer.Option(help="Leave the processes running until Ctrl-C.")] = False,
    backoff_base_s: Annotated[
        float, typer.Option(min=0, help="Retry backoff base (service default 5).")
    ] = 0.5,
    backoff_cap_s: Annotated[
        float, typer.Option(min=0, help="Retry backoff cap (service default 300).")
    ] = 5.0,
    max_attempts: Annotated[
        int, typer.Option(min=1, max=100, help="Attempts before a log is dead-lettered.")
    ] = 5,
    log_dir: Annotated[Path, typer.Option(help="Where run directories and the lock file go.")] = DEFAULT_ROOT,
    outage: Annotated[
        bool, typer.Option(help="Take a provider down during the delivery (provider fallback).")
    ] = True,
    outage_provider: Annotated[
        str | None, typer.Option(help="The provider to take down (default: the first sms provider).")
    ] = None,
    outage_seconds: Annotated[float, typer.Option(min=0.5, help="How long it stays down.")] = 8.0,
    outage_after_s: Annotated[
        float, typer.Option(min=0, help="When it goes down, in seconds after the delivery started.")
    ] = 3.0,
) -> None:
    """Run every process, feed a realistic campaign, show live progress and a summary, stop cleanly."""
    console = Console()
    options = DemoOptions(
        count=count,
        senders=senders,
        provider_latency_ms=provider_latency_ms,
        seed=seed,
        timeout_s=timeout_s,
        keep_running=keep_running,
        backoff_base_s=backoff_base_s,
        backoff_cap_s=backoff_cap_s,
        max_attempts=max_attempts,
        outage=outage,
        outage_provider=outage_provider,
        outage_seconds=outage_seconds,
        outage_after_s=outage_after_s,
    )
    try:
        result = asyncio.run(
            cancelled_by_signals(run_demo(options, default_environment(), log_dir.resolve(), console))
        )
    except DemoError as exc:
        console.print(f"[bold red]demo not started:[/] {exc}")
        raise typer.Exit(2) from None
    except Interrupted as stopped:  # SIGTERM or Ctrl-C: run_demo has stopped every process
        console.print(f"[yellow]{stopped}; every process was stopped[/]")
        raise typer.Exit(stopped.exit_status) from None
    if result.interrupted and not (keep_running and result.completed):
        console.print("[yellow]interrupted; every process was stopped[/]")
        raise typer.Exit(130)
    verdict = "[bold green]demo OK[/]" if result.ok else "[bold red]demo FAILED[/]"
    console.print(f"{verdict}  (summary: {_relative(result.run_dir)}/summary.json)")
    raise typer.Exit(0 if result.ok else 1)


if __name__ == "__main__":
    app()
