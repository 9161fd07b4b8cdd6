"""Delivery reports: the mock's formats, the receiver's parsing and signature checks, and what the
responder does with a receipt in any order relative to its outcome."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.mock_provider.behaviour import ReceiptMix, ReceiptVerdict, receipt_verdict
from services.mock_provider.reports import Delivery, build_report, public_ref
from services.receipts.parse import (
    ReceiptError,
    parse_email,
    parse_json,
    parse_sms,
    parse_whatsapp,
    reference,
)
from services.responder.decision import Deliver, RecordOnly, SentAttempt, Undeliverable, decide_receipt
from services.responder.plan import Defaults, EarlyReceipt, LogRow, WritePlan, plan_writes
from shared.core.models import (
    DeadLetterReason,
    OutcomeClass,
    OutcomeMessage,
    ReceiptMessage,
    ReceiptStatus,
    Status,
)
from shared.core.retry import RetryPolicy
from shared.core.signatures import HUB_HEADER, SWITCHBOARD_HEADER, sign_hub, sign_timestamped

SECRET = "shh"
NOW = time.time()
D, B, F, Q = ReceiptStatus.DELIVERED, ReceiptStatus.BOUNCED, ReceiptStatus.FAILED, ReceiptStatus.QUEUED


# ---- the mock's reports, read back by the receiver ----------------------------------------------------


def parse(delivery: Delivery, verdict: ReceiptVerdict, secret: str = SECRET) -> list[ReceiptMessage]:
    report = build_report(delivery, verdict, "http://receipts", SECRET, NOW)
    headers = report.headers
    if delivery.api == "sms_gateway":
        form = dict(parse_qsl(report.body.decode(), keep_blank_values=True))
        return parse_sms("p", report.url, form, headers, secret).receipts
    if delivery.api == "whatsapp_cloud":
        return parse_whatsapp("p", report.body, headers, secret).receipts
    if delivery.api == "smtp":
        return parse_email("p", report.body, headers, secret, NOW, 300).receipts
    return parse_json("p", report.body, headers, secret, NOW, 300).receipts


DELIVERIES = [
    Delivery("sms_gateway", "p", "sms", "+447911123456", "12-2", "SM1", sender="Acme"),
    Delivery("whatsapp_cloud", "p", "whatsapp", "+447911123456", "12-2", "wamid.1", sender="100"),
    Delivery("smtp", "p", "email", "jo@example.com", "12-2", "m-1"),
    Delivery("json", "p", "sms", "+447911123456", "12-2", "j-1"),
]
EXPECTED = {ReceiptVerdict.DELIVERED: D, ReceiptVerdict.BOUNCED: B, ReceiptVerdict.FAILED: F}


@pytest.mark.parametrize("delivery", DELIVERIES, ids=lambda d: d.api)
@pytest.mark.parametrize("verdict", list(ReceiptVerdict))
def test_every_report_format_round_trips(delivery: Delivery, verdict: ReceiptVerdict) -> None:
    (receipt,) = parse(delivery, verdict)
    assert (receipt.log_id, receipt.attempt, receipt.provider, receipt.status) == (
        12,
        2,
        "p",
        EXPECTED[verdict],
    )
    assert receipt.recipient == delivery.recipient
    assert receipt.vendor_ref == public_ref(delivery.api, delivery.ref)  # the id the API answered with


@pytest.mark.parametrize("delivery", DELIVERIES, ids=lambda d: d.api)
def test_a_wrong_secret_is_refused(delivery: Delivery) -> None:
    with pytest.raises(ReceiptError) as refused:
        parse(delivery, ReceiptVerdict.DELIVERED, secret="not it")
    assert (refused.value.status, refused.value.result) == (401, "bad_signature")


def test_a_stale_timestamped_signature_is_refused() -> None:
    body = b'{"reference": "1-1", "status": "delivered"}'
    header = sign_timestamped(SECRET, body, int(NOW) - 3600)
    with pytest.raises(ReceiptError):
        parse_json("p", body, {SWITCHBOARD_HEADER: header}, SECRET, NOW, 300)


def test_reports_without_a_reference_or_with_progress_only_are_unmatched_or_queued() -> None:
    body = orjson.dumps(
        [
            {"event": "delivered", "email": "a@b.c"},
            {"event": "processed", "reference": "3-1"},
            {"event": "open", "reference": "3-1"},
            "junk",
        ]
    )
    parsed = parse_email(
        "p", body, {SWITCHBOARD_HEADER: sign_timestamped(SECRET, body, int(NOW))}, SECRET, NOW, 300
    )
    assert [(r.log_id, r.status) for r in parsed.receipts] == [(3, Q)]
    assert parsed.unmatched == 3


def test_whatsapp_read_counts_as_delivered_and_malformed_bodies_are_400() -> None:
    body = orjson.dumps(
        {
            "entry": [
                {
                    "changes": [
                        {
                            "value": {
                                "statuses": [
                                    {
                                        "id": "w",
                                        "status": "read",
                                        "recipient_id": "4479",
                                        "biz_opaque_callback_data": "5-1",
                                    }
                                ]
                            }
                        }
                    ]
                }
            ]
        }
    )
    (receipt,) = parse_whatsapp("p", body, {HUB_HEADER: sign_hub(SECRET, body)}, SECRET).receipts
    assert (receipt.status, receipt.provider_status, receipt.recipient) == (D, "read", "+4479")
    bad = b"[1, 2"
    with pytest.raises(ReceiptError) as refused:
        parse_whatsapp("p", bad, {HUB_HEADER: sign_hub(SECRET, bad)}, SECRET)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("12-3", (12, 3)),
        ("0-1", None),
        ("1-0", None),
        ("x", None),
        (None, None),
        ("1-2-3", None),
        ("²-1", None),
    ],
)
def test_reference(value: object, parsed: tuple[int, int] | None) -> None:
    assert reference(value) == parsed


def test_receipt_mix_and_magic_recipients() -> None:
    assert receipt_verdict(ReceiptMix(), 1, "+4440000000", "1-1") == ReceiptVerdict.BOUNCED
    assert receipt_verdict(ReceiptMix(), 1, "dlrfail@x.com", "1-1") == ReceiptVerdict.FAILED
    verdicts = [receipt_verdict(ReceiptMix(0.5, 0.2, 0.1), 7, "+1", f"{n}-1") for n in range(1, 5001)]
    share = {v: verdicts.count(v) / 5000 for v in [*ReceiptVerdict, None]}
    assert share[ReceiptVerdict.DELIVERED] == pytest.approx(0.5, abs=0.03)
    assert share[None] == pytest.approx(0.2, abs=0.03)


# ---- the responder's decision ---------------------------------------------------------------------------


def receipt(status: ReceiptStatus, attempt: int = 1, log_id: int = 1) -> ReceiptMessage:
    return ReceiptMessage(
        log_id=log_id,
        attempt=attempt,
        recipient="+447911123456",
        provider="alpha",
        vendor_ref="v-1",
        status=status,
        provider_status=status.value.lower(),
        error_code=None if status == D else "30003",
    )


@pytest.mark.parametrize(
    ("status", "attempts", "r", "expected"),
    [
        (Status.SENT, 1, receipt(D), Deliver(was_sent=True)),
        (Status.PENDING, 1, receipt(D), Deliver(was_sent=False)),
        (Status.PROCESSING, 2, receipt(D, 1), Deliver(was_sent=False)),
        (Status.SENT, 1, receipt(B), Undeliverable(Status.BOUNCED)),
        (Status.SENT, 1, receipt(F), Undeliverable(Status.FAILED)),
        (Status.PROCESSING, 1, receipt(D), RecordOnly("outcome not applied yet: applied with it")),
        (Status.PROCESSING, 1, receipt(F), RecordOnly("outcome not applied yet: applied with it")),
    ],
)
def test_receipt_decisions(status: Status, attempts: int, r: ReceiptMessage, expected: object) -> None:
    assert decide_receipt(status, attempts, r) == expected


@pytest.mark.parametrize("status", [Status.DELIVERED, Status.FAILED, Status.BOUNCED, Status.CANCELLED])
@pytest.mark.parametrize("kind", [D, B, F, Q])
def test_settled_logs_only_record(status: Status, kind: ReceiptStatus) -> None:
    assert isinstance(decide_receipt(status, 1, receipt(kind)), RecordOnly)


def test_stale_failures_and_future_attempts_only_record() -> None:
    assert isinstance(decide_receipt(Status.SENT, 2, receipt(F, 1)), RecordOnly)
    assert isinstance(decide_receipt(Status.SENT, 1, receipt(D, 2)), RecordOnly)
    assert isinstance(decide_receipt(Status.SENT, 1, receipt(Q)), RecordOnly)


POLICY = Defaults(RetryPolicy.exponential(5, 300, 0.2))
CREATED = datetime(2024, 1, 1, tzinfo=UTC)


def row(status: Status = Status.PROCESSING, attempts: int = 1, early: EarlyReceipt | None = None) -> LogRow:
    return LogRow(
        1, status, attempts, 3, "alpha", "t", 77, "sms", "+447911123456", CREATED, early_receipt=early
    )


def outcome(klass: OutcomeClass = OutcomeClass.SUCCESS, attempt: int = 1) -> OutcomeMessage:
    return OutcomeMessage(
        log_id=1,
        attempt=attempt,
        recipient="+447911123456",
        channel="sms",
        provider="alpha",
        outcome=klass,
        error_code=None if klass == OutcomeClass.SUCCESS else "E",
        vendor_ref="v-1",
        finished_at=CREATED + timedelta(seconds=1),
    )


SENT_BY_ALPHA = {(1, n): SentAttempt("alpha", "v-1") for n in (1, 2, 3)}


def plan(outcomes: list[OutcomeMessage], receipts: list[ReceiptMessage], log: LogRow) -> WritePlan:
    return plan_writes(
        outcomes,
        {1: log},
        POLICY,
        {"sms": ["alpha", "beta"]},
        random.Random(0),
        receipts,
        sent_attempts=SENT_BY_ALPHA,
    )


def test_delivered_after_sent_counts_delivered_only() -> None:
    p = plan([], [receipt(D)], row(Status.SENT))
    assert [(u.status, u.delivered, u.sent) for u in p.updates] == [(Status.DELIVERED, True, True)]
    assert p.campaign_deltas == {} and p.delivered_deltas == {77: 1}
    assert [r.status for r in p.reports] == [D]


def test_outcome_and_receipt_in_one_batch_make_one_update() -> None:
    p = plan([outcome()], [receipt(D)], row())
    assert [(u.status, u.vendor_ref, u.sent, u.delivered) for u in p.updates] == [
        (Status.DELIVERED, "v-1", True, True)
    ]
    assert p.campaign_deltas == {77: [1, 0, 0, 0]} and p.delivered_deltas == {77: 1}
    assert len(p.attempts) == 1 and len(p.receipts) == 1


def test_a_receipt_before_its_outcome_is_kept_and_applied_when_the_outcome_comes() -> None:
    # Given a DELIVERED receipt while the log is still PROCESSING: it is only recorded
    early = plan([], [receipt(D)], row())
    assert early.updates == [] and [r.status for r in early.reports] == [D]
    # When the outcome arrives (the row now shows the recorded receipt) / Then the log is DELIVERED
    p = plan([outcome()], [], row(early=EarlyReceipt(1, D, "alpha", vendor_ref="v-1")))
    assert [u.status for u in p.updates] == [Status.DELIVERED]
    assert p.campaign_deltas == {77: [1, 0, 0, 0]} and p.delivered_deltas == {77: 1}


def test_an_early_delivery_beats_a_failed_outcome() -> None:
    p = plan([outcome(OutcomeClass.TRANSIENT)], [], row(early=EarlyReceipt(1, D, "alpha", vendor_ref="v-1")))
    assert [u.status for u in p.updates] == [Status.DELIVERED]
    assert p.retries == [] and p.dead_letters == []
    assert [a.outcome.outcome for a in p.attempts] == [OutcomeClass.TRANSIENT]


def test_an_early_failure_report_turns_the_success_into_a_bounce_with_a_dead_letter() -> None:
    p = plan([outcome()], [], row(early=EarlyReceipt(1, B, "alpha", "30005", "undelivered", "v-1")))
    assert [(u.status, u.error_code) for u in p.updates] == [(Status.BOUNCED, "30005")]
    (letter,) = p.dead_letters
    assert (letter.reason, letter.error_class, letter.status) == (
        DeadLetterReason.PERMANENT_ERROR,
        OutcomeClass.PERMANENT,
        Status.BOUNCED,
    )
    assert p.campaign_deltas == {77: [0, 0, 1, 0]}


def test_failure_report_after_sent_moves_the_count_and_dead_letters() -> None:
    p = plan([], [receipt(F)], row(Status.SENT))
    assert [(u.status, u.error_code) for u in p.updates] == [(Status.FAILED, "30003")]
    assert p.campaign_deltas == {77: [-1, 1, 0, 0]}
    assert len(p.dead_letters) == 1


def test_receipt_for_an_unknown_log_is_not_written() -> None:
    p = plan_writes([], {}, POLICY, {}, None, [receipt(D, log_id=5)])
    assert p.reports == [] and len(p.ignored_receipts) == 1


def apply(p: WritePlan, log: LogRow) -> LogRow:
    for update in p.updates:
        log = replace(log, status=update.status)
    return log


receipts = st.lists(st.builds(receipt, st.sampled_from([D, B, F, Q]), st.integers(1, 3)), max_size=6)


@given(status=st.sampled_from(list(Status)), attempts=st.integers(1, 3), batch=receipts)
def test_receipts_applied_twice_change_nothing_the_second_time(
    status: Status, attempts: int, batch: list[ReceiptMessage]
) -> None:
    log = row(status, attempts)
    first = plan([], batch, log)
    second = plan([], batch, apply(first, log))
    assert second.updates == [] and second.dead_letters == []
    assert second.campaign_deltas == {} and second.delivered_deltas == {}
    assert len(first.updates) <= 1
