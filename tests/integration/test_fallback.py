"""Provider fallback against the real services: an outage opens the circuit in every sender replica,
traffic falls back and says why, a single probe closes it again; cost and quality thresholds."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter

import httpx
import orjson
import pytest

from tests.helpers import all_terminal, insert_logs, ledger, wait_until
from tests.integration.test_providers import configure, route, seed_history, sms, smtp, start_stack, whatsapp
from tools.stack import Stack

OPEN_S = 1.5
OUTAGE_S = 4.0
CIRCUIT = {
    "circuit_window": "10",
    "circuit_min_calls": "10",
    "circuit_open_s": str(OPEN_S),
    "circuit_probe_grace_s": "1",
    "mock_transient_rate": "0",
    "mock_permanent_rate": "0",
    "mock_rate_limit_rate": "0",
}


async def circuit_state(client: httpx.AsyncClient, url: str, provider: str) -> int | None:
    try:
        text = (await client.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return None
    match = re.search(rf'^switchboard_circuit_state{{provider="{provider}"}} (\S+)$', text, re.MULTILINE)
    return int(float(match.group(1))) if match else None


@pytest.mark.e2e
async def test_outage_opens_the_circuit_everywhere_traffic_falls_back_and_one_probe_closes_it(
    stack: Stack, pool
) -> None:
    # Given sms over smsA then smsB, email over a dear and a cheap mailer with a cost ceiling, whatsapp
    # over a provider with a poor record and a good one with a quality floor, and two senders
    await configure(
        pool,
        {
            "providers": [
                sms("smsA"),
                sms("smsB"),
                smtp("mailA"),
                smtp("mailB"),
                whatsapp("waA"),
                whatsapp("waB"),
            ],
            "routes": [
                route("sms", "smsA", 0),
                route("sms", "smsB", 1),
                route("email", "mailA", 0, cost=0.05),
                route("email", "mailB", 1, cost=0.01),
                route("whatsapp", "waA", 0),
                route("whatsapp", "waB", 1),
            ],
            "policies": [
                {"channel": "sms", "strategy": "fallback"},
                {"channel": "email", "strategy": "fallback", "max_cost": 0.02},
                {"channel": "whatsapp", "strategy": "fallback", "min_success_rate": 0.8},
            ],
        },
    )
    await seed_history(pool, "waA", "transient", 30)
    start_stack(stack, senders=2, **CIRCUIT)
    await stack.start()
    mock = stack.url("mock_provider")
    senders = [stack.url("sender-0"), stack.url("sender-1")]
    await insert_logs(
        pool,
        [{"channel": "email", "recipient": f"user{n}@example.com"} for n in range(20)]
        + [{"channel": "whatsapp", "recipient": f"+4477009{n:05d}"} for n in range(20)],
    )

    # When smsA goes down for a few seconds while sms keep coming
    async with httpx.AsyncClient(timeout=5) as client:
        await client.post(f"{mock}/admin/outage", json={"provider": "smsA", "seconds": OUTAGE_S})
        outage_started = time.time()
        seen: list[set[int]] = [set(), set()]
        for batch in range(18):
            await insert_logs(
                pool, [{"channel": "sms", "recipient": f"+1415{batch:03d}{n:04d}"} for n in range(15)]
            )
            for _ in range(5):
                for i, url in enumerate(senders):
                    state = await circuit_state(client, url, "smsA")
                    if state is not None:
                        seen[i].add(state)
                await asyncio.sleep(0.1)
        await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")

        # Then both replicas saw the circuit open (one tripped it, the other heard), and closed again
        assert all(2 in states for states in seen), seen
        for url in senders:
            await wait_until(lambda u=url: _closed(client, u), timeout=10, what="smsA closed again")
        calls = [
            c for c in orjson.loads((await client.get(f"{mock}/calls", params={"provider": "smsA"})).content)
        ]

    statuses = await pool.fetch(
        "SELECT status FROM communication_logs WHERE channel <> 'mms'"
    )  # mms: history
    assert {r["status"] for r in statuses} == {"SENT"}
    sends = [r for r in await ledger(mock) if not r["replay"]]
    assert len(sends) == len({r["log_id"] for r in sends}), "a log was sent twice"
    # ... while it was down, smsA got a first burst, then single probes at least OPEN_S apart
    refused = sorted(c["at"] for c in calls if c["result"] == "outage")
    gaps = [b - a for a, b in itertools.pairwise(refused)]
    first_probe = next(i for i, gap in enumerate(gaps) if gap >= OPEN_S * 0.9)
    probes = refused[first_probe + 1 :]
    print(
        f"smsA refused {first_probe + 1} calls before its circuit opened"
        f" ({refused[first_probe] - refused[0]:.2f} s), then {len(probes)} single probes"
    )
    # each replica needs 10 failures of its own unless it hears from the other first, plus calls in flight
    assert first_probe + 1 <= 45, f"{first_probe + 1} calls before the circuit opened"
    assert 1 <= len(probes) <= OUTAGE_S / OPEN_S + 1
    assert all(b - a >= OPEN_S * 0.9 for a, b in itertools.pairwise(probes))
    assert refused[-1] - outage_started <= OUTAGE_S + 0.5
    # ... every attempt says which provider it tried, and the switches say why
    reasons = Counter(
        (r["channel"], r["provider"], r["fallback_reason"])
        for r in await pool.fetch(
            "SELECT l.channel, a.provider, a.fallback_reason FROM delivery_attempts a"
            " JOIN communication_logs l ON l.id = a.log_id WHERE a.outcome = 'success'"
        )
    )
    print("attempts by (channel, provider, fallback reason):", dict(reasons))
    assert reasons[("sms", "smsB", "primary_failed")] > 0  # retried elsewhere after smsA's 503
    assert reasons[("sms", "smsB", "provider_unavailable")] > 0  # circuit open: straight to smsB
    assert reasons[("sms", "smsA", None)] > 0  # before and after the outage
    assert reasons[("email", "mailB", "cost_threshold")] == 20
    assert reasons[("whatsapp", "waB", "quality_threshold")] == 20
    # ... and the transitions were logged where they happened and where they were heard
    logs = [stack.processes[n].log_path.read_text() for n in ("sender-0", "sender-1")]
    events = [orjson.loads(line) for text in logs for line in text.splitlines() if '"circuit_' in line]
    local = {e["state"] for e in events if e["event"] == "circuit_changed" and e["provider"] == "smsA"}
    assert {"OPEN", "HALF_OPEN", "CLOSED"} <= local, events
    assert any(e["event"] == "circuit_adopted" for e in events)  # a peer's change was heard and taken


async def _closed(client: httpx.AsyncClient, url: str) -> bool:
    return await circuit_state(client, url, "smsA") == 0
