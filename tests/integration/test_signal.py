"""Signal: the adapter against the mock provider's signal-cli endpoint; a signal log through the pipeline."""

from __future__ import annotations

import asyncpg
import pytest

from services.sender.adapters import SendRequest
from services.sender.adapters.signal import SignalCliAdapter
from services.sender.adapters.transport import AiohttpTransport
from shared.core.models import OutcomeClass
from tests.helpers import all_terminal, insert_logs, ledger, wait_until
from tests.integration.test_providers import QUIET, configure, route, sms, start_stack
from tools.stack import Stack

TOKEN = "mock-token"


@pytest.mark.e2e
async def test_the_signal_adapter_speaks_the_mock_signal_cli_api(stack: Stack) -> None:
    # Given the mock provider alone
    stack.add("mock_provider", mock_latency_ms="1", **QUIET)
    await stack.start()
    base = stack.url("mock_provider")
    transport = AiohttpTransport(5, 10)
    signal = SignalCliAdapter(f"{base}/sig", {"number": "+15550001"}, transport)
    guarded = SignalCliAdapter(
        f"{base}/sig", {"number": "+15550001", "username": "u", "password": TOKEN}, transport
    )
    wrong = SignalCliAdapter(
        f"{base}/sig", {"number": "+15550001", "username": "u", "password": "no"}, transport
    )
    unregistered = SignalCliAdapter(f"{base}/sig", {"number": "15550001"}, transport)

    def req(recipient: str, n: int) -> SendRequest:
        return SendRequest("sig", "signal", recipient, {"body": "hi"}, f"{n}-1", n, 1)

    # When messages are sent to ordinary and to trouble recipients
    try:
        results = {
            "ok": await signal.send(req("+447400123456", 1)),
            "again": await signal.send(req("+447400123456", 1)),
            "with auth": await guarded.send(req("+447400123457", 2)),
            "bad auth": await wrong.send(req("+447400123458", 3)),
            "invalid": await signal.send(req("+9991234567", 4)),
            "not on signal": await signal.send(req("+7771234567", 5)),
            "server error": await signal.send(req("+8881234567", 6)),
            "our number": await unregistered.send(req("+447400123459", 7)),
        }
    finally:
        await transport.close()
    # Then each answer is classified as signal-cli means it
    S, T, R, P = (
        OutcomeClass.SUCCESS,
        OutcomeClass.TRANSIENT,
        OutcomeClass.RECOVERABLE,
        OutcomeClass.PERMANENT,
    )
    assert {k: (r.outcome, r.error_code) for k, r in results.items()} == {
        "ok": (S, None),
        "again": (S, None),
        "with auth": (S, None),
        "bad auth": (R, "AUTH_FAILED"),
        "invalid": (P, "INVALID_NUMBER"),
        "not on signal": (P, "NOT_ON_SIGNAL"),
        "server error": (T, "SERVER_ERROR"),
        "our number": (R, "ACCOUNT_NOT_REGISTERED"),
    }
    assert results["ok"].vendor_ref and results["again"].replay and results["not on signal"].bounced
    # ... and the ledger holds each accepted message once, the repeat as a replay
    rows = [r for r in await ledger(base) if r["channel"] == "signal"]
    assert sorted((r["idempotency_key"], r["replay"]) for r in rows) == [
        ("1-1", False),
        ("1-1", True),
        ("2-1", False),
    ]


@pytest.mark.e2e
async def test_a_signal_log_routed_to_a_signal_cli_provider_is_sent(stack: Stack, pool: asyncpg.Pool) -> None:
    # Given the pipeline, with a signal_cli provider routed for the signal channel
    start_stack(stack, 1, False, **QUIET)
    await configure(
        pool,
        {
            "providers": [
                sms("smsA"),
                {"name": "sig", "kind": "signal_cli", "settings": {"number": "+15550001"}},
            ],
            "routes": [route("sms", "smsA"), route("signal", "sig")],
        },
    )
    await stack.start()
    # When signal logs are inserted (one to a number that is not on Signal)
    ids = await insert_logs(
        pool,
        [
            {"channel": "signal", "recipient": "+44 7400 123456"},
            {"channel": "signal", "recipient": "+447400123457"},
            {"channel": "signal", "recipient": "+7771234567"},
        ],
    )
    await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
    # Then the good ones are SENT through the Signal provider, the other BOUNCED as not on Signal
    rows = await pool.fetch(
        "SELECT id, status, provider, last_error_code FROM communication_logs"
        " WHERE id = ANY($1::bigint[]) ORDER BY id",
        ids,
    )
    assert [(r["status"], r["provider"], r["last_error_code"]) for r in rows] == [
        ("SENT", "sig", None),
        ("SENT", "sig", None),
        ("BOUNCED", "sig", "NOT_ON_SIGNAL"),
    ]
    sent = [
        r for r in await ledger(stack.url("mock_provider")) if r["channel"] == "signal" and not r["replay"]
    ]
    assert sorted(r["recipient"] for r in sent) == ["+447400123456", "+447400123457"]
