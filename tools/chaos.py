"""The chaos harness (``make chaos``): kill and restart everything while logs flow, then check the invariants.

Loopback only and bounded in time. Starts two replicas of each process type and the mock provider
(failure mix plus an outage window of one provider), inserts logs across channels, priorities and
recipients, SIGKILLs random processes at random instants and restarts them, restarts RabbitMQ and
PostgreSQL, waits for quiescence and checks: nothing lost, nothing sent twice, strict order kept,
every FAILED/BOUNCED/IN_DOUBT log with exactly one dead letter, nothing stuck in PROCESSING.

The RabbitMQ and PostgreSQL it restarts are its own (tools/private_services/: own node, ports and
data under a temporary directory, stopped by PID and removed at the end, also on SIGTERM or Ctrl-C),
never the machine's shared servers, which other runs are using.

The provider mix (:func:`chaos_routing`) has a WhatsApp provider that ignores idempotency keys (the
mock sends a repeated key again, as the real WhatsApp Cloud API would) and says so, so a sender killed
mid-call leaves attempts in doubt, which must be held (IN_DOUBT, one dead letter ``in_doubt``) and
never sent twice; and a rate-limited (paced) MMS provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from shared.bus.topology import DEAD_LETTER_QUEUE, shard_queues
from shared.db.pool import create_pool
from shared.db.routing_store import write_config
from tools.invariants import InvariantReport, check
from tools.private_services import PrivateServices
from tools.signals import run_harness
from tools.stack import Environment, Stack, create_environment

console = Console()
PROCESS_TYPES = ("poller", "sender", "responder")


@dataclass
class ChaosConfig:
    logs: int = 20_000
    recipients: int = 4_000
    kills_per_type: int = 3
    restart_broker: bool = True
    restart_database: bool = True
    outage_provider: str = "mocksms"
    outage_s: float = 20.0
    chaos_window_s: float = 60.0
    quiesce_timeout_s: float = 600.0
    seed: int = 7
    shards: int = 4
    report_path: Path = Path("reports/chaos.json")
    log_dir: Path = Path("var/chaos")
    broker_down_s: float = 3.0  # how long RabbitMQ stays stopped when it is restarted
    keep_environment: bool = False  # keep the private servers' data directory (they are stopped)


@dataclass
class ChaosLog:
    started: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, target: str, **extra: Any) -> None:
        event = {"t": round(time.monotonic() - self.started, 2), "event": kind, "target": target, **extra}
        self.events.append(event)
        console.print(f"[dim]{event['t']:7.2f}s[/] [yellow]{kind}[/] {target} {extra or ''}")

    def count(self, kind: str) -> Counter[str]:
        return Counter(e["target"].split("-")[0] for e in self.events if e["event"] == kind)


def make_logs(config: ChaosConfig, rng: random.Random) -> list[dict[str, Any]]:
    """Many recipients with several messages each, across channels and priorities (a fifth urgent, so
    both lanes are in use, some to recipients with bulk messages queued), a few sharing an ordering key
    across recipients, plus bad input."""
    rows: list[dict[str, Any]] = []
    for i in range(config.logs):
        r = rng.randrange(config.recipients)
        channel = ("sms", "email", "whatsapp", "mms")[r % 4]
        if channel == "email":
            recipient = f"customer{r}@example.org"
        elif channel == "whatsapp":
            recipient = f"+4477{r:08d}"
        else:
            recipient = f"+1646{r:07d}"
        if i % 997 == 0:
            recipient = "+999" + recipient[-8:] if channel != "email" else f"bounce{r}@example.org"
        if i % 1499 == 0:
            recipient = "not-a-number" if channel != "email" else "broken@@example"
        rows.append(
            {
                "channel": channel,
                "recipient": recipient,
                "priority": rng.choice((0, 1, 1, 1, 2)),
                "payload": {"body": f"chaos message {i}", "n": i},
                # an explicit ordering group spanning recipients (docs/ordering.md)
                "ordering_key": f"chaos-order-{rng.randrange(100)}" if rng.random() < 0.02 else None,
            }
        )
    return rows


INSERT_SQL = """
INSERT INTO communication_logs (channel, recipient, payload, priority, ordering_key)
SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::smallint[], $5::text[])
"""


async def insert(pool: asyncpg.Pool, rows: list[dict[str, Any]], chunk: int = 5_000) -> None:
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        await pool.execute(
            INSERT_SQL,
            [r["channel"] for r in part],
            [r["recipient"] for r in part],
            [r["payload"] for r in part],
            [r["priority"] for r in part],
            [r["ordering_key"] for r in part],
        )


POOL_CLOSE_TIMEOUT_S = 10.0
NON_IDEMPOTENT_PROVIDER = "mockwa"
PACED_PROVIDER = "mockmms"


def chaos_routing() -> dict[str, Any]:
    """The providers of a run: the default chains, with WhatsApp on a provider without idempotency
    keys (held when in doubt) and MMS first on a rate-limited provider (falling back to mocksms2)."""

    def mock(name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "kind": "mock_json", **fields}

    def route(channel: str, provider: str, priority: int = 0) -> dict[str, Any]:
        return {"channel": channel, "provider": provider, "priority": priority}

    return {
        "providers": [
            mock("mocksms"),
            mock("mocksms2"),
            mock("mockmail"),
            mock("mockmail2"),
            mock(NON_IDEMPOTENT_PROVIDER, idempotency_keys=False, in_doubt="hold"),
            mock(PACED_PROVIDER, rate_per_s=150.0, burst=30),
        ],
        "routes": [
            route("sms", "mocksms"),
            route("sms", "mocksms2", 1),
            route("email", "mockmail"),
            route("email", "mockmail2", 1),
            route("whatsapp", NON_IDEMPOTENT_PROVIDER),
            route("mms", PACED_PROVIDER),
            route("mms", "mocksms2", 1),
        ],
    }


def process_settings(config: ChaosConfig) -> dict[str, str]:
    return {
        "shards": str(config.shards),
        "ordering": "strict",
        "lease_s": "15",
        "dead_letter_lease_s": "15",  # a relay killed mid-publish: its rows are resolved 15 s later
        "backoff_base_s": "0.5",
        "backoff_cap_s": "4",
        "poll_interval_s": "0.1",
        "mock_latency_ms": "5",
        "mock_latency_jitter_ms": "3",
        "mock_retry_after_s": "0.5",
        "standby_delay_s": "1",
        "log_level": "INFO",
        "mock_ignore_idempotency_keys": json.dumps([NON_IDEMPOTENT_PROVIDER]),
    }


def build_stack(environment: Environment, config: ChaosConfig) -> Stack:
    stack = Stack(environment, config.log_dir / environment.name)
    settings = process_settings(config)
    mock = stack.add(
        "mock_provider",
        **settings,
        mock_ledger_path=str((config.log_dir / environment.name / "ledger.jsonl").resolve()),
    )
    settings["provider_url"] = f"http://127.0.0.1:{mock.port}"
    half = config.shards // 2 or 1
    for n in range(2):
        mine = list(range(0, half)) if n == 0 else list(range(half, config.shards))
        for kind in PROCESS_TYPES:
            extra = {"consume_shards": json.dumps(mine)} if kind != "poller" else {}
            stack.add(kind, f"{kind}-{n}", **settings, **extra)
    return stack


async def kill_and_restart(stack: Stack, name: str, log: ChaosLog, rng: random.Random) -> None:
    stack.kill(name)
    log.add("kill", name)
    await asyncio.sleep(rng.uniform(0.3, 2.5))
    stack.processes[name].close_log()
    stack.processes[name].start()
    log.add("restart", name)


async def restart_broker(services: PrivateServices, down_s: float, log: ChaosLog) -> None:
    """Stop the run's own RabbitMQ node (a clean shutdown), leave it down ``down_s``, start it again."""
    log.add("stop", "rabbitmq")
    await asyncio.to_thread(services.stop_broker)
    log.add("stopped", "rabbitmq")
    await asyncio.sleep(down_s)
    await asyncio.to_thread(services.start_broker)
    log.add("start", "rabbitmq")


async def restart_database(services: PrivateServices, log: ChaosLog) -> None:
    """Restart the run's own PostgreSQL (fast shutdown: sessions are terminated, open transactions
    roll back), as ``pg_ctl restart -m fast`` would."""
    log.add("restart", "postgresql")
    await asyncio.to_thread(services.stop_database)
    await asyncio.to_thread(services.start_database)
    log.add("up", "postgresql")


async def chaos_schedule(
    stack: Stack, services: PrivateServices, config: ChaosConfig, log: ChaosLog, rng: random.Random
) -> None:
    """Run every planned disruption at its random instant within the chaos window."""
    window = config.chaos_window_s
    plans: list[tuple[float, str, Any]] = []
    for kind in PROCESS_TYPES:
        for _ in range(config.kills_per_type):
            plans.append((rng.uniform(2, window), "kill", f"{kind}-{rng.randrange(2)}"))
    if config.restart_broker:
        plans.append((rng.uniform(window * 0.3, window * 0.6), "broker", None))
    if config.restart_database:
        plans.append((rng.uniform(window * 0.6, window * 0.9), "database", None))
    plans.sort(key=lambda p: p[0])
    started = time.monotonic()
    for at, what, target in plans:
        await asyncio.sleep(max(at - (time.monotonic() - started), 0))
        if what == "kill":
            await kill_and_restart(stack, target, log, rng)
        elif what == "broker":
            await restart_broker(services, config.broker_down_s, log)
        else:
            await restart_database(services, log)


async def set_outage(mock_url: str, provider: str, seconds: float, log: ChaosLog) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{mock_url}/admin/outage", json={"provider": provider, "seconds": seconds}
        )
        response.raise_for_status()
    log.add("outage", provider, seconds=seconds)


async def queue_depths(environment: Environment, shards: int) -> int:
    connection = await aio_pika.connect(environment.amqp_url)
    try:
        channel = await connection.channel()
        total = 0
        for name in shard_queues(shards):
            queue = await channel.declare_queue(name, passive=True)
            total += queue.declaration_result.message_count or 0
        return total
    finally:
        await connection.close()


async def quiescent(pool: asyncpg.Pool, environment: Environment, shards: int) -> bool:
    try:
        open_logs = await pool.fetchval(
            "SELECT count(*) FROM communication_logs WHERE status IN ('PENDING', 'PROCESSING')"
        )
        outbox = await pool.fetchval("SELECT count(*) FROM dead_letter_outbox")
        if open_logs or outbox:
            return False
        return await queue_depths(environment, shards) == 0
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, aio_pika.exceptions.AMQPError):
        return False


async def read_dead_letters(environment: Environment) -> list[bytes]:
    """Every dead letter's body; the chaos environment is thrown away, so they are consumed."""
    connection = await aio_pika.connect(environment.amqp_url)
    bodies = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)
        while (message := await queue.get(fail=False, timeout=10)) is not None:
            bodies.append(message.body)
            await message.ack()
    finally:
        await connection.close()
    return bodies


async def progress(pool: asyncpg.Pool, total: int, log: ChaosLog, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            rows = await pool.fetch("SELECT status, count(*) AS n FROM communication_logs GROUP BY status")
            counts = {r["status"]: r["n"] for r in rows}
            done = sum(n for s, n in counts.items() if s not in ("PENDING", "PROCESSING"))
            console.print(
                f"[dim]{time.monotonic() - log.started:7.2f}s[/] progress {done}/{total} "
                + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            )
        except Exception as exc:
            console.print(f"[dim]progress unavailable: {exc!r}[/]")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)


async def run_chaos(config: ChaosConfig) -> tuple[InvariantReport, dict[str, Any]]:
    """One run on a RabbitMQ node and a PostgreSQL cluster of its own, removed afterwards whatever
    happens (an exception, a cancellation by SIGTERM or Ctrl-C)."""
    services = PrivateServices(prefix="chaos", keep=config.keep_environment)
    try:
        console.print(f"[dim]starting RabbitMQ {services.rabbitmq.node} and PostgreSQL in {services.root}[/]")
        started = time.monotonic()
        await asyncio.to_thread(services.start)
        services_start_s = round(time.monotonic() - started, 1)
        report, summary = await run_on(services, config)
        summary["services_start_s"] = services_start_s
        return report, summary
    finally:
        # Blocking on purpose: a second signal must not cut the servers' shutdown short. It waits for
        # a start or restart still running in its thread, then stops both by PID.
        services.close()
        if config.keep_environment:
            console.print(f"[dim]the private servers' data is kept in {services.root}[/]")


async def run_on(services: PrivateServices, config: ChaosConfig) -> tuple[InvariantReport, dict[str, Any]]:
    rng = random.Random(config.seed)
    environment = await create_environment(
        "chaos", service_users=True, base=services.settings(), shards=str(config.shards)
    )
    stack = build_stack(environment, config)
    log = ChaosLog()
    summary: dict[str, Any] = {
        "environment": environment.name,
        "private_services": {
            "rabbitmq_node": services.rabbitmq.node,
            "amqp_port": services.rabbitmq.amqp_port,
            "management_port": services.rabbitmq.management_port,
            "epmd_port": services.rabbitmq.epmd_port,
            "postgres_port": services.postgres.port,
            "directory": str(services.root),
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in config.__dict__.items()},
    }
    pool = await create_pool(environment.database_url, max_size=2)
    stop_progress = asyncio.Event()
    try:
        async with pool.acquire() as conn:
            await write_config(conn, chaos_routing())
        await stack.start(timeout=60)
        log.add("started", "stack", processes=len(stack.processes))
        rows = make_logs(config, rng)
        await insert(pool, rows)
        inserted_at = time.monotonic()
        log.add("inserted", "logs", count=len(rows))
        reporter = asyncio.create_task(progress(pool, len(rows), log, stop_progress))
        await set_outage(stack.url("mock_provider"), config.outage_provider, config.outage_s, log)
        await chaos_schedule(stack, services, config, log, rng)
        log.add("chaos_done", "schedule")
        deadline = time.monotonic() + config.quiesce_timeout_s
        while time.monotonic() < deadline and not await quiescent(pool, environment, config.shards):
            for name, process in stack.processes.items():
                if not process.alive():  # a crash outside the plan is itself a finding
                    log.add("unexpected_exit", name, code=process.popen.returncode if process.popen else None)
                    process.start()
            await asyncio.sleep(1)
        quiesced_after = time.monotonic() - inserted_at
        stop_progress.set()
        await reporter
        # Stop only processes that finished starting, as an operator's rollout would.
        await asyncio.gather(
            *(stack.wait_ready(name, 60) for name in stack.processes), return_exceptions=True
        )
        stop_started = time.monotonic()
        codes = stack.stop(timeout=15)
        summary["shutdown_s"] = round(time.monotonic() - stop_started, 2)
        summary["exit_codes"] = codes
        summary["quiesced_after_s"] = round(quiesced_after, 1)
        ledger_rows = [
            orjson.loads(line)
            for line in (config.log_dir / environment.name / "ledger.jsonl").read_bytes().splitlines()
            if line
        ]
        report = await check(pool, ledger_rows, await read_dead_letters(environment), strict=True)
        summary["kills"] = dict(log.count("kill"))
        summary["outages_s"] = outages(log.events)
        summary["unexpected_exits"] = dict(log.count("unexpected_exit"))
        summary["events"] = log.events
        summary["duration_s"] = round(time.monotonic() - log.started, 1)
        return report, summary
    finally:
        stop_progress.set()
        stack.stop(timeout=5)
        try:
            await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_S)  # on timeout, close() terminates
        except (TimeoutError, OSError, asyncpg.InterfaceError) as exc:
            console.print(f"[dim]harness pool closed abruptly: {exc!r}[/]")


def outages(events: list[dict[str, Any]]) -> dict[str, float]:
    """How long RabbitMQ and PostgreSQL were away: from the stop to the server answering again."""
    spans = {"rabbitmq": ("stop", "start"), "postgresql": ("restart", "up")}
    found: dict[str, float] = {}
    for target, (down, up) in spans.items():
        times = {e["event"]: e["t"] for e in events if e["target"] == target}
        if down in times and up in times:
            found[target] = round(times[up] - times[down], 1)
    return found


def render(report: InvariantReport, summary: dict[str, Any]) -> Table:
    table = Table(title="Chaos run: invariants")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_column("verdict")
    table.add_row("logs", str(report.logs), "")
    for status, n in sorted(report.by_status.items()):
        table.add_row(f"  {status}", str(n), "")
    for name, count in report.violations().items():
        table.add_row(
            name.replace("_", " "), str(count), "[green]ok[/]" if count == 0 else "[red]VIOLATION[/]"
        )
    table.add_row("held in doubt (IN_DOUBT)", str(report.in_doubt), "")
    table.add_row("  of which the provider had accepted", str(report.in_doubt_accepted), "")
    table.add_row("dead letters", str(report.dead_letters), "")
    table.add_row("poison dead letters", str(report.poison_dead_letters), "")
    table.add_row("provider sends / replays", f"{report.ledger_sends} / {report.ledger_replays}", "")
    table.add_row("attempt rows / attempts", f"{report.attempt_rows} / {report.attempts_total}", "")
    table.add_row("kills", json.dumps(summary.get("kills", {})), "")
    table.add_row("servers away (s)", json.dumps(summary.get("outages_s", {})), "")
    table.add_row(
        "unexpected exits",
        json.dumps(summary.get("unexpected_exits", {})),
        "[green]ok[/]" if not summary.get("unexpected_exits") else "[red]VIOLATION[/]",
    )
    clean = all(code == 0 for code in summary.get("exit_codes", {}).values())
    table.add_row(
        "exit codes on SIGTERM",
        json.dumps(summary.get("exit_codes")),
        "[green]ok[/]" if clean else "[red]VIOLATION[/]",
    )
    table.add_row(
        "shutdown time",
        f"{summary.get('shutdown_s')} s",
        "[green]ok[/]" if summary.get("shutdown_s", 99) <= 10 else "[red]VIOLATION[/]",
    )
    table.add_row("quiesced after insert", f"{summary.get('quiesced_after_s')} s", "")
    table.add_row("whole run", f"{summary.get('duration_s')} s", "")
    return table


def passed(report: InvariantReport, summary: dict[str, Any]) -> bool:
    return (
        report.ok
        and not summary.get("unexpected_exits")
        and all(code == 0 for code in summary.get("exit_codes", {}).values())
        and summary.get("shutdown_s", 99) <= 10
    )


def write_report(path: Path, report: InvariantReport, summary: dict[str, Any]) -> None:
    """The run as JSON: the verdict, each invariant (counts and examples), and the summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"passed": passed(report, summary), "invariants": report.to_json(), **summary}
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def main(
    logs: int = typer.Option(20_000, help="How many logs to insert."),
    recipients: int = typer.Option(4_000, help="How many distinct recipients."),
    kills_per_type: int = typer.Option(3, help="SIGKILLs per process type."),
    restart_broker: bool = typer.Option(True, help="Restart the run's own RabbitMQ node once."),
    restart_database: bool = typer.Option(True, help="Restart the run's own PostgreSQL once."),
    window: float = typer.Option(60.0, help="Seconds over which disruptions are spread."),
    timeout: float = typer.Option(600.0, help="Seconds to wait for quiescence after the disruptions."),
    seed: int = typer.Option(7, help="Seed of the logs and of the disruptions' plan."),
    report: Path = typer.Option(Path("reports/chaos.json"), help="Where to write the JSON report."),
    keep_data: bool = typer.Option(False, help="Keep the private servers' data directory afterwards."),
) -> None:
    config = ChaosConfig(
        logs=logs,
        recipients=recipients,
        kills_per_type=kills_per_type,
        restart_broker=restart_broker,
        restart_database=restart_database,
        chaos_window_s=window,
        quiesce_timeout_s=timeout,
        seed=seed,
        report_path=report,
        keep_environment=keep_data,
    )
    result, summary = run_harness(run_chaos(config))
    write_report(report, result, summary)
    console.print(render(result, summary))
    console.print(f"report written to {report}")
    if not passed(result, summary):
        console.print("[red bold]chaos run FAILED[/]")
        raise typer.Exit(1)
    console.print("[green bold]chaos run passed[/]")


if __name__ == "__main__":
    typer.run(main)
