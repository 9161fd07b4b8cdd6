"""Threat: forged or replayed delivery reports. Someone without a provider's secret (or with another
provider's) marks another tenant's message BOUNCED, overwrites who sent it, or plays a captured report
again; the verify token doubles as the signing secret; development secrets work in production."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.receipts.__main__ import Receiver, build_app
from services.receipts.replay import ReplayStore, report_id
from services.receipts.settings import ReceiptsSettings
from shared.core.models import ReceiptMessage
from shared.core.signatures import (
    GATEWAY_HEADER,
    HUB_HEADER,
    SWITCHBOARD_HEADER,
    sign_gateway,
    sign_hub,
    sign_timestamped,
)
from shared.db.pool import create_pool
from shared.db.roles import DatabaseRole, url_for
from shared.runtime.settings import DEV_RECEIPT_SECRET, DEV_WEBHOOK_SECRET
from shared.runtime.startup import EXIT_CONFIGURATION
from tests.helpers import insert_logs, wait_until
from tools.ports import free_port
from tools.stack import ROOT, Environment, Stack

SECRETS = {"alpha": "alpha-secret-1", "beta": "beta-secret-2"}
RECIPIENT = "+14155550100"


class Recording(Receiver):
    """The real receiver with RabbitMQ replaced by a list: what it would publish."""

    def __init__(self, settings: ReceiptsSettings, replays: ReplayStore) -> None:
        super().__init__(settings, replays)
        self.published: list[ReceiptMessage] = []
        self.broker_up = True

    async def publish(self, receipts: list[ReceiptMessage]) -> bool:
        if self.broker_up:
            self.published += receipts
        return self.broker_up


PRODUCTION = ReceiptsSettings(
    env="production", receipt_secrets=SECRETS, receipt_verify_tokens={"alpha": "alpha-verify"}
)


@pytest.fixture
async def receipts_pool(environment: Environment) -> AsyncIterator[asyncpg.Pool]:
    """PostgreSQL as the receipts role (the replay memory is all it may touch)."""
    pool = await create_pool(url_for(environment.database_url, DatabaseRole.RECEIPTS), max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def production(
    receipts_pool: asyncpg.Pool,
) -> AsyncIterator[tuple[TestClient[Any, Any], Recording]]:
    receiver = Recording(PRODUCTION, ReplayStore(receipts_pool, PRODUCTION.receipts_replay_window_s))
    async with TestClient(TestServer(build_app(receiver), host="127.0.0.1")) as client:
        yield client, receiver


def json_report(reference: str, status: str = "bounced", vendor_ref: str = "v-alpha") -> dict[str, Any]:
    return {"id": vendor_ref, "reference": reference, "status": status, "recipient": RECIPIENT}


def signed(secret: str, body: dict[str, Any]) -> dict[str, Any]:
    content = orjson.dumps(body)
    headers = {
        "Content-Type": "application/json",
        SWITCHBOARD_HEADER: sign_timestamped(secret, content, int(time.time())),
    }
    return {"content": content, "headers": headers}


async def test_an_unknown_provider_is_404_not_the_default_secret(
    production: tuple[TestClient[Any, Any], Recording],
) -> None:
    client, receiver = production
    # When a report for a provider without a secret is signed with the published development secret
    body = orjson.dumps(json_report("5-1"))
    headers = {SWITCHBOARD_HEADER: sign_timestamped(DEV_RECEIPT_SECRET, body, int(time.time()))}
    answer = await client.post("/receipts/json/no-such-provider", data=body, headers=headers)
    # Then it is not found, and nothing is published
    assert answer.status == 404
    assert receiver.published == []


async def test_the_webhook_signing_key_does_not_sign_receipts(
    production: tuple[TestClient[Any, Any], Recording],
) -> None:
    client, receiver = production
    body = orjson.dumps(json_report("5-1"))
    for key in (DEV_WEBHOOK_SECRET, DEV_RECEIPT_SECRET):
        headers = {SWITCHBOARD_HEADER: sign_timestamped(key, body, int(time.time()))}
        assert (await client.post("/receipts/json/alpha", data=body, headers=headers)).status == 401
    assert receiver.published == []


async def test_a_replayed_sms_report_is_taken_once(
    production: tuple[TestClient[Any, Any], Recording],
) -> None:
    client, receiver = production
    # Given an SMS gateway report (its scheme signs no time) captured in transit
    url = str(client.make_url("/receipts/sms/alpha"))
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": RECIPIENT, "Reference": "7-1"}
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        GATEWAY_HEADER: sign_gateway(SECRETS["alpha"], url, form),
    }
    # When it is posted, then played again
    first = await client.post("/receipts/sms/alpha", data=urlencode(form), headers=headers)
    again = await client.post("/receipts/sms/alpha", data=urlencode(form), headers=headers)
    # Then the second is answered (the sender stops) but nothing more is published
    assert (first.status, (await first.json())["accepted"]) == (200, 1)
    assert (again.status, await again.json()) == (200, {"accepted": 0, "unmatched": 0, "replayed": True})
    assert len(receiver.published) == 1


PUBLIC_HOST = "receipts.example.com"  # the load balancer's name, in front of every replica


def sms_report(status: str = "delivered", sid: str = "SM1") -> dict[str, Any]:
    """An SMS gateway report (its scheme signs no time) as the gateway posts it to the public URL."""
    form = {"MessageSid": sid, "MessageStatus": status, "To": RECIPIENT, "Reference": "7-1"}
    headers = {
        "Host": PUBLIC_HOST,
        "Content-Type": "application/x-www-form-urlencoded",
        GATEWAY_HEADER: sign_gateway(SECRETS["alpha"], f"http://{PUBLIC_HOST}/receipts/sms/alpha", form),
    }
    return {"data": urlencode(form), "headers": headers}


def whatsapp_report(status: str = "delivered", age_s: float = 0) -> dict[str, Any]:
    row = {
        "id": "wamid.1",
        "status": status,
        "timestamp": str(int(time.time() - age_s)),
        "recipient_id": "14155550100",
        "biz_opaque_callback_data": "8-1",
    }
    body = orjson.dumps({"entry": [{"changes": [{"value": {"statuses": [row]}}]}]})
    headers = {"Content-Type": "application/json", HUB_HEADER: sign_hub(SECRETS["alpha"], body)}
    return {"data": body, "headers": headers}


@asynccontextmanager
async def replicas(pool: asyncpg.Pool, count: int, window_s: float = 3600) -> AsyncIterator[list[Replica]]:
    """``count`` receipts replicas, each its own app and store, sharing one database (as in compose/k8s)."""
    started = []
    for _ in range(count):
        receiver = Recording(PRODUCTION, ReplayStore(pool, window_s))
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(receiver), host="127.0.0.1"))
        await client.start_server()
        started.append(Replica(client, receiver))
    try:
        yield started
    finally:
        for replica in started:
            await replica.client.close()


@dataclass
class Replica:
    client: TestClient[Any, Any]
    receiver: Recording

    async def post(self, path: str, report: dict[str, Any]) -> tuple[int, Any]:
        answer = await self.client.post(path, **report)
        return answer.status, await answer.json()


ACCEPTED = (200, {"accepted": 1, "unmatched": 0})
REPLAYED = (200, {"accepted": 0, "unmatched": 0, "replayed": True})


async def test_a_report_replayed_to_another_replica_is_refused(receipts_pool: asyncpg.Pool) -> None:
    async with replicas(receipts_pool, 2) as (first, second):
        # Given an SMS report and a WhatsApp status taken by the first replica
        sms, whatsapp = sms_report(), whatsapp_report()
        taken = [
            await first.post("/receipts/sms/alpha", sms),
            await first.post("/receipts/whatsapp/alpha", whatsapp),
        ]
        # When both are played again to the second replica (and the SMS one to the first again)
        again = [
            await second.post("/receipts/sms/alpha", sms),
            await second.post("/receipts/whatsapp/alpha", whatsapp),
            await first.post("/receipts/sms/alpha", sms),
        ]
        # ... while the same message's next status (another report) still gets through
        undelivered = await second.post("/receipts/sms/alpha", sms_report("undelivered"))
    # Then each report was published once, by the first replica only
    assert taken == [ACCEPTED, ACCEPTED] and again == [REPLAYED] * 3 and undelivered == ACCEPTED
    assert len(first.receiver.published) == 2 and len(second.receiver.published) == 1


async def test_a_timestamped_header_padded_with_extra_parts_is_still_a_replay(
    receipts_pool: asyncpg.Pool,
) -> None:
    async with replicas(receipts_pool, 1) as (replica,):
        httpx_style = signed(SECRETS["alpha"], json_report("9-1", "delivered"))
        report = {"data": httpx_style["content"], "headers": httpx_style["headers"]}
        padded = {**report, "headers": {**report["headers"]}}
        padded["headers"][SWITCHBOARD_HEADER] += ",x=1"  # the verifier ignores unknown parts
        assert await replica.post("/receipts/json/alpha", report) == ACCEPTED
        assert await replica.post("/receipts/json/alpha", padded) == REPLAYED


async def test_a_failed_publish_forgets_the_report_and_a_claim_in_flight_asks_for_a_retry(
    receipts_pool: asyncpg.Pool,
) -> None:
    async with replicas(receipts_pool, 2) as (first, second):
        report = sms_report(sid="SM2")
        # Given the broker refuses the first replica's publish: the provider is asked to retry...
        first.receiver.broker_up = False
        assert (await first.post("/receipts/sms/alpha", report))[0] == 503
        # ... and its retry, to the other replica, is taken (not mistaken for a replay)
        assert await second.post("/receipts/sms/alpha", report) == ACCEPTED
        # When a replica has claimed a report and not published it yet (a concurrent copy, or a crash)
        claimed = sms_report(sid="SM3")
        store = ReplayStore(receipts_pool, 3600)
        await store.claim("alpha", report_id("sms", claimed["headers"]))
        # Then a copy is asked to come back later: neither published nor acknowledged as a replay
        assert (await second.post("/receipts/sms/alpha", claimed))[0] == 503
    assert len(second.receiver.published) == 1


async def test_reports_older_than_the_window_are_pruned_in_batches(
    receipts_pool: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    store = ReplayStore(receipts_pool, window_s=3600)
    # Given 7 reports taken two hours ago and one taken now
    for n in range(8):
        await store.claim("alpha", hashlib.sha256(str(n).encode()).digest())
    await pool.execute(
        "UPDATE receipt_reports SET seen_at = now() - interval '2 hours' WHERE report_id <> $1",
        hashlib.sha256(b"7").digest(),
    )
    # When the prune runs with batches of 3
    pruned = await store.prune(batch=3)
    # Then the old ones are gone, the recent one is kept
    assert pruned == 7
    assert await pool.fetchval("SELECT count(*) FROM receipt_reports") == 1


async def test_a_stale_whatsapp_status_is_not_applied_even_if_never_seen(
    production: tuple[TestClient[Any, Any], Recording],
) -> None:
    # Given a signed status older than the replay window (its id forgotten by now)
    client, receiver = production
    report = whatsapp_report("failed", age_s=3 * 24 * 3600)
    answer = await client.post("/receipts/whatsapp/alpha", **report)
    # Then it is refused as stale: nothing published
    assert (answer.status, await answer.json()) == (200, {"accepted": 0, "unmatched": 1})
    assert receiver.published == []


async def test_the_verify_token_is_its_own_and_unknown_providers_are_404(
    production: tuple[TestClient[Any, Any], Recording],
) -> None:
    client, _ = production

    async def handshake(provider: str, token: str) -> tuple[int, str]:
        query = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42"}
        answer = await client.get(f"/receipts/whatsapp/{provider}", params=query)
        return answer.status, await answer.text()

    assert await handshake("alpha", "alpha-verify") == (200, "42")
    assert (await handshake("alpha", SECRETS["alpha"]))[0] == 403  # the signing secret is not the token
    assert (await handshake("beta", SECRETS["beta"]))[0] == 403  # no token configured: no handshake
    assert (await handshake("nobody", DEV_RECEIPT_SECRET))[0] == 404


def test_receipts_refuse_to_start_in_production_without_secrets() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "SWITCHBOARD_ENV": "production",
        "SWITCHBOARD_RABBITMQ_URL": "amqp://receipts:s3cr3t-Pa55@127.0.0.1:5672/none",
        "SWITCHBOARD_RECEIPTS_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.receipts"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == EXIT_CONFIGURATION
    assert "SWITCHBOARD_RECEIPT_SECRETS" in output and "s3cr3t-Pa55" not in output


def test_development_secrets_are_refused_in_production() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "SWITCHBOARD_ENV": "production",
        "SWITCHBOARD_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.sender"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == EXIT_CONFIGURATION
    assert "SWITCHBOARD_WEBHOOK_SIGNING_SECRET" in output and "SWITCHBOARD_RABBITMQ_URL" in output
    assert "switchboard-dev-webhooks" not in output


# ---- the responder: a report applies only to what its provider sent -----------------------------------


async def _sent_by_alpha(pool: Any) -> int:
    (log_id,) = await insert_logs(pool, [{"channel": "sms", "recipient": RECIPIENT, "tenant": "victim"}])
    await pool.execute(
        "UPDATE communication_logs SET status = 'SENT', attempts = 1, provider = 'alpha',"
        " vendor_ref = 'v-alpha', sent_at = now() WHERE id = $1",
        log_id,
    )
    await pool.execute(
        "INSERT INTO delivery_attempts (log_id, attempt, provider, outcome, vendor_ref, finished_at)"
        " VALUES ($1, 1, 'alpha', 'success', 'v-alpha', now())",
        log_id,
    )
    return log_id


@pytest.mark.e2e
async def test_a_report_from_another_provider_or_reference_changes_nothing(stack: Stack, pool: Any) -> None:
    # Given another tenant's message, SENT by provider alpha with vendor reference v-alpha
    log_id = await _sent_by_alpha(pool)
    port = free_port()
    stack.add("receipts", receipts_port=str(port), receipt_secrets=orjson.dumps(SECRETS).decode())
    stack.add("responder")
    await stack.start()
    url = f"http://127.0.0.1:{port}/receipts/json"
    ref = f"{log_id}-1"
    async with httpx.AsyncClient(timeout=10) as client:
        # When beta (a real provider, with its own valid secret) reports it bounced, alpha reports a
        # bounce under another vendor reference, and a delivery of an attempt never made
        forged = [
            await client.post(f"{url}/beta", **signed(SECRETS["beta"], json_report(ref))),
            await client.post(f"{url}/alpha", **signed(SECRETS["alpha"], json_report(ref, vendor_ref="v-x"))),
            await client.post(
                f"{url}/alpha", **signed(SECRETS["alpha"], json_report(f"{log_id}-2", "delivered"))
            ),
        ]
        # ... and then alpha's genuine delivery report arrives (same recipient: same shard, after them)
        genuine = await client.post(f"{url}/alpha", **signed(SECRETS["alpha"], json_report(ref, "delivered")))
    assert [r.status_code for r in forged] == [200, 200, 200] and genuine.status_code == 200
    await wait_until(
        lambda: _status_is(pool, log_id, "DELIVERED"), timeout=30, what="the genuine report applied"
    )
    # Then only the genuine report counted: delivered, still alpha's, no dead letter, nothing else kept
    row = await pool.fetchrow("SELECT provider, vendor_ref FROM communication_logs WHERE id = $1", log_id)
    assert (row["provider"], row["vendor_ref"]) == ("alpha", "v-alpha")
    kept = await pool.fetch(
        "SELECT provider, status, vendor_ref FROM delivery_receipts WHERE log_id = $1", log_id
    )
    assert [tuple(r) for r in kept] == [("alpha", "DELIVERED", "v-alpha")]
    assert await pool.fetchval("SELECT count(*) FROM dead_letter_outbox") == 0


async def _status_is(pool: Any, log_id: int, status: str) -> bool:
    return await pool.fetchval("SELECT status FROM communication_logs WHERE id = $1", log_id) == status
