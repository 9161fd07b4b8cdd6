"""Ingest rate of the API's batch endpoint: messages accepted per second, over real HTTP.

Starts ``python -m services.api`` in an isolated environment (its own database and vhost), creates a
key, posts batches of ``--batch`` messages from ``--concurrency`` clients, and prints the rate.
Nothing else runs: this measures the API and PostgreSQL, not delivery.

    .venv/bin/python -m tools.api_ingest_bench --messages 50000 --batch 1000 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import orjson

from services.api.keys import generate_key, hash_key
from tools.stack import Stack, create_environment, destroy_environment

PEPPER = "bench-pepper"


def batch_body(start: int, size: int) -> bytes:
    messages = [
        {
            "channel": "sms",
            "recipient": f"+1415{(start + i) % 10_000_000:07d}",
            "payload": {"body": f"msg {start + i}"},
        }
        for i in range(size)
    ]
    return orjson.dumps({"messages": messages})


async def run(messages: int, batch: int, concurrency: int, singles: int) -> dict[str, float]:
    environment = await create_environment("sbbench")
    stack = Stack(environment, Path(tempfile.mkdtemp(prefix="api-bench-")))
    try:
        api = stack.add(
            "api",
            api_key_pepper=PEPPER,
            api_scheduler_enabled="false",
            api_rate_limit_per_s="1000000",
            api_rate_limit_burst="1000000",
            log_level="WARNING",
        )
        api.env["SWITCHBOARD_API_PORT"] = str(api.port)
        await stack.start()
        new = generate_key()
        conn = await asyncpg.connect(environment.database_url)
        try:
            await conn.execute(
                "INSERT INTO api_keys (tenant, key_id, key_hash) VALUES ('bench', $1, $2)",
                new.key_id,
                hash_key(new.key, PEPPER),
            )
        finally:
            await conn.close()
        headers = {"X-API-Key": new.key, "Content-Type": "application/json"}
        bodies = [batch_body(n * batch, batch) for n in range(messages // batch)]
        latencies: list[float] = []
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async with httpx.AsyncClient(base_url=stack.url("api"), headers=headers, timeout=60) as client:
            await client.post("/v1/messages/batch", content=batch_body(10**8, 10))  # warm up

            async def worker() -> None:
                while not queue.empty():
                    body = queue.get_nowait()
                    began = time.perf_counter()
                    response = await client.post("/v1/messages/batch", content=body)
                    latencies.append(time.perf_counter() - began)
                    response.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            batch_elapsed = time.perf_counter() - started

            single = orjson.dumps({"channel": "sms", "recipient": "+14155550000", "payload": {"body": "x"}})
            started = time.perf_counter()
            for _ in range(singles):
                (await client.post("/v1/messages", content=single)).raise_for_status()
            single_elapsed = time.perf_counter() - started

        accepted = len(bodies) * batch
        conn = await asyncpg.connect(environment.database_url)
        try:
            stored = await conn.fetchval("SELECT count(*) FROM communication_logs WHERE tenant = 'bench'")
        finally:
            await conn.close()
        return {
            "rows_in_database": stored - 10 - singles,
            "messages": accepted,
            "batch_size": batch,
            "concurrency": concurrency,
            "seconds": round(batch_elapsed, 2),
            "messages_per_s": round(accepted / batch_elapsed),
            "batch_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "batch_p95_ms": round(statistics.quantiles(latencies, n=20)[18] * 1000, 1)
            if len(latencies) > 1
            else 0,
            "single_sends": singles,
            "single_sends_per_s": round(singles / single_elapsed) if singles else 0,
        }
    finally:
        stack.stop()
        await destroy_environment(environment)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--singles", type=int, default=500, help="sequential single sends, for comparison")
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.batch, args.concurrency, args.singles))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
