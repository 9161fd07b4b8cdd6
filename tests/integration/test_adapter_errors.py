"""An adapter that cannot build a request answers with an outcome: the log fails, the shard keeps moving."""

from __future__ import annotations

import pytest

from tests.helpers import all_terminal, insert_logs, ledger, wait_until
from tests.integration.test_providers import configure, route, smtp, start_stack
from tools.stack import Stack


@pytest.mark.e2e
async def test_emails_with_crlf_subjects_fail_as_invalid_payload_and_the_shard_keeps_moving(
    stack: Stack, pool
) -> None:
    # Given one sender that holds at most 5 messages of each shard at a time, and email routed over SMTP
    await configure(pool, {"providers": [smtp("mailer")], "routes": [route("email", "mailer")]})
    start_stack(
        stack,
        prefetch="5",
        lease_s="5",
        mock_transient_rate="0",
        mock_permanent_rate="0",
        mock_rate_limit_rate="0",
    )
    await stack.start()

    # When 60 emails whose subject injects a header are queued before and among 40 good ones
    bad = [
        {
            "channel": "email",
            "recipient": f"bad{n}@example.com",
            "payload": {"subject": f"Hi\r\nBcc: x{n}@e.com"},
        }
        for n in range(60)
    ]
    good = [
        {"channel": "email", "recipient": f"good{n}@example.com", "payload": {"subject": "Hi", "body": "b"}}
        for n in range(40)
    ]
    bad_ids = await insert_logs(pool, bad[:30])
    good_ids = await insert_logs(pool, good[:20])
    bad_ids += await insert_logs(pool, bad[30:])
    good_ids += await insert_logs(pool, good[20:])
    await wait_until(lambda: all_terminal(pool), timeout=90, what="every log terminal")

    # Then every bad one failed at once as a permanent INVALID_PAYLOAD with one dead letter ...
    rows = await pool.fetch(
        "SELECT id, status, attempts, last_error_code FROM communication_logs ORDER BY id"
    )
    by_id = {r["id"]: r for r in rows}
    assert {(by_id[i]["status"], by_id[i]["last_error_code"], by_id[i]["attempts"]) for i in bad_ids} == {
        ("FAILED", "INVALID_PAYLOAD", 1)
    }
    # ... every good one was sent once, behind them on the same shard
    assert {by_id[i]["status"] for i in good_ids} == {"SENT"}
    sends = [r for r in await ledger(stack.url("mock_provider")) if not r["replay"]]
    assert sorted(r["log_id"] for r in sends) == sorted(good_ids)
    # ... no dispatch went round again (nothing was left unacked for the lease to republish)
    reclaimed = stack.processes["poller"].log_path.read_text().count('"event":"leases_reclaimed"')
    assert reclaimed == 0
    attempts = await pool.fetch(
        "SELECT outcome, error_code, count(*) AS n FROM delivery_attempts"
        " WHERE log_id = ANY($1::bigint[]) GROUP BY 1, 2",
        bad_ids,
    )
    assert [(a["outcome"], a["error_code"], a["n"]) for a in attempts] == [
        ("permanent", "INVALID_PAYLOAD", 60)
    ]
