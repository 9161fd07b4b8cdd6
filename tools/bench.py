"""``python -m tools.bench`` (``make bench``): throughput against a raw baseline, and latency scenarios.

Loopback only, bounded in time (``--max-seconds`` per phase). Creates its own environment (a vhost
and a database, removed at the end) and runs, in order (``--scenario NAME`` picks some):

1. ``throughput``: the pipeline (real poller, senders, responders and mock provider) carrying
   ``--count`` logs from PENDING to SENT, once per ``--provider-latency``, with a failure-free mix;
2. ``raw``: a bare aio-pika relay of as many messages through the same two hops plus one UPDATE per
   batch (``tools/bench_raw.py``);
3. ``claim``: the real claim statement at 10 000 and 1 000 000 rows;
4. the latency scenarios (``tools/bench_scenarios.py``): ``single-provider``, ``open-loop``,
   ``trickle``, ``urgent-during-campaign`` (and ``-api``), and ``api-single`` (wrk against the API,
   ``tools/bench_api.py``).

Writes every figure to ``--output`` (JSON) and prints tables; ``docs/benchmark.md`` explains them.
Exit status: 0 when every phase produced its figures (targets are reported, not enforced), 1 when a
phase failed or ran past its time bound.
"""

from __future__ import annotations

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

from tools.bench_api import API_SINGLE, run_api_single
from tools.bench_baseline import run_raw
from tools.bench_claim import run_claim_scaling
from tools.bench_common import BenchError, ProgressFn, apply_database_settings, machine_facts, no_progress
from tools.bench_pipeline import FAILURE_FREE, PipelineConfig, run_pipeline
from tools.bench_report import render, targets
from tools.bench_scenarios import (
    OPEN_LOOP,
    PIPELINE_SCENARIOS,
    SINGLE_PROVIDER,
    ScenarioOptions,
    run_pipeline_scenario,
)
from tools.signals import run_harness
from tools.stack import ROOT, Environment, create_environment, destroy_environment

console = Console(width=None if sys.stdout.isatty() else 150)
# The best configuration measured on a 2-core machine (docs/benchmark.md, "Choosing the defaults").
DEFAULT_POLLERS, DEFAULT_SENDERS, DEFAULT_RESPONDERS = 1, 2, 1
DEFAULT_OUTPUT = Path("reports/bench.json")
THROUGHPUT, RAW, CLAIM = "throughput", "raw", "claim"
# Every scenario, in the order a run takes them (open-loop's default rate comes from single-provider).
SCENARIOS = (THROUGHPUT, RAW, CLAIM, *PIPELINE_SCENARIOS, API_SINGLE)


@dataclass(frozen=True)
class BenchOptions:
    count: int = 100_000
    provider_latencies_ms: tuple[float, ...] = (0.0, 200.0)
    pollers: int = DEFAULT_POLLERS
    senders: int = DEFAULT_SENDERS
    urgent_senders: int = 1
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
    scenarios: tuple[str, ...] = SCENARIOS
    scenario: ScenarioOptions = field(default_factory=ScenarioOptions)

    def runs(self, name: str) -> bool:
        if (name == RAW and self.skip_raw) or (name == CLAIM and self.skip_claim):
            return False
        return name in self.scenarios

    def pipeline(self, latency_ms: float) -> PipelineConfig:
        return PipelineConfig(
            count=self.count,
            provider_latency_ms=latency_ms,
            pollers=self.pollers,
            senders=self.senders,
            urgent_senders=self.urgent_senders,
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
    out = [
        f"processes: {options.pollers} poller(s), {options.senders} sender(s) "
        f"+ {options.urgent_senders} urgent-lane sender(s), "
        f"{options.responders} responder(s), {options.shards} shards, log level {options.log_level}; "
        "the mock provider shares the same cores",
        *(f"process setting: SWITCHBOARD_{k.upper()} = {v}" for k, v in options.settings.items()),
        *(f"bench database setting: {k} = {v}" for k, v in options.database_settings.items()),
    ]
    if options.runs(THROUGHPUT):
        out += [
            f"failure-free mix for throughput ({mix}): every log is sent once, no retries",
            "throughput = sustained rate between 10 % and 90 % of the logs SENT (overall rate also "
            "given); latency = created_at -> sent_at of every log, all inserted at once (so it includes "
            "queueing)",
        ]
    if set(options.scenarios) - {THROUGHPUT, RAW, CLAIM}:
        out.append(
            f"latency scenarios: mock provider failure-free at {options.scenario.provider_latency_ms:g} ms; "
            "latency = created_at -> sent_at; every log its own recipient"
        )
    return out


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
        "scenarios": {},
        "error": None,
    }
    try:
        report["machine"] = await machine_facts(environment)
        await apply_database_settings(environment, options.database_settings)
        for latency in options.provider_latencies_ms if options.runs(THROUGHPUT) else ():
            update = progress.phase(f"pipeline, provider {latency:g} ms", options.count)
            report["pipeline"][f"{latency:g}"] = await run_pipeline(
                environment, options.pipeline(latency), update
            )
        if options.runs(RAW):
            update = progress.phase("raw baseline", options.count)
            report["raw"] = await run_raw(
                environment,
                options.count,
                shards=options.shards,
                max_seconds=options.max_seconds,
                log_dir=options.log_dir / environment.name / "raw",
                progress=update,
            )
        if options.runs(CLAIM):
            update = progress.phase("claim scaling", len(options.claim_sizes))
            report["claim"] = await run_claim_scaling(
                environment, options.claim_sizes, max_seconds=options.max_seconds, progress=update
            )
        await run_scenarios(environment, options, progress, report)
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


async def run_scenarios(
    environment: Environment, options: BenchOptions, progress: PhaseProgress, report: dict[str, Any]
) -> None:
    """The latency scenarios chosen; one that fails is reported and the others still run."""
    scenarios: dict[str, Any] = report["scenarios"]
    base = options.pipeline(options.scenario.provider_latency_ms)
    for name in PIPELINE_SCENARIOS:
        if not options.runs(name):
            continue
        single = (scenarios.get(SINGLE_PROVIDER) or {}).get("classes", {}).get("bulk", {})
        update = progress.phase(name, 1)
        try:
            scenarios[name] = await run_pipeline_scenario(
                environment, name, options.scenario, base, update, single.get("sustained_per_s")
            )
        except BenchError as exc:
            scenarios[name] = {"error": str(exc)}
            report["error"] = report["error"] or str(exc)
    if options.runs(API_SINGLE):
        update = progress.phase(API_SINGLE, 4 + len(options.scenario.api_rates))
        try:
            scenarios[API_SINGLE] = await run_api_single(
                environment,
                options.scenario,
                options.log_dir / environment.name,
                log_level=options.log_level,
                profile_dir=options.profile_dir,
                max_seconds=options.max_seconds,
                progress=update,
            )
        except BenchError as exc:
            scenarios[API_SINGLE] = {"error": str(exc)}
            report["error"] = report["error"] or str(exc)


def chosen_scenarios(names: list[str] | None, open_loop_rate: float | None) -> tuple[str, ...]:
    """The scenarios to run, in run order; open-loop without a rate brings single-provider along."""
    if not names:
        return SCENARIOS
    wanted = {part.strip() for name in names for part in name.split(",") if part.strip()}
    unknown = sorted(wanted - set(SCENARIOS))
    if unknown:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    if OPEN_LOOP in wanted and open_loop_rate is None:
        wanted.add(SINGLE_PROVIDER)
    return tuple(name for name in SCENARIOS if name in wanted)


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
    urgent_senders: Annotated[
        int,
        typer.Option(min=0, help="Senders of the urgent lane alone (0: every sender consumes both lanes)."),
    ] = 1,
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
    scenario: Annotated[
        list[str] | None,
        typer.Option(help=f"Run only this scenario (repeatable or comma-separated): {', '.join(SCENARIOS)}."),
    ] = None,
    scenario_latency: Annotated[
        float, typer.Option(min=0, help="Mock provider latency (ms) of the latency scenarios.")
    ] = 20.0,
    campaign_size: Annotated[
        int, typer.Option(min=1, help="urgent-during-campaign: bulk logs inserted at once.")
    ] = 60_000,
    urgent_count: Annotated[int, typer.Option(min=1, help="urgent-during-campaign: urgent logs.")] = 200,
    urgent_rate: Annotated[
        float, typer.Option(min=0.1, help="urgent-during-campaign: urgent logs per second.")
    ] = 10.0,
    open_loop_rate: Annotated[
        float | None,
        typer.Option(min=0.1, help="open-loop: logs/s (default: 80 % of the single-provider rate measured)."),
    ] = None,
    open_loop_seconds: Annotated[float, typer.Option(min=1, help="open-loop: how long it feeds.")] = 60.0,
    trickle_rate: Annotated[float, typer.Option(min=0.1, help="trickle: logs per second.")] = 20.0,
    trickle_seconds: Annotated[float, typer.Option(min=1, help="trickle: how long it feeds.")] = 30.0,
    single_provider_count: Annotated[
        int, typer.Option(min=100, help="single-provider: logs inserted at once.")
    ] = 60_000,
    api_seconds: Annotated[float, typer.Option(min=1, help="api-single: seconds of each wrk run.")] = 15.0,
    api_connections: Annotated[int, typer.Option(min=1, help="api-single: wrk connections.")] = 32,
    api_threads: Annotated[int, typer.Option(min=1, help="api-single: wrk threads.")] = 1,
    api_rates: Annotated[
        str, typer.Option(help="api-single: fixed rates (requests/s) to run besides half of saturation.")
    ] = "500",
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
        urgent_senders=urgent_senders,
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
        scenarios=chosen_scenarios(scenario, open_loop_rate),
        scenario=ScenarioOptions(
            provider_latency_ms=scenario_latency,
            campaign_size=campaign_size,
            urgent_count=urgent_count,
            urgent_rate=urgent_rate,
            open_loop_rate=open_loop_rate,
            open_loop_s=open_loop_seconds,
            trickle_rate=trickle_rate,
            trickle_s=trickle_seconds,
            single_provider_count=single_provider_count,
            api_seconds=api_seconds,
            api_connections=api_connections,
            api_threads=api_threads,
            api_rates=parse_list(api_rates, float, allow_empty=True),
        ),
    )
    if max(senders, urgent_senders, responders) > shards:
        raise typer.BadParameter("--senders, --urgent-senders and --responders must each be at most --shards")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        report = run_harness(run_bench(options, PhaseProgress(bar)))
    write(report, output)
    console.print(render(report))
    console.print(f"report written to {output} (whole run {report['duration_s']} s)")
    if report["error"]:
        console.print(f"[red bold]benchmark FAILED:[/] {report['error']}")
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
