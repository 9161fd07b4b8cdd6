"""What the benchmark's processes cost: CPU seconds and peak RSS per pid, sampled with psutil.

Besides the processes the benchmark starts, it samples as context the PostgreSQL backends serving
the bench database (found in ``pg_stat_activity``, so other databases on the server do not count),
the whole RabbitMQ broker (``beam.smp``: shared with every other vhost, so it counts other tenants'
traffic too), this harness, and the machine's busy CPU: whatever is left over is other jobs' load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psutil

MB = 1024 * 1024
HARNESS = "bench harness"  # this process: sampling, progress and SQL polling cost CPU too
RABBITMQ = "rabbitmq (whole broker)"
POSTGRES = "postgresql (bench database backends)"
BACKENDS_SQL = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def _cpu(process: psutil.Process) -> tuple[float, int]:
    with process.oneshot():
        times = process.cpu_times()
        return times.user + times.system, process.memory_info().rss


def _total(times: Any) -> float:
    # guest time is already counted in user time on Linux
    return float(sum(v for k, v in times._asdict().items() if not k.startswith("guest")))


@dataclass
class Usage:
    """One process (or, for a group, the sum of its members' CPU and the largest member's RSS)."""

    name: str
    pid: int | None = None
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0
    samples: int = 0

    def observe(self, pid: int, cpu: float, rss: int, first_seen_at_start: bool) -> None:
        if pid not in self.cpu_start:
            # A process born during the phase spent all of its CPU in it.
            self.cpu_start[pid] = cpu if first_seen_at_start else 0.0
        self.cpu_last[pid] = cpu
        self.peak_rss = max(self.peak_rss, rss)
        self.samples += 1

    def observe_process(self, process: psutil.Process, at_start: bool) -> None:
        try:
            cpu, rss = _cpu(process)
        except psutil.Error:
            return  # gone: its last sample stands
        self.observe(process.pid, cpu, rss, at_start)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_last[p] - self.cpu_start[p] for p in self.cpu_last)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "cpu_s": round(self.cpu_s, 2),
            "peak_rss_mb": round(self.peak_rss / MB, 1),
            "samples": self.samples,
        }


class Sampler:
    """Sample ``pids`` (and the context: database backends, broker, harness) every ``interval_s``."""

    def __init__(
        self, pids: dict[str, int], interval_s: float = 0.5, database_url: str | None = None
    ) -> None:
        pids = {**pids, HARNESS: os.getpid()}
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.usage = {name: Usage(name, pid) for name, pid in pids.items()}
        self.database_url = database_url
        self.groups = {RABBITMQ: Usage(RABBITMQ), POSTGRES: Usage(POSTGRES)} if database_url else {}
        self.broker = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"]
        self.backends: dict[int, psutil.Process] = {}
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.ended: float | None = None
        self.machine_start = psutil.cpu_times()
        self.machine_end = self.machine_start

    async def sample(self, conn: asyncpg.Connection | None, at_start: bool = False) -> None:
        for name, process in self.processes.items():
            self.usage[name].observe_process(process, True)
        if conn is None:
            return
        for process in self.broker:
            self.groups[RABBITMQ].observe_process(process, True)
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            for record in await conn.fetch(BACKENDS_SQL):
                if record["pid"] not in self.backends:
                    with contextlib.suppress(psutil.Error):
                        self.backends[record["pid"]] = psutil.Process(record["pid"])
        for process in list(self.backends.values()):
            self.groups[POSTGRES].observe_process(process, at_start)

    async def run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.database_url) if self.database_url else None
        try:
            await self.sample(conn, at_start=True)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
                await self.sample(conn)
        finally:
            self.ended = time.monotonic()
            self.machine_end = psutil.cpu_times()
            if conn is not None:
                await conn.close()

    def machine(self) -> dict[str, Any]:
        start, end = self.machine_start, self.machine_end
        idle = (end.idle - start.idle) + (getattr(end, "iowait", 0.0) - getattr(start, "iowait", 0.0))
        total = _total(end) - _total(start)
        wall = (self.ended or time.monotonic()) - self.started
        return {
            "cores": psutil.cpu_count(),
            "wall_s": round(wall, 2),
            "busy_cpu_s": round(total - idle, 2),
            "busy_pct": round(100 * (total - idle) / total, 1) if total > 0 else 0.0,
        }

    def cost(self, items: int) -> dict[str, Any]:
        """CPU milliseconds per item (log or message) by process and in all (with the database
        backends, without the broker, which other vhosts share): robust to other load on a shared
        machine, unlike rates. ``capacity_per_s``: what the cores could carry with this work alone."""
        per = {name: 1000 * u.cpu_s / items for name, u in self.usage.items() if name != HARNESS}
        per.update({name: 1000 * u.cpu_s / items for name, u in self.groups.items()})
        total = sum(v for name, v in per.items() if name != RABBITMQ)
        cores = psutil.cpu_count() or 1
        return {
            "cpu_ms_per_item": {name: round(v, 3) for name, v in per.items()},
            "cpu_ms_per_item_total": round(total, 3),
            "capacity_per_s": round(cores * 1000 / total, 1) if total > 0 else None,
        }

    def to_json(self, items: int | None = None) -> dict[str, Any]:
        machine = self.machine()
        known = sum(u.cpu_s for u in self.usage.values()) + sum(u.cpu_s for u in self.groups.values())
        if self.groups:
            # CPU taken by anything else on the machine (other jobs): a noisy run shows here
            machine["unaccounted_cpu_s"] = round(machine["busy_cpu_s"] - known, 2)
        return {
            "processes": {name: u.to_json() for name, u in self.usage.items() if name != HARNESS},
            "context": {
                name: {k: v for k, v in u.to_json().items() if k != "pid"}
                for name, u in {**self.groups, HARNESS: self.usage[HARNESS]}.items()
            },
            "machine": machine,
            **(self.cost(items) if items else {}),
        }


@contextlib.asynccontextmanager
async def sampling(
    pids: dict[str, int], interval_s: float = 0.5, database_url: str | None = None
) -> AsyncIterator[Sampler]:
    """Sample while the block runs; the figures are complete when it exits."""
    sampler = Sampler(pids, interval_s, database_url)
    stop = asyncio.Event()
    task = asyncio.create_task(sampler.run(stop))
    try:
        yield sampler
    finally:
        stop.set()
        await task
