"""Threat: a tenant injects email headers (``Bcc:``) through a CR/LF in a subject, or stalls a shard
with a message the adapter cannot build. The adapter refuses it before connecting (a permanent
INVALID_PAYLOAD with a dead letter), nothing reaches the SMTP server, and the shard keeps moving."""

from __future__ import annotations

import pytest

from tests.helpers import all_terminal, insert_logs, ledger, wait_until
from tests.integration.test_providers import QUIET, configure, route, smtp, start_stack
from tools.stack import Stack


@pytest.mark.e2e
async def test_a_crlf_subject_injects_nothing_and_stalls_nothing(stack: Stack, pool) -> None:
    # Given email over SMTP and one sender holding at most 2 messages per shard
    await configure(pool, {"providers": [smtp("mailer")], "routes": [route("email", "mailer")]})
    start_stack(stack, prefetch="2", **QUIET)
    await stack.start()
    # When header-injecting subjects are queued ahead of good emails
    bad = await insert_logs(
        pool,
        [
            {
                "channel": "email",
                "recipient": f"v{n}@example.com",
                "payload": {"subject": f"Hi\r\nBcc: spy{n}@evil.test"},
            }
            for n in range(8)
        ],
    )
    good = await insert_logs(
        pool,
        [
            {"channel": "email", "recipient": f"g{n}@example.com", "payload": {"subject": "Hi"}}
            for n in range(4)
        ],
    )
    await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
    # Then the injecting ones failed for good without a send, and the good ones went out behind them
    rows = {
        r["id"]: r for r in await pool.fetch("SELECT id, status, last_error_code FROM communication_logs")
    }
    assert {(rows[i]["status"], rows[i]["last_error_code"]) for i in bad} == {("FAILED", "INVALID_PAYLOAD")}
    assert {rows[i]["status"] for i in good} == {"SENT"}
    sent = await ledger(stack.url("mock_provider"))
    assert sorted(r["log_id"] for r in sent if not r["replay"]) == sorted(good)
    assert not any("evil.test" in str(r) for r in sent)
