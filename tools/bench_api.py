"""The api-single scenario: ``POST /v1/messages`` one message per request, loaded by wrk (not Python).

One API process on the bench environment (its own database; nothing else runs, so this measures the
API and PostgreSQL), one key, rate limit out of the way. wrk (Debian's package, installed by
``tools/ensure-wrk.sh``) runs ``tools/wrk_send.lua``: each request its own Idempotency-Key and
recipient. In order:

1. warm-up (2 s, not reported);
2. saturation: ``--api-connections`` connections as fast as the API answers: requests/s, latency;
3. fixed rates: half of the saturation rate and each of ``--api-rates`` below saturation. wrk has no
   fixed-rate mode: the script keeps a schedule per thread (see tools/wrk_send.lua); the rate
   reached is reported beside the one asked for;
4. refused: the same with a wrong key (401 on a cached key row): the cost of a request that does
   nothing, as a baseline in the same run (last, and with the authentication-failure throttle set
   out of reach, so that it measures 401s and leaves the other runs alone).

CPU of the API process and of the database backends per accepted request comes from psutil, wrk's
own CPU from the children's rusage: wrk runs one thread so that it takes as little as it can from the
two cores the API and PostgreSQL share with it.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from tools.bench_common import BenchError, ProgressFn, bounded, no_progress, truncate
from tools.bench_procs import sampling
from tools.bench_profile import Profiler
from tools.bench_scenarios import ScenarioOptions, api_settings, create_api_key
from tools.bench_watch import problems
from tools.stack import ROOT, Environment, Stack

SCRIPT = ROOT / "tools" / "wrk_send.lua"
ENSURE_WRK = ROOT / "tools" / "ensure-wrk.sh"
WRK_JSON = re.compile(rb"^WRK_JSON (\{.*\})$", re.MULTILINE)
API_SINGLE = "api-single"


def find_wrk() -> str:
    """wrk's path; installs it with tools/ensure-wrk.sh (apt-get) when it is missing."""
    found = shutil.which(os.environ.get("SWITCHBOARD_WRK", "wrk"))
    if found is None:
        subprocess.run(["bash", str(ENSURE_WRK)], check=False)
        found = shutil.which(os.environ.get("SWITCHBOARD_WRK", "wrk"))
    if found is None:
        raise BenchError("api-single needs wrk: `bash tools/ensure-wrk.sh` (Debian package wrk)")
    return found


@dataclass(frozen=True)
class WrkRun:
    """One wrk run's figures."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    latency_ms: dict[str, float]
    wrk_cpu_s: float
    command: str

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.rate, 1),
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "latency_ms": self.latency_ms,
            "wrk_cpu_s": round(self.wrk_cpu_s, 2),
            "command": self.command,
        }


def parse_wrk(output: bytes) -> dict[str, Any]:
    match = WRK_JSON.search(output)
    if match is None:
        raise BenchError(f"wrk printed no WRK_JSON line: {output[-500:]!r}")
    parsed: dict[str, Any] = orjson.loads(match.group(1))
    return parsed


def to_run(parsed: dict[str, Any], wrk_cpu_s: float, command: str) -> WrkRun:
    errors = parsed["errors"]
    latency = parsed["latency_us"]
    return WrkRun(
        requests=parsed["requests"],
        seconds=parsed["duration_us"] / 1e6,
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        latency_ms={k: round(latency[k] / 1000, 2) for k in ("p50", "p90", "p99", "p999", "mean", "max")},
        wrk_cpu_s=wrk_cpu_s,
        command=command,
    )


class Wrk:
    def __init__(self, binary: str, url: str, connections: int, threads: int) -> None:
        self.binary = binary
        self.url = url
        self.connections = connections
        self.threads = min(threads, connections)

    async def run(self, seconds: float, key: str, rate: float = 0.0) -> WrkRun:
        args = [
            "-t",
            str(self.threads),
            "-c",
            str(self.connections),
            "-d",
            f"{max(seconds, 1):.0f}s",
            "--timeout",
            "10s",
            "-s",
            str(SCRIPT),
            self.url,
        ]
        env = {
            **os.environ,
            "BENCH_API_KEY": key,
            "BENCH_NONCE": uuid.uuid4().hex[:10],
            "BENCH_RATE": f"{rate:.3f}",
            "BENCH_THREADS": str(self.threads),
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = await asyncio.create_subprocess_exec(
            self.binary, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if process.returncode != 0:
            raise BenchError(f"wrk exited with {process.returncode}: {output[-500:]!r}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        command = f"BENCH_RATE={rate:g} wrk {' '.join(args)}"
        return to_run(parse_wrk(output), cpu, command)


async def measured(
    wrk: Wrk, seconds: float, key: str, pids: dict[str, int], database_url: str, rate: float = 0.0
) -> dict[str, Any]:
    """A wrk run (``rate`` 0: as fast as it goes) with the API's and the database's CPU per request."""
    async with sampling(pids, 1.0, database_url) as sampler:
        run = await wrk.run(seconds, key, rate)
    figures = run.to_json()
    usage = sampler.to_json(max(run.requests, 1))
    figures["cpu_ms_per_request"] = usage.get("cpu_ms_per_item", {})
    figures["processes"] = usage["processes"]
    figures["machine"] = usage["machine"]
    return figures


async def run_api_single(
    environment: Environment,
    options: ScenarioOptions,
    log_dir: Path,
    log_level: str = "INFO",
    profile_dir: Path | None = None,
    max_seconds: float = 900.0,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    wrk_binary = find_wrk()
    stack = Stack(environment, log_dir / API_SINGLE)
    api = stack.add("api", **api_settings(log_level))
    pool = await asyncpg.create_pool(environment.database_url, min_size=1, max_size=2)
    result: dict[str, Any] = {
        "connections": options.api_connections,
        "wrk_threads": options.api_threads,
        "seconds": options.api_seconds,
        "log_dir": str(stack.log_dir),
    }
    steps = 3 + len(options.api_rates) + 1
    try:
        async with bounded(API_SINGLE, max_seconds):
            await truncate(pool)
            await stack.start(timeout=60)
            key = await create_api_key(pool)
            wrong_key = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
            assert api.pid is not None
            pids = {"api": api.pid}
            wrk = Wrk(wrk_binary, stack.url("api"), options.api_connections, options.api_threads)
            await wrk.run(2, key)  # warm-up: the pool's connections, prepared statements, caches
            progress(1, steps)
            profiler = Profiler(pids, profile_dir / API_SINGLE) if profile_dir else None
            if profiler is not None:
                profiler.start()
            try:
                saturation = await measured(wrk, options.api_seconds, key, pids, environment.database_url)
            finally:
                if profiler is not None:
                    result["profile"] = profiler.stop()
            result["saturation"] = saturation
            progress(2, steps)
            ceiling = saturation["requests_per_s"]
            targets = sorted({round(ceiling / 2, 1), *(r for r in options.api_rates if r < 0.95 * ceiling)})
            result["fixed_rate"] = {}
            for n, target in enumerate(targets):
                figures = await measured(
                    wrk, options.api_seconds, key, pids, environment.database_url, rate=target
                )
                figures["target_per_s"] = target
                figures["half_of_saturation"] = target == round(ceiling / 2, 1)
                result["fixed_rate"][f"{target:g}"] = figures
                progress(3 + n, steps)
            result["refused_401"] = await measured(
                wrk, min(options.api_seconds, 5), wrong_key, pids, environment.database_url
            )
            progress(steps, steps)
            result["rows_in_database"] = await pool.fetchval(
                "SELECT count(*) FROM communication_logs WHERE tenant = 'bench'"
            )
            result["exit_codes"] = stack.stop()
        return result
    except (BenchError, RuntimeError, TimeoutError, OSError) as exc:
        hints = "; ".join(problems(stack)) or "no warning in the process logs"
        raise BenchError(f"{API_SINGLE}: {exc}; logs in {stack.log_dir}; last warnings: {hints}") from exc
    finally:
        stack.stop(timeout=10)
        await pool.close()
