"""``python -m tools.bench`` (``make bench``): pipeline throughput against a raw broker+database baseline.

Loopback only, bounded in time (``--max-seconds`` per phase). Creates its own environment (a vhost
and a database, removed at the end) and runs, in order:

1. the pipeline (real poller, senders, responders and mock provider) carrying ``--count`` logs from
   PENDING to SENT, once per ``--provider-latency``, with a failure-free mix;
2. the raw baseline: a bare aio-pika relay of as many messages through the same two hops plus one
   UPDATE per batch (``tools/bench_raw.py``);
3. claim scaling: the real claim statement at 10 000 and 1 000 000 rows.

Writes every figure to ``--output`` (JSON) and prints tables; ``docs/benchmark.md`` explains them.
Exit status: 0 when every phase produced its figures (targets are reported, not enforced), 1 when a
phase failed or ran past its time bound.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tools.bench_baseline import run_raw
from tools.bench_claim import run_claim_scaling
from tools.bench_common import BenchError, ProgressFn, apply_database_settings, machine_facts, no_progress
from tools.bench_pipeline import FAILURE_FREE, PipelineConfig, run_pipeline
from tools.bench_report import render, targets
from tools.stack import ROOT, create_environment, destroy_environment

console = Console(width=None if sys.stdout.isatty() else 150)
# The best configuration measured on a 2-core machine (docs/benchmark.md, "Choosing the defaults").
DEFAULT_POLLERS, DEFAULT_SENDERS, DEFAULT_RESPONDERS = 1, 2, 1
DEFAULT_OUTPUT = Path("reports/bench.json")


@dataclass(frozen=True)
class BenchOptions:
    count: int = 100_000
    provider_latencies_ms: tuple[float, ...] = (0.0, 200.0)
    pollers: int = DEFAULT_POLLERS
    senders: int = DEFAULT_SENDERS
    responders: int = DEFAULT_RESPONDERS
    shards: int = 4
    log_level: str = "INFO"
    skip_raw: bool = False
    skip_claim: bool = False
    claim_sizes: tuple[int, ...] = (10_000, 1_000_000)
    max_seconds: float = 900.0
    output: Path = DEFAULT_OUTPUT
    log_dir: Path = ROOT / "var" / "bench"
    profile_dir: Path | None = None
    keep_environment: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    # PostgreSQL settings for the bench database (ALTER DATABASE ... SET), to try a fix: e.g.
    # {"plan_cache_mode": "force_custom_plan"}
    database_settings: dict[str, str] = field(default_factory=dict)

    def pipeline(self, latency_ms: float) -> PipelineConfig:
        return PipelineConfig(
            count=self.count,
            provider_latency_ms=latency_ms,
            pollers=self.pollers,
            senders=self.senders,
            responders=self.responders,
            shards=self.shards,
            log_level=self.log_level,
            max_seconds=self.max_seconds,
            log_dir=self.log_dir,
            profile_dir=self.profile_dir,
            settings=dict(self.settings),
        )


class PhaseProgress:
    """A rich progress bar per phase; phases only see a ``(done, total)`` callback."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def phase(self, description: str, total: float) -> ProgressFn:
        if self.progress is None:
            return no_progress
        progress = self.progress
        task = progress.add_task(description, total=total)

        def update(done: float, total_now: float) -> None:
            progress.update(task, completed=done, total=total_now or total)

        return update


def notes(options: BenchOptions) -> list[str]:
    mix = ", ".join(f"{k}={v}" for k, v in FAILURE_FREE.items())
    return [
        f"failure-free mix for throughput ({mix}): every log is sent once, no retries",
        "throughput = sustained rate between 10 % and 90 % of the logs SENT (overall rate also given); "
        "latency = created_at -> sent_at of every log, all inserted at once (so it includes queueing)",
        f"processes: {options.pollers} poller(s), {options.senders} sender(s), "
        f"{options.responders} responder(s), {options.shards} shards, log level {options.log_level}; "
        "the mock provider shares the same cores",
        *(f"process setting: SWITCHBOARD_{k.upper()} = {v}" for k, v in options.settings.items()),
        *(f"bench database setting: {k} = {v}" for k, v in options.database_settings.items()),
    ]


async def run_bench(options: BenchOptions, progress: PhaseProgress | None = None) -> dict[str, Any]:
    """Every phase in one environment; returns the report (also when a phase failed: see ``error``)."""
    progress = progress or PhaseProgress(None)
    started = time.monotonic()
    environment = await create_environment("bench", shards=str(options.shards))
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "environment": environment.name,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "notes": notes(options),
        "pipeline": {},
        "raw": None,
        "claim": None,
        "error": None,
    }
    try:
        report["machine"] = await machine_facts(environment)
        await apply_database_settings(environment, options.database_settings)
        for latency in options.provider_latencies_ms:
            update = progress.phase(f"pipeline, provider {latency:g} ms", options.count)
            report["pipeline"][f"{latency:g}"] = await run_pipeline(
                environment, options.pipeline(latency), update
            )
        if not options.skip_raw:
            update = progress.phase("raw baseline", options.count)
            report["raw"] = await run_raw(
                environment,
                options.count,
                shards=options.shards,
                max_seconds=options.max_seconds,
                log_dir=options.log_dir / environment.name / "raw",
                progress=update,
            )
        if not options.skip_claim:
            update = progress.phase("claim scaling", len(options.claim_sizes))
            report["claim"] = await run_claim_scaling(
                environment, options.claim_sizes, max_seconds=options.max_seconds, progress=update
            )
    except BenchError as exc:
        report["error"] = str(exc)
    except Exception as exc:  # a phase broke: say which error, keep what was measured
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if not options.keep_environment:
            try:
                await destroy_environment(environment)
            except Exception as exc:
                report["error"] = (
                    report["error"] or f"could not remove environment {environment.name}: {exc!r}"
                )
    report["targets"] = targets(report)
    report["duration_s"] = round(time.monotonic() - started, 1)
    return report


def write(report: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def parse_list(text: str, kind: type[float] | type[int], allow_empty: bool = False) -> tuple[Any, ...]:
    try:
        values = tuple(kind(part.strip().replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"expected a comma-separated list of numbers, got {text!r}") from None
    if (not values and not allow_empty) or any(v < 0 for v in values):
        raise typer.BadParameter(f"expected non-negative numbers, got {text!r}")
    return values


def main(
    count: Annotated[
        int, typer.Option(min=100, help="Logs through the pipeline (messages through the raw relay).")
    ] = 100_000,
    provider_latency: Annotated[
        str, typer.Option(help="Mock provider latencies in ms, comma-separated ('' for no pipeline run).")
    ] = "0,200",
    pollers: Annotated[int, typer.Option(min=1, help="Poller processes.")] = DEFAULT_POLLERS,
    senders: Annotated[
        int, typer.Option(min=1, help="Sender processes (at most --shards).")
    ] = DEFAULT_SENDERS,
    responders: Annotated[
        int, typer.Option(min=1, help="Responder processes (at most --shards).")
    ] = DEFAULT_RESPONDERS,
    shards: Annotated[
        int, typer.Option(min=1, max=64, help="Shard queues per consistent-hash exchange.")
    ] = 4,
    log_level: Annotated[str, typer.Option(help="Log level of the pipeline's processes.")] = "INFO",
    skip_raw: Annotated[bool, typer.Option(help="Leave out the raw baseline.")] = False,
    skip_claim: Annotated[bool, typer.Option(help="Leave out claim scaling.")] = False,
    claim_sizes: Annotated[
        str, typer.Option(help="Table sizes for claim scaling, comma-separated.")
    ] = "10000,1000000",
    max_seconds: Annotated[float, typer.Option(min=1, help="Time bound of each phase, in seconds.")] = 900.0,
    output: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = DEFAULT_OUTPUT,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="Record py-spy profiles of every pipeline process into this folder "
            "(py-spy takes CPU too: the figures of such a run are not comparable)."
        ),
    ] = None,
    keep_environment: Annotated[
        bool, typer.Option(help="Keep the bench vhost and database to inspect them.")
    ] = False,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=VALUE given to every pipeline process as SWITCHBOARD_<NAME> (repeatable), e.g. "
            "provider_batch_max=1 for one provider request per message."
        ),
    ] = None,
    database_setting: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=VALUE set on the bench database (repeatable), e.g. to try "
            "plan_cache_mode=force_custom_plan."
        ),
    ] = None,
) -> None:
    pairs = [item.partition("=") for item in database_setting or []]
    if any(not sep or not key for key, sep, _ in pairs):
        raise typer.BadParameter("--database-setting takes NAME=VALUE")
    process_pairs = [item.partition("=") for item in setting or []]
    if any(not sep or not key.strip() for key, sep, _ in process_pairs):
        raise typer.BadParameter("--setting takes NAME=VALUE")
    options = BenchOptions(
        count=count,
        provider_latencies_ms=parse_list(provider_latency, float, allow_empty=True),
        pollers=pollers,
        senders=senders,
        responders=responders,
        shards=shards,
        log_level=log_level,
        skip_raw=skip_raw,
        skip_claim=skip_claim,
        claim_sizes=parse_list(claim_sizes, int),
        max_seconds=max_seconds,
        output=output,
        profile_dir=profile,
        keep_environment=keep_environment,
        database_settings={key.strip(): value.strip() for key, _, value in pairs},
        settings={key.strip().lower(): value.strip() for key, _, value in process_pairs},
    )
    if max(senders, responders) > shards:
        raise typer.BadParameter("--senders and --responders must each be at most --shards")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        report = asyncio.run(run_bench(options, PhaseProgress(bar)))
    write(report, output)
    console.print(render(report))
    console.print(f"report written to {output} (whole run {report['duration_s']} s)")
    if report["error"]:
        console.print(f"[red bold]benchmark FAILED:[/] {report['error']}")
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
