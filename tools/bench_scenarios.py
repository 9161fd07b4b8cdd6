"""Latency scenarios of the pipeline (``make bench``, ``--scenario``): what one message waits, by class.

Each scenario starts its own processes (as the throughput runs do: mock provider failure-free at
``--scenario-latency`` ms, pollers, senders, responders; plus the API for ``*-api``), feeds logs in
its own way (tools/bench_feed.py), waits until every log is terminal, and reports ``created_at ->
sent_at`` percentiles per priority class, rates, CPU and memory per process, and the invariants.

- ``urgent-during-campaign``: a bulk campaign inserted at once, then urgent logs at a fixed rate;
  ``-api``: the same with the urgent logs sent through ``POST /v1/messages``.
- ``open-loop``: SMS logs at a fixed rate (default 80 % of the single-provider rate) for a while.
- ``trickle``: a light load (20 logs/s): the pipeline's own waiting, with nothing queued.
- ``single-provider``: a campaign on one provider (every log an SMS): logs per second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import httpx
import orjson

from services.api.keys import generate_key, hash_key
from tools.bench_common import BenchError, ProgressFn, bounded, no_progress, rounded, truncate
from tools.bench_feed import (
    BULK,
    CLASS_NAMES,
    URGENT,
    FeedResult,
    feed_total,
    insert_at_once,
    paced,
    sql_sender,
)
from tools.bench_pipeline import PipelineConfig, build_stack, invariants
from tools.bench_procs import sampling
from tools.bench_watch import problems, wait_consumers, wait_done
from tools.stack import Environment, Stack

URGENT_DURING_CAMPAIGN = "urgent-during-campaign"
URGENT_DURING_CAMPAIGN_API = "urgent-during-campaign-api"
OPEN_LOOP = "open-loop"
TRICKLE = "trickle"
SINGLE_PROVIDER = "single-provider"
PIPELINE_SCENARIOS = (SINGLE_PROVIDER, TRICKLE, URGENT_DURING_CAMPAIGN, URGENT_DURING_CAMPAIGN_API, OPEN_LOOP)

API_PEPPER = "bench-pepper"
API_TENANT = "bench"
# Distinct recipient ranges per kind of log (each log its own recipient; see tools/bench_feed.py).
CAMPAIGN_PREFIX, URGENT_PREFIX, FEED_PREFIX = "+1646", "+1212", "+1313"

CLASS_SQL = """
SELECT priority,
       count(*) AS logs,
       count(sent_at) AS sent,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
           (ORDER BY extract(epoch FROM sent_at - created_at)::float8) AS latency,
       max(extract(epoch FROM sent_at - created_at))::float8 AS latency_max,
       extract(epoch FROM min(created_at))::float8 AS first_created,
       extract(epoch FROM max(created_at))::float8 AS last_created,
       extract(epoch FROM max(sent_at))::float8 AS last_sent,
       percentile_cont(ARRAY[0.1, 0.9]) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at)::float8) AS window
FROM communication_logs GROUP BY priority ORDER BY priority
"""
# Latency of the logs created in the first and in the last ``$1`` seconds of a feed: a feed the
# pipeline does not keep up with shows as a later window far slower than the first.
WINDOWS_SQL = """
WITH bounds AS (SELECT min(created_at) AS first, max(created_at) AS last FROM communication_logs)
SELECT w.name,
       count(*) AS logs,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
           (ORDER BY extract(epoch FROM l.sent_at - l.created_at)::float8) AS latency
FROM communication_logs l, bounds b,
     LATERAL (VALUES ('first', l.created_at < b.first + make_interval(secs => $1)),
                     ('last', l.created_at > b.last - make_interval(secs => $1))) AS w(name, inside)
WHERE w.inside AND l.sent_at IS NOT NULL
GROUP BY w.name
"""


@dataclass(frozen=True)
class ScenarioOptions:
    """Sizes and rates of the scenarios (the CLI's ``--campaign-size`` and friends)."""

    provider_latency_ms: float = 20.0
    campaign_size: int = 60_000
    urgent_count: int = 200
    urgent_rate: float = 10.0
    open_loop_rate: float | None = None  # None: open_loop_share x the single-provider rate
    open_loop_share: float = 0.8
    open_loop_s: float = 60.0
    trickle_rate: float = 20.0
    trickle_s: float = 30.0
    single_provider_count: int = 60_000
    api_seconds: float = 15.0
    api_connections: int = 32
    api_threads: int = 1
    api_rates: tuple[float, ...] = (500.0,)  # fixed-rate API runs besides the one at half saturation


@dataclass
class Run:
    """One scenario's running stack and what its feed may use."""

    pool: asyncpg.Pool
    stack: Stack
    api_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # scenario figures for the report


Feed = Callable[[Run], Awaitable[FeedResult]]


def class_name(priority: int) -> str:
    return CLASS_NAMES.get(priority, f"priority {priority}")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def class_figures(pool: asyncpg.Pool) -> dict[str, Any]:
    """Per priority class: logs, p50/p95/p99/max ``created_at -> sent_at`` and the sending rates."""
    out: dict[str, Any] = {}
    for row in await pool.fetch(CLASS_SQL):
        p50, p95, p99 = row["latency"] or (None, None, None)
        t10, t90 = row["window"] or (None, None)
        elapsed = (row["last_sent"] or 0) - (row["first_created"] or 0)
        out[class_name(row["priority"])] = {
            "logs": row["logs"],
            "sent": row["sent"],
            "latency_ms": {
                "p50": _ms(p50),
                "p95": _ms(p95),
                "p99": _ms(p99),
                "max": _ms(row["latency_max"]),
            },
            "throughput_per_s": rounded(row["sent"] / elapsed if elapsed > 0 else None),
            "sustained_per_s": rounded(
                0.8 * row["sent"] / (t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else None
            ),
            "first_created": row["first_created"],
            "last_created": row["last_created"],
            "last_sent": row["last_sent"],
        }
    return out


async def window_figures(pool: asyncpg.Pool, window_s: float) -> dict[str, Any]:
    rows = await pool.fetch(WINDOWS_SQL, window_s)
    return {
        row["name"]: {
            "logs": row["logs"],
            "latency_ms": dict(zip(("p50", "p95", "p99"), (_ms(v) for v in row["latency"]), strict=True)),
        }
        for row in rows
    }


async def create_api_key(pool: asyncpg.Pool) -> str:
    """A key of the bench tenant, hashed with the bench pepper the API process is given."""
    new = generate_key()
    await pool.execute(
        "INSERT INTO api_keys (tenant, key_id, key_hash) VALUES ($1, $2, $3)",
        API_TENANT,
        new.key_id,
        hash_key(new.key, API_PEPPER),
    )
    return new.key


def api_settings(log_level: str) -> dict[str, str]:
    """The API process of a benchmark: the bench pepper, no rate limit in the way of the load."""
    return {
        "api_key_pepper": API_PEPPER,
        "api_rate_limit_per_s": "1000000",
        "api_rate_limit_burst": "1000000",
        # the refused run sends wrong keys from one source: measure 401s, not the failure throttle
        "api_auth_failures_per_window": "1000000000",
        "log_level": log_level,
    }


async def run_scenario(
    environment: Environment,
    name: str,
    config: PipelineConfig,
    feed: Feed,
    count: int,
    progress: ProgressFn = no_progress,
    with_api: bool = False,
    after: Callable[[asyncpg.Pool], Awaitable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Start the stack, feed it, wait until all ``count`` logs are terminal; the figures per class."""
    pool = await asyncpg.create_pool(environment.database_url, min_size=1, max_size=4)
    stack = build_stack(environment, config, name)
    if with_api:
        stack.add("api", **{**config.process_settings(), **api_settings(config.log_level)})
    result: dict[str, Any] = {
        "config": config.describe(),
        "failure_free": True,
        "log_dir": str(stack.log_dir),
    }
    try:
        await truncate(pool)
        await stack.start(timeout=60)
        run = Run(pool, stack, api_key=await create_api_key(pool) if with_api else None)
        pids = {n: p.pid for n, p in stack.processes.items() if p.pid is not None}
        await wait_consumers(environment, config.shards)
        async with (
            bounded(name, config.max_seconds),
            sampling(pids, config.sample_interval_s, environment.database_url) as sampler,
        ):
            fed = await feed(run)
            result["feed"] = fed.to_json()
            if fed.latencies_s:
                result["api_request_ms"] = percentiles_ms(fed.latencies_s)
            await wait_done(pool, stack, count, progress, config.stall_s)
        result["classes"] = await class_figures(pool)
        if after is not None:
            result.update(await after(pool))
        result.update(sampler.to_json(count))
        result["invariants"] = await invariants(pool, stack)
        result["exit_codes"] = stack.stop()
        result.update(run.extra)
        return result
    except (BenchError, RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        hints = "; ".join(problems(stack)) or "no warning in the process logs"
        raise BenchError(f"{name}: {exc}; logs in {stack.log_dir}; last warnings: {hints}") from exc
    finally:
        stack.stop(timeout=10)
        await pool.close()


def percentiles_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}


class ApiUrgentSender:
    """Urgent SMS through ``POST /v1/messages``, each with its own Idempotency-Key (as an app sends
    OTPs), each request on its own task so that a slow answer never holds back the next due time."""

    def __init__(self, url: str, key: str) -> None:
        self.client = httpx.AsyncClient(base_url=url, timeout=30, headers={"X-API-Key": key})
        self.nonce = uuid.uuid4().hex[:8]
        self.latencies: list[float] = []
        self.pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ApiUrgentSender:
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            await asyncio.gather(*self.pending)
        finally:
            await self.client.aclose()

    async def post(self, n: int) -> None:
        body = {
            "channel": "sms",
            "recipient": f"{URGENT_PREFIX}{n:07d}",
            "priority": URGENT,
            "payload": {"body": f"Your code is {100000 + n % 900000}"},
        }
        began = time.perf_counter()
        response = await self.client.post(
            "/v1/messages",
            content=orjson.dumps(body),
            headers={"Idempotency-Key": f"urgent-{self.nonce}-{n}", "Content-Type": "application/json"},
        )
        self.latencies.append(time.perf_counter() - began)
        if response.status_code != 202:
            raise BenchError(f"POST /v1/messages answered {response.status_code}: {response.text[:200]}")

    async def send(self, first: int, count: int) -> None:
        for n in range(first, first + count):
            task = asyncio.create_task(self.post(n))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)


def urgent_during_campaign(options: ScenarioOptions, through_api: bool) -> Feed:
    async def feed(run: Run) -> FeedResult:
        run.extra["campaign_insert_s"] = round(
            await insert_at_once(run.pool, CAMPAIGN_PREFIX, BULK, options.campaign_size, 10_000), 2
        )
        if through_api:
            async with ApiUrgentSender(run.stack.url("api"), run.api_key or "") as sender:
                result = await paced(sender.send, options.urgent_rate, options.urgent_count, single=True)
            result.latencies_s = sender.latencies
            return result
        send = sql_sender(run.pool, URGENT_PREFIX, URGENT)
        return await paced(send, options.urgent_rate, options.urgent_count, single=True)

    return feed


def fixed_rate(rate: float, seconds: float) -> Feed:
    async def feed(run: Run) -> FeedResult:
        return await paced(sql_sender(run.pool, FEED_PREFIX, BULK), rate, feed_total(rate, seconds))

    return feed


def single_provider(count: int) -> Feed:
    async def feed(run: Run) -> FeedResult:
        started = time.monotonic()
        await insert_at_once(run.pool, CAMPAIGN_PREFIX, BULK, count, 10_000)
        return FeedResult(count=count, seconds=time.monotonic() - started)

    return feed


async def urgent_order(pool: asyncpg.Pool) -> dict[str, Any]:
    """How many urgent logs were sent while the campaign was still draining (the campaign's last send)."""
    row = await pool.fetchrow(
        """
        SELECT count(*) FILTER (WHERE u.sent_at < b.last_sent) AS before_campaign_end, count(*) AS urgent
        FROM communication_logs u,
             (SELECT max(sent_at) AS last_sent FROM communication_logs WHERE priority <> 0) b
        WHERE u.priority = 0
        """
    )
    return {"urgent_sent_before_campaign_end": row["before_campaign_end"], "urgent_logs": row["urgent"]}


async def run_pipeline_scenario(
    environment: Environment,
    name: str,
    options: ScenarioOptions,
    base: PipelineConfig,
    progress: ProgressFn = no_progress,
    single_provider_rate: float | None = None,
) -> dict[str, Any]:
    """One named scenario (see the module's docstring); ``single_provider_rate`` sets open-loop's default."""
    config = replace(base, provider_latency_ms=options.provider_latency_ms)
    if name in (URGENT_DURING_CAMPAIGN, URGENT_DURING_CAMPAIGN_API):
        through_api = name == URGENT_DURING_CAMPAIGN_API
        count = options.campaign_size + options.urgent_count
        config = replace(config, count=count)
        feed = urgent_during_campaign(options, through_api)
        result = await run_scenario(
            environment, name, config, feed, count, progress, with_api=through_api, after=urgent_order
        )
        result["urgent"] = {"count": options.urgent_count, "rate_per_s": options.urgent_rate}
        return result
    if name == OPEN_LOOP:
        rate = options.open_loop_rate
        if rate is None:
            if not single_provider_rate:
                raise BenchError("open-loop needs --open-loop-rate or a single-provider run before it")
            rate = round(options.open_loop_share * single_provider_rate, 1)
        count = feed_total(rate, options.open_loop_s)
        config = replace(config, count=count)
        window_s = min(10.0, options.open_loop_s / 3)

        async def windows(pool: asyncpg.Pool) -> dict[str, Any]:
            return {"window_s": window_s, "windows": await window_figures(pool, window_s)}

        result = await run_scenario(
            environment, name, config, fixed_rate(rate, options.open_loop_s), count, progress, after=windows
        )
        result["rate_per_s"] = rate
        result["rate_source"] = (
            "--open-loop-rate"
            if options.open_loop_rate is not None
            else f"{options.open_loop_share:g} x single-provider sustained rate {single_provider_rate}"
        )
        return result
    if name == TRICKLE:
        count = feed_total(options.trickle_rate, options.trickle_s)
        config = replace(config, count=count)
        feed = fixed_rate(options.trickle_rate, options.trickle_s)
        result = await run_scenario(environment, name, config, feed, count, progress)
        result["rate_per_s"] = options.trickle_rate
        return result
    if name == SINGLE_PROVIDER:
        count = options.single_provider_count
        config = replace(config, count=count)
        return await run_scenario(environment, name, config, single_provider(count), count, progress)
    raise BenchError(f"unknown pipeline scenario {name!r}")
