"""``python -m tools.demo_fallback``: provider fallback during a simulated provider outage, live.

Starts an isolated environment (its own vhost and database, removed afterwards) with the mock provider,
a poller, two senders and a responder; routes sms over ``smsA`` then ``smsB``; feeds a steady stream
of sms; takes ``smsA`` down for a while (the mock's ``POST /admin/outage``) and prints, second by
second, where messages went, each sender's circuit breaker for smsA and why attempts fell back.
Exit status 0 when every message was sent exactly once and traffic fell back and came back.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import typer

from shared.db import create_pool
from shared.routing_store import write_config
from tools.stack import Stack, create_environment, destroy_environment, free_port

STATES = {0: "closed", 1: "half-open", 2: "OPEN"}
INSERT_SQL = (
    """INSERT INTO communication_logs (channel, recipient, payload) VALUES ('sms', $1, '{"body": "demo"}')"""
)
OPEN_SQL = "SELECT count(*) FROM communication_logs WHERE status IN ('PENDING', 'PROCESSING')"
SETTINGS = {
    "mock_latency_ms": "5",
    "mock_latency_jitter_ms": "2",
    "mock_transient_rate": "0",
    "mock_permanent_rate": "0",
    "mock_rate_limit_rate": "0",
    "poll_interval_s": "0.05",
    "backoff_base_s": "0.5",
    "backoff_cap_s": "5",
    "circuit_open_s": "3",
    "circuit_probe_grace_s": "1",
    "routing_refresh_s": "0.5",
    "standby_delay_s": "5",
}
ROUTING = {
    "providers": [{"name": "smsA", "kind": "sms_gateway"}, {"name": "smsB", "kind": "sms_gateway"}],
    "routes": [
        {"channel": "sms", "provider": "smsA", "priority": 0, "cost": 0.0075},
        {"channel": "sms", "provider": "smsB", "priority": 1, "cost": 0.009},
    ],
    "policies": [{"channel": "sms", "strategy": "fallback"}],
}


async def circuit(client: httpx.AsyncClient, url: str) -> str:
    try:
        text = (await client.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return "?"
    match = re.search(r'^switchboard_circuit_state\{provider="smsA"\} (\S+)$', text, re.MULTILINE)
    return STATES.get(int(float(match.group(1))), "?") if match else "closed"


async def run(seconds: float, outage_at: float, outage_s: float, rate: int) -> int:
    environment = await create_environment("demo-fallback")
    stack = Stack(environment, Path(tempfile.mkdtemp(prefix="switchboard-fallback-")))
    pool = await create_pool(environment.database_url, max_size=2)
    try:
        async with pool.acquire() as conn:
            await write_config(conn, ROUTING)
        mock = stack.add("mock_provider", **SETTINGS)
        settings = {
            **SETTINGS,
            "provider_url": f"http://127.0.0.1:{mock.port}",
            "mock_smtp_port": str(free_port()),
        }
        stack.add("poller", **settings)
        stack.add("sender", "sender-0", consume_shards="[0, 2]", **settings)
        stack.add("sender", "sender-1", consume_shards="[1, 3]", **settings)
        stack.add("responder", **settings)
        await stack.start()
        print(
            f"sms over smsA, then smsB; {rate} sms/s; smsA down from {outage_at:g} s for {outage_s:g} s "
            f"(process logs in {stack.log_dir})\n"
        )
        print(
            f"{'t':>4}  {'smsA':>5} {'smsB':>5}  {'circuit smsA (sender-0 / sender-1)':<36} fallback reasons"
        )
        started, seen, down = time.monotonic(), 0, False
        async with httpx.AsyncClient(timeout=5) as client:
            for second in range(int(seconds)):
                if not down and second >= outage_at:
                    await client.post(
                        f"{stack.url('mock_provider')}/admin/outage",
                        json={"provider": "smsA", "seconds": outage_s},
                    )
                    down = True
                for quarter in range(4):
                    n = seen + quarter * rate // 4
                    await pool.executemany(
                        INSERT_SQL,
                        [(f"+1415{(n + k) % 10_000_000:07d}",) for k in range(rate // 4)],
                    )
                    await asyncio.sleep(max(started + second + (quarter + 1) / 4 - time.monotonic(), 0))
                seen += rate
                rows = await pool.fetch(
                    "SELECT provider, fallback_reason FROM delivery_attempts WHERE outcome = 'success'"
                    " AND finished_at > now() - interval '1 second'"
                )
                sent = Counter(r["provider"] for r in rows)
                reasons = Counter(r["fallback_reason"] for r in rows if r["fallback_reason"])
                states = " / ".join([await circuit(client, stack.url(f"sender-{i}")) for i in (0, 1)])
                print(
                    f"{second + 1:>3}s  {sent['smsA']:>5} {sent['smsB']:>5}  {states:<36} "
                    f"{', '.join(f'{k} {v}' for k, v in reasons.items()) or '-'}"
                )
            for _ in range(120):  # a minute at most for the retries to settle
                if not await pool.fetchval(OPEN_SQL):
                    break
                await asyncio.sleep(0.5)
            stats = (await client.get(f"{stack.url('mock_provider')}/ledger/stats")).json()
        totals = {
            r["k"]: r["n"]
            for r in await pool.fetch(
                "SELECT coalesce(provider || ' ' || fallback_reason, provider) AS k, count(*) AS n"
                " FROM delivery_attempts GROUP BY 1 ORDER BY 1"
            )
        }
        statuses = {
            r["status"]: r["n"]
            for r in await pool.fetch("SELECT status, count(*) AS n FROM communication_logs GROUP BY 1")
        }
        print(f"\nlogs: {statuses}\nattempts by provider and fallback reason: {totals}")
        print(f"provider ledger: {stats['accepted']} accepted, {stats['duplicate_logs']} sent twice")
        fell_back = any(k.startswith("smsB ") for k in totals)
        ok = statuses == {"SENT": seen} and stats["duplicate_logs"] == 0 and fell_back
        print("OK: every message sent once, around the outage" if ok else "NOT OK")
        return 0 if ok else 1
    finally:
        stack.stop()
        await pool.close()
        await destroy_environment(environment)


def main(
    seconds: float = typer.Option(16, min=4, help="How long to feed messages."),
    outage_at: float = typer.Option(3, min=0, help="When smsA goes down (seconds after the start)."),
    outage_s: float = typer.Option(6, min=1, help="How long smsA stays down."),
    rate: int = typer.Option(40, min=4, help="sms per second."),
) -> None:
    raise typer.Exit(asyncio.run(run(seconds, outage_at, outage_s, rate)))


if __name__ == "__main__":
    typer.run(main)
