"""The dlq admin against a large DLQ: time and peak memory of ``list``, ``export`` and ``stats``.

``python -m tools.dlq_scale --count 100000`` creates an environment of its own (vhost + database),
fills its ``dlq`` with dead letters shaped exactly like the responder's (plus some poison
messages), runs each command as a separate process, measures its wall time and peak RSS (from
``wait4``), checks that the DLQ still holds every message in the same order, and cleans up.
The fill helpers are also used by the tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.table import Table

from shared.bus import wire
from shared.bus.amqp import AmqpBroker, connect_plain
from shared.bus.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE
from shared.core.models import DeadLetter, DeadLetterReason, OutcomeClass, Status, utcnow
from tools.stack import ROOT, Environment, create_environment, destroy_environment

CHANNELS = ("sms", "email", "whatsapp")
CODES = (
    ("INVALID_NUMBER", DeadLetterReason.PERMANENT_ERROR, OutcomeClass.PERMANENT),
    ("SERVER_ERROR", DeadLetterReason.ATTEMPTS_EXHAUSTED, OutcomeClass.TRANSIENT),
    ("HARD_BOUNCE", DeadLetterReason.PERMANENT_ERROR, OutcomeClass.PERMANENT),
)


def sample_letter(i: int, log_id: int | None = None) -> DeadLetter:
    """A dead letter as the responder writes it (varied channel, reason, provider and age)."""
    code, reason, error_class = CODES[i % len(CODES)]
    channel = CHANNELS[i % len(CHANNELS)]
    recipient = f"user{i}@example.com" if channel == "email" else f"+1415{i % 10_000_000:07d}"
    now = utcnow()
    return DeadLetter(
        log_id=log_id if log_id is not None else i + 1,
        attempt=1 if error_class == OutcomeClass.PERMANENT else 5,
        max_attempts=5,
        tenant=f"tenant{i % 3}",
        campaign_id=None,
        channel=channel,
        recipient=recipient,
        provider=("mocksms", "mockmail", "mockwa")[i % 3],
        status=Status.BOUNCED if code == "HARD_BOUNCE" else Status.FAILED,
        reason=reason,
        error_class=error_class,
        error_code=code,
        error_message="rejected by provider",
        created_at=now - timedelta(hours=i % 72),
        dead_lettered_at=now - timedelta(minutes=i % 5000),
    )


def letter_message(letter: DeadLetter) -> wire.Envelope:
    """The envelope the responder's relay publishes for ``letter``."""
    return wire.dead_letter(letter)


def poison_message(i: int) -> wire.Envelope:
    """A dispatch message a sender could not use, copied to ``dlx`` with the reason in headers."""
    body = b'{"log_id": %d, "attempt": 1, "channel": "sms", "recipient": "+1999' % (
        10_000_000 + i
    )  # truncated
    arrived = wire.Received(
        body, message_id=f"poison-{i}", type=wire.MESSAGE_TYPE_DISPATCH, content_type=wire.CONTENT_TYPE
    )
    return wire.poison_copy(arrived, "MalformedMessage: not JSON", "sender", "dispatch.bulk.0")


async def publish_to_dlx(broker: AmqpBroker, messages: list[wire.Envelope], window: int = 2000) -> None:
    channel = await broker.channel()
    try:
        for start in range(0, len(messages), window):
            chunk = messages[start : start + window]
            errors = [e for e in await channel.publish(DEAD_LETTER_EXCHANGE, chunk) if e is not None]
            if errors:
                raise RuntimeError(f"{len(errors)} dead letters not confirmed: {errors[0]!r}")
    finally:
        await channel.close()


async def fill_dlq(amqp_url: str, letters: int, poison: int = 0) -> None:
    """Publish ``letters`` dead letters and ``poison`` poison messages to ``dlx``, in batches."""
    broker = AmqpBroker(await connect_plain(amqp_url, "dlq-scale"))
    try:
        batch = 5000
        for start in range(0, letters, batch):
            await publish_to_dlx(
                broker,
                [letter_message(sample_letter(i)) for i in range(start, min(start + batch, letters))],
            )
        if poison:
            await publish_to_dlx(broker, [poison_message(i) for i in range(poison)])
    finally:
        await broker.close()


async def dlq_depth(amqp_url: str) -> int:
    broker = AmqpBroker(await connect_plain(amqp_url, "dlq-scale"))
    try:
        return (await (await broker.channel()).queue_depth(DEAD_LETTER_QUEUE)).ready
    finally:
        await broker.close()


@dataclass(frozen=True, slots=True)
class Run:
    command: str
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str


def _peak_rss_kib(pid: int) -> int | None:
    """VmHWM: the process's own high-water RSS (per address space, so reset by exec)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def run_measured(env: dict[str, str], workdir: Path, *args: str) -> Run:
    """Run ``python -m services.dlq ARGS``, polling its peak RSS until it exits."""
    started = time.monotonic()
    output_path = workdir / "stdout.txt"
    with output_path.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.dlq", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.DEVNULL,
        )
        peak = 0
        while process.poll() is None:
            peak = max(peak, _peak_rss_kib(process.pid) or 0)
            time.sleep(0.02)
    return Run(
        " ".join(args),
        time.monotonic() - started,
        peak / 1024,
        process.returncode or 0,
        output_path.read_text(),
    )


async def measure(
    environment: Environment, count: int, poison: int, workdir: Path, console: Console
) -> list[Run]:
    started = time.monotonic()
    await fill_dlq(environment.amqp_url, count, poison)
    total = count + poison
    console.print(f"filled the dlq with {total:,} messages in {time.monotonic() - started:.1f}s")
    env = dict(environment.env)
    export = workdir / "dlq-export.jsonl"
    runs = [
        run_measured(env, workdir, "--help"),
        run_measured(env, workdir, "list", "--limit", "20"),
        run_measured(env, workdir, "export", str(export)),
        run_measured(env, workdir, "stats", "--json"),
    ]
    lines = sum(1 for _ in export.open(encoding="utf-8"))
    if lines != total:
        raise RuntimeError(f"export wrote {lines} lines, expected {total}")
    stats = orjson.loads(runs[-1].stdout)
    if stats["total"] != total:
        raise RuntimeError(f"stats counted {stats['total']}, expected {total}")
    depth = await dlq_depth(environment.amqp_url)
    if depth != total:
        raise RuntimeError(f"the dlq holds {depth} messages after reading, expected {total}")
    console.print(f"export: {lines:,} lines, {export.stat().st_size / 1e6:.1f} MB; dlq still holds {depth:,}")
    return runs


def main(
    count: int = typer.Option(100_000, help="Dead letters to put in the DLQ."),
    poison: int = typer.Option(1000, help="Poison messages besides."),
    workdir: Path = typer.Option(Path("var/dlq-scale"), help="Where the export goes."),
) -> None:
    console = Console()
    workdir.mkdir(parents=True, exist_ok=True)

    async def run() -> list[Run]:
        environment = await create_environment("sbscale")
        try:
            return await measure(environment, count, poison, workdir, console)
        finally:
            await destroy_environment(environment)

    runs = asyncio.run(run())
    table = Table(
        "command", "seconds", "peak RSS (MB)", "exit", title=f"dlq admin, {count + poison:,} messages"
    )
    for r in runs:
        table.add_row(r.command, f"{r.seconds:.1f}", f"{r.peak_rss_mb:.0f}", str(r.returncode))
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
