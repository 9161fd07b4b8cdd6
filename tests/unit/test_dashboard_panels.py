"""services/dashboard/panels.py: the operator's panels from raw rows (pure functions)."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.dashboard.panels import (
    campaigns,
    dead_letter_reasons,
    lanes,
    processes,
    providers,
    recipient_keys,
    requeue_command,
    timeline,
)
from services.dashboard.snapshot import QueueDepth
from services.dlq.entries import DlqEntry, entry_of
from shared.bus import wire
from shared.core.models import DeadLetterReason, OutcomeClass, Status
from shared.core.recipients import recipient_hash
from tests.helpers import dead_letter

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_providers_carry_error_rate_latency_and_breaker_state() -> None:
    rows = [{"provider": "mocksms", "calls": 200, "errors": 20, "p50_ms": 12.34, "p95_ms": 80.0}]
    circuits = [{"provider": "mocksms", "state": "open"}, {"provider": "mockwa", "state": "closed"}]
    assert providers(rows, circuits) == [
        {
            "provider": "mocksms",
            "calls": 200,
            "errors": 20,
            "error_rate": 0.1,
            "latency_p50_ms": 12.3,
            "latency_p95_ms": 80.0,
            "state": "open",
        },
        {
            "provider": "mockwa",
            "calls": 0,
            "errors": 0,
            "error_rate": None,
            "latency_p50_ms": None,
            "latency_p95_ms": None,
            "state": "closed",
        },
    ]
    assert providers(rows, None)[0]["state"] == "n/a"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["dispatch", "dispatch-urgent", "responses"]),
            st.integers(0, 7),
            st.integers(0, 100),
            st.integers(0, 3),
        ),
        max_size=30,
        unique_by=lambda t: (t[0], t[1]),
    )
)
def test_lanes_group_every_shard_queue_and_name_the_unconsumed(
    shards: list[tuple[str, int, int, int]],
) -> None:
    depths = [QueueDepth(f"{lane}.{n}", ready, 0, consumers, lane) for lane, n, ready, consumers in shards]
    depths.append(QueueDepth("dlq", 5, 0, 0, "dlq"))
    result = {lane["lane"]: lane for lane in lanes(depths)}
    assert set(result) == {lane for lane, *_ in shards}
    for name, lane in result.items():
        mine = [s for s in shards if s[0] == name]
        assert lane["shards"] == len(mine)
        assert lane["ready"] == sum(s[2] for s in mine)
        assert sorted(lane["unconsumed"]) == sorted(f"{name}.{s[1]}" for s in mine if s[3] == 0)


def campaign(total: int, sent: int, failed: int) -> dict[str, object]:
    return {
        "id": 1,
        "name": "c",
        "tenant": "t",
        "status": "RUNNING",
        "total_count": total,
        "sent_count": sent,
        "failed_count": failed,
        "bounced_count": 0,
    }


def test_campaign_progress_and_eta_from_the_last_minute() -> None:
    (c,) = campaigns([campaign(1000, 400, 100)], {1: 600})  # 10 per second, 500 to go
    assert (c["done"], c["progress"], c["rate_per_s"], c["eta_s"]) == (500, 0.5, 10.0, 50)
    (stalled,) = campaigns([campaign(1000, 400, 100)], {})
    assert stalled["eta_s"] is None
    (done,) = campaigns([campaign(10, 9, 1)], {})
    assert (done["progress"], done["eta_s"]) == (1.0, 0)
    (empty,) = campaigns([campaign(0, 0, 0)], {})
    assert empty["progress"] is None


def _letter(log_id: int, reason: DeadLetterReason, code: str, status: Status, at: datetime) -> DlqEntry:
    letter = dead_letter(
        log_id=log_id,
        attempt=1,
        max_attempts=1,
        tenant="t",
        campaign_id=None,
        status=status,
        reason=reason,
        error_class=OutcomeClass.PERMANENT,
        error_code=code,
        error_message=None,
        created_at=at,
        dead_lettered_at=at,
    )
    envelope = wire.dead_letter(letter)
    return entry_of(wire.Received(envelope.body, type=envelope.type, headers=envelope.headers))


def test_dead_letters_by_reason_come_with_the_command_that_requeues_them() -> None:
    # Given what a look into the DLQ read: three exhausted letters, nine bounced, one poison message
    entries = [
        _letter(n, DeadLetterReason.ATTEMPTS_EXHAUSTED, "SERVER_ERROR", Status.FAILED, T0) for n in range(3)
    ]
    entries += [
        _letter(
            10 + n, DeadLetterReason.PERMANENT_ERROR, "HARD_BOUNCE", Status.BOUNCED, T0 + timedelta(minutes=n)
        )
        for n in range(9)
    ]
    entries.append(entry_of(wire.Received(b"\xff", headers={"x-death": [{"reason": "rejected"}]})))
    # When they are grouped
    first, second, third = dead_letter_reasons(entries)
    # Then the largest group comes first, with its latest letter, and each has its command
    assert (first["reason"], first["status"], first["count"]) == ("permanent_error", "BOUNCED", 9)
    assert first["latest"] == (T0 + timedelta(minutes=8)).isoformat()
    assert (
        second["command"]
        == "switchboard dlq requeue --reason attempts_exhausted --error-code SERVER_ERROR --dry-run"
    )
    # ... and poison, which cannot be requeued, comes with the command that lists it
    assert (third["kind"], third["status"], third["count"]) == ("poison", "poison", 1)
    assert third["command"] == "switchboard dlq list --kind poison --reason rejected"


@given(st.text(min_size=1, max_size=30))
def test_the_requeue_command_is_one_safe_shell_command(code: str) -> None:
    words = shlex.split(requeue_command("permanent_error", code))
    assert words[:5] == ["switchboard", "dlq", "requeue", "--reason", "permanent_error"]
    assert words[5:] == ["--error-code", code, "--dry-run"]


def test_processes_are_read_from_connection_names() -> None:
    connections = [
        {
            "client_properties": {"connection_name": "sender-web-1-4242"},
            "user": "switchboard-sender",
            "channels": 3,
        },
        {"client_properties": {}, "name": "127.0.0.1:5555 -> 127.0.0.1:5672", "peer_host": "10.0.0.9"},
    ]
    named, unnamed = processes(connections, []) or []
    assert (named["process"], named["host"], named["pid"], named["channels"]) == ("sender", "web-1", 4242, 3)
    assert (unnamed["process"], unnamed["host"], unnamed["pid"]) == ("unnamed", "10.0.0.9", None)


def test_processes_on_postgresql_join_their_broker_connections() -> None:
    # Given a sender on both, an API and a dashboard on PostgreSQL only, and a psql session
    since = T0.replace(hour=3)
    connections = [
        {"client_properties": {"connection_name": "sender-web-1-4242"}, "channels": 3},
        {"client_properties": {"connection_name": "sender-web-1-4242"}, "channels": 1},
    ]
    sessions = [
        {"name": "sender-web-1-4242", "connections": 4, "since": since},
        {"name": "api-web-2-77", "connections": 2, "since": since},
        {"name": "dashboard-web-2-78", "connections": 1, "since": None},
        {"name": "psql", "connections": 1, "since": since},
    ]
    # When the panel is built
    rows = processes(connections, sessions) or []
    # Then each process is one row, with what it holds on each side; other sessions are left out
    summary = [
        (r["process"], r["host"], r["pid"], r["broker_connections"], r["channels"], r["database_connections"])
        for r in rows
    ]
    assert summary == [
        ("api", "web-2", 77, 0, 0, 2),
        ("dashboard", "web-2", 78, 0, 0, 1),
        ("sender", "web-1", 4242, 2, 4, 4),
    ]
    assert rows[0]["database_since"] == since.isoformat()


def test_a_host_shortened_by_postgresql_still_matches_its_broker_connection() -> None:
    host = "switchboard-sender-7d9f8b6c5d-x2k4z.pods.cluster.internal"
    connections = [{"client_properties": {"connection_name": f"sender-{host}-12"}, "channels": 2}]
    sessions = [{"name": f"sender-{host[:40]}-12", "connections": 3, "since": None}]
    (row,) = processes(connections, sessions) or []
    assert (row["host"], row["broker_connections"], row["database_connections"]) == (host, 1, 3)


def test_processes_come_from_either_source_and_none_without_both() -> None:
    sessions = [{"name": "api-h-1", "connections": 1, "since": None}]
    assert [r["process"] for r in processes(None, sessions) or []] == ["api"]
    assert [r["process"] for r in processes([{"name": "sender-h-2"}], None) or []] == ["sender"]
    assert processes(None, None) is None


def test_a_timeline_is_in_time_order_and_hides_the_recipient() -> None:
    log = {
        "id": 7,
        "tenant": "t",
        "campaign_id": None,
        "channel": "sms",
        "recipient": "+14155550100",
        "priority": 1,
        "status": "SENT",
        "attempts": 2,
        "max_attempts": 5,
        "provider": "b",
        "last_error_code": None,
        "last_error": None,
        "created_at": T0,
        "updated_at": T0 + timedelta(seconds=9),
    }
    attempts = [
        {
            "attempt": 2,
            "provider": "b",
            "outcome": "success",
            "error_code": None,
            "latency_ms": 20.0,
            "fallback_reason": "primary_failed",
            "finished_at": T0 + timedelta(seconds=8),
        },
        {
            "attempt": 1,
            "provider": "a",
            "outcome": "transient",
            "error_code": "SERVER_ERROR",
            "latency_ms": 5.0,
            "fallback_reason": None,
            "finished_at": T0 + timedelta(seconds=1),
        },
    ]
    receipts = [{"provider": "b", "status": "ACCEPTED", "received_at": T0 + timedelta(seconds=8.5)}]
    result = timeline(log, attempts, receipts)
    assert [e["event"] for e in result["events"]] == [
        "created",
        "attempt 1: transient",
        "attempt 2: success",
        "receipt: accepted",
        "now SENT",
    ]
    assert result["events"][2]["detail"] == "via b 20 ms (fallback: primary_failed)"
    assert result["recipient"] == recipient_hash("+14155550100")


def test_a_typed_recipient_is_looked_up_under_both_spellings() -> None:
    assert "+447700900123" in recipient_keys(" 0044 7700 900-123 ")
    assert recipient_keys("Ada@Example.com ")[0] == "ada@example.com"
