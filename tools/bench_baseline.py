"""Running the raw baseline's three processes (``tools/bench_raw.py``) and collecting their figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aio_pika
import asyncpg
import orjson

from shared.bus.topology import shard_queue
from tools.bench_common import BenchError, ProgressFn, bounded, no_progress, rounded, truncate
from tools.bench_pipeline import insert_logs
from tools.bench_procs import sampling
from tools.bench_raw import CONFIG_VARIABLE, RAW_DISPATCH, RAW_RESPONSES, RawConfig, config_json, declare_raw
from tools.stack import ROOT, Environment

ROLES = ("relay", "sink", "publisher")


@dataclass
class Child:
    role: str
    process: asyncio.subprocess.Process
    events: asyncio.Queue[dict[str, Any]]
    log: IO[bytes]
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            with contextlib.suppress(orjson.JSONDecodeError):
                await self.events.put(orjson.loads(line))
        await self.events.put({"event": "exit", "code": await self.process.wait()})

    async def expect(self, event: str, progress: ProgressFn = no_progress, total: int = 0) -> dict[str, Any]:
        while True:
            message = await self.events.get()
            if message["event"] == event:
                return message
            if message["event"] == "progress":
                progress(message["count"], total)
            elif message["event"] == "exit":
                raise BenchError(
                    f"raw {self.role} exited with {message['code']} before {event!r}; see {self.log.name}"
                )

    async def say(self, line: str) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(line.encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await stdin.drain()

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


async def spawn(role: str, config: RawConfig, log_dir: Path) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"raw-{role}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.bench_raw",
        role,
        cwd=ROOT,
        env={**os.environ, CONFIG_VARIABLE: config_json(config)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    child = Child(role, process, asyncio.Queue(), log)
    child.reader = asyncio.create_task(child.read())
    return child


async def prepare(environment: Environment, shards: int, delivery_limit: int) -> None:
    connection = await aio_pika.connect(environment.amqp_url)
    try:
        channel = await connection.channel()
        await declare_raw(channel, shards, delivery_limit)
        for exchange in (RAW_DISPATCH, RAW_RESPONSES):
            for n in range(shards):
                queue = await channel.get_queue(shard_queue(exchange, n), ensure=False)
                await queue.purge()
    finally:
        await connection.close()


async def run_raw(
    environment: Environment,
    count: int,
    *,
    shards: int = 4,
    max_seconds: float = 900.0,
    log_dir: Path | None = None,
    progress: ProgressFn = no_progress,
    **tuning: Any,
) -> dict[str, Any]:
    """The baseline's figures: end-to-end and per-stage rates, latencies, CPU and RSS per process."""
    log_dir = log_dir or ROOT / "var" / "bench" / environment.name / "raw"
    pool = await asyncpg.create_pool(environment.database_url, min_size=1, max_size=2)
    children: dict[str, Child] = {}
    try:
        await truncate(pool)
        insert_s = await insert_logs(pool, count, 10_000)
        first_id, last_id = await pool.fetchrow("SELECT min(id), max(id) FROM communication_logs")
        if last_id - first_id + 1 != count:
            raise BenchError(f"expected {count} contiguous ids, got {first_id}..{last_id}")
        await prepare(environment, shards, environment.settings.delivery_limit)
        config = RawConfig(
            environment.amqp_url,
            environment.database_url,
            count,
            first_id,
            shards,
            environment.settings.delivery_limit,
            **tuning,
        )
        async with bounded("raw baseline", max_seconds):
            for role in ROLES:
                children[role] = await spawn(role, config, log_dir)
            await asyncio.gather(*(child.expect("ready") for child in children.values()))
            pids = {f"raw-{role}": child.process.pid for role, child in children.items()}
            async with sampling(pids, database_url=environment.database_url) as sampler:
                await children["publisher"].say("go")
                published, relayed, sunk = await asyncio.gather(
                    children["publisher"].expect("done"),
                    children["relay"].expect("done"),
                    children["sink"].expect("done", progress, count),
                )
        progress(count, count)
        sent = await pool.fetchval("SELECT count(*) FROM communication_logs WHERE status = 'SENT'")
        if sent != count:
            raise BenchError(f"raw baseline updated {sent} rows, expected {count}")
        if published["errors"]:
            raise BenchError(f"raw publisher had {published['errors']} unconfirmed publishes")
        elapsed = sunk["last"] - published["first"]
        return {
            "count": count,
            "config": {k: v for k, v in config.__dict__.items() if k not in ("amqp_url", "database_url")},
            "insert_s": round(insert_s, 2),
            "elapsed_s": round(elapsed, 2),
            "throughput_per_s": rounded(count / elapsed),
            "sustained_per_s": rounded(sunk["sustained_per_s"]),
            "latency_ms": {k: round(v, 1) for k, v in sunk["latency_ms"].items()},
            "batches": sunk["batches"],
            "stages": {
                "publish": {"sustained_per_s": rounded(published["sustained_per_s"])},
                "relay": {"sustained_per_s": rounded(relayed["sustained_per_s"])},
                "update": {"sustained_per_s": rounded(sunk["sustained_per_s"])},
            },
            **sampler.to_json(count),
        }
    finally:
        await stop_children(list(children.values()))
        await pool.close()


async def stop_children(children: list[Child]) -> None:
    """Ask each to exit (after its last sample), kill what does not within a few seconds."""
    for child in children:
        await child.say("exit")
    for child in children:
        try:
            await asyncio.wait_for(child.process.wait(), 5)
        except TimeoutError:
            child.kill()
            await child.process.wait()
        if child.reader is not None:
            await asyncio.gather(child.reader, return_exceptions=True)
        child.log.close()
