"""Watching a pipeline run: per-stage counters, shard consumers, completion, and what went wrong."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import asyncpg
import httpx

from shared.bus.amqp import AmqpBroker, connect_plain
from shared.bus.topology import shard_queues
from tools.bench_common import BenchError, ProgressFn, rounded, sustained_rate
from tools.stack import Environment, Stack

STAGES = ("poller", "sender", "responder")
OUT_COUNTER = re.compile(rb'^switchboard_messages_out_total\{stage="(\w+)"\} (\S+)$', re.MULTILINE)
OPEN_SQL = "SELECT count(*) FROM communication_logs WHERE status IN ('PENDING', 'PROCESSING')"


class StageWatch:
    """Each process's ``messages_out`` counter, scraped from ``/metrics``; summed per stage over time."""

    def __init__(self, stack: Stack) -> None:
        self.urls = {
            name: f"{stack.url(name)}/metrics"
            for name, p in stack.processes.items()
            if p.service != "mock_provider"
        }
        self.series: dict[str, list[tuple[float, float]]] = {stage: [] for stage in STAGES}
        self.per_process: dict[str, float] = {}

    async def scrape(self, client: httpx.AsyncClient) -> None:
        totals = dict.fromkeys(STAGES, 0.0)
        for process, url in self.urls.items():
            response = await client.get(url)
            for stage, value in OUT_COUNTER.findall(response.content):
                name = stage.decode()
                if name in totals and process.startswith(name):
                    totals[name] += float(value)
                    self.per_process[process] = float(value)
        now = time.time()
        for stage, value in totals.items():
            self.series[stage].append((now, value))

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    await self.scrape(client)
                if stop.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

    def figures(self, count: int) -> dict[str, Any]:
        return {
            stage: {
                "sustained_per_s": rounded(sustained_rate(self.series[stage], count)),
                "handed_on": int(self.series[stage][-1][1]) if self.series[stage] else 0,
                "per_replica": {p: int(v) for p, v in self.per_process.items() if p.startswith(stage)},
            }
            for stage in STAGES
        }


async def wait_consumers(environment: Environment, shards: int, timeout_s: float = 60.0) -> None:
    """Until every shard queue has a consumer (a process is ready before it subscribes)."""
    broker = AmqpBroker(await connect_plain(environment.amqp_url, "bench"))
    deadline = time.monotonic() + timeout_s
    try:
        channel = await broker.channel()
        for name in shard_queues(shards):
            while True:
                if (await channel.queue_depth(name)).consumers:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"no consumer on {name} after {timeout_s:g}s")
                await asyncio.sleep(0.1)
    finally:
        await broker.close()


WAIT_POLL_S = 2.0


async def wait_done(
    pool: asyncpg.Pool, stack: Stack, count: int, progress: ProgressFn, stall_s: float
) -> None:
    """Until every log is terminal; a dead process, or no progress for ``stall_s``, fails the run."""
    best, since = count + 1, time.monotonic()
    while True:
        open_logs = await pool.fetchval(OPEN_SQL)  # the logs are all in: only the open ones are counted
        progress(count - open_logs, count)
        if open_logs == 0:
            return
        if open_logs < best:
            best, since = open_logs, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise BenchError(f"no log became terminal for {stall_s:g}s ({open_logs} still open)")
        dead = [name for name, p in stack.processes.items() if not p.alive()]
        if dead:
            raise BenchError(f"process(es) exited during the run: {dead}")
        # count(*) over the open logs costs the database more as the backlog grows (about 25 ms at
        # 100 000 open): every 2 s keeps the harness's share of the measured machine small.
        await asyncio.sleep(WAIT_POLL_S)


def problems(stack: Stack, tail: int = 300) -> list[str]:
    """The last warning or error each process logged (what an operator reads first when a run fails)."""
    found = []
    for name, process in stack.processes.items():
        if not process.log_path.exists():
            continue
        lines = process.log_path.read_bytes().splitlines()[-tail:]
        for line in reversed(lines):
            if b'"level":"warning"' in line or b'"level":"error"' in line or line.startswith(b"Traceback"):
                found.append(f"{name}: {line.decode(errors='replace')[:300]}")
                break
            if line.startswith(b"ModuleNotFoundError") or line.startswith(b"ImportError"):
                found.append(f"{name}: {line.decode(errors='replace')[:300]}")
                break
    return found
