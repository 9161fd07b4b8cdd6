"""services/sender/adapters/smtp.py against a real aiosmtpd server (the mock provider's, in this process):
plain and STARTTLS, AUTH, replays, and the reply-code table."""

from __future__ import annotations

import email
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from services.mock_provider.app import MockProvider
from services.mock_provider.behaviour import FailureMix
from services.mock_provider.ledger import Ledger
from services.mock_provider.smtp import start_smtp
from services.sender.adapters import SendRequest
from services.sender.adapters.smtp import SMTP_BASIC, SMTP_ENHANCED, SmtpAdapter, build_message, classify_smtp
from shared.core.models import OutcomeClass
from tools.ports import free_port

P, T, R, S = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE, OutcomeClass.SUCCESS
TOKEN = "smtp-secret"


def request(recipient: str = "jo@example.com", key: str = "9-1", **payload: object) -> SendRequest:
    return SendRequest("mailer", "email", recipient, payload or {"subject": "Hi", "body": "hello"}, key, 9, 1)


@pytest.fixture
def mock() -> MockProvider:
    return MockProvider(FailureMix(0, 0, 0), 0, 0, Ledger(), token=TOKEN)


@pytest.fixture
async def plain_server(mock: MockProvider) -> AsyncIterator[int]:
    port = free_port()
    server = await start_smtp(mock, "127.0.0.1", port)
    yield port
    server.close()
    await server.wait_closed()


@pytest.fixture
async def tls_server(mock: MockProvider, tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    port = free_port()
    server = await start_smtp(mock, "127.0.0.1", port, context)
    yield port, str(bundle)
    server.close()
    await server.wait_closed()


def adapter(port: int, **settings: object) -> SmtpAdapter:
    return SmtpAdapter(
        {"port": port, "username": "mailer", "password": TOKEN, **settings}, "127.0.0.1", 25, 5
    )


async def test_plain_smtp_with_auth_delivers_and_the_mock_ledgers_it(
    mock: MockProvider, plain_server: int
) -> None:
    # Given an SMTP adapter logging in over a plain connection / When it sends / Then the server took it
    smtp = adapter(plain_server)
    result = await smtp.send(request())
    await smtp.close()
    assert result.outcome == S and result.vendor_ref and result.vendor_ref.startswith("mailer-")
    (row,) = mock.ledger.rows
    assert (row["provider"], row["recipient"], row["idempotency_key"], row["channel"]) == (
        "mailer",
        "jo@example.com",
        "9-1",
        "email",
    )


async def test_the_same_key_again_is_a_replay_with_the_same_reference(plain_server: int) -> None:
    smtp = adapter(plain_server)
    first, second = await smtp.send(request()), await smtp.send(request())
    await smtp.close()
    assert (first.replay, second.replay) == (False, True)
    assert first.vendor_ref == second.vendor_ref


async def test_starttls_with_a_verified_certificate(mock: MockProvider, tls_server: tuple[int, str]) -> None:
    port, bundle = tls_server
    smtp = adapter(port, starttls=True, ca_file=bundle)
    result = await smtp.send(request())
    await smtp.close()
    assert result.outcome == S
    assert len(mock.ledger.rows) == 1


async def test_starttls_refuses_an_unknown_certificate(tls_server: tuple[int, str]) -> None:
    port, _ = tls_server
    smtp = adapter(port, starttls=True)
    result = await smtp.send(request())
    await smtp.close()
    assert (result.outcome, result.error_code) == (T, "CONNECTION_ERROR")


async def test_wrong_password_is_recoverable_auth_failure(plain_server: int) -> None:
    smtp = adapter(plain_server, password="wrong")
    result = await smtp.send(request())
    await smtp.close()
    assert (result.outcome, result.error_code) == (R, "AUTH_FAILED")


@pytest.mark.parametrize(
    ("recipient", "outcome", "code", "bounced"),
    [
        ("bounce.x@example.com", P, "HARD_BOUNCE", True),
        ("spam.x@example.com", P, "SPAM_REJECTED", False),
        ("flaky.x@example.com", T, "SERVER_ERROR", False),
    ],
)
async def test_refusals_map_through_the_reply_codes(
    plain_server: int, recipient: str, outcome: OutcomeClass, code: str, bounced: bool
) -> None:
    smtp = adapter(plain_server)
    result = await smtp.send(request(recipient))
    await smtp.close()
    assert (result.outcome, result.error_code, result.bounced) == (outcome, code, bounced)


async def test_outage_answers_421_and_is_recoverable(mock: MockProvider, plain_server: int) -> None:
    mock.outages["mailer"] = float("inf")
    smtp = adapter(plain_server)
    result = await smtp.send(request())
    await smtp.close()
    assert (result.outcome, result.error_code) == (R, "PROVIDER_UNAVAILABLE")


async def test_nobody_listening_is_transient() -> None:
    smtp = adapter(free_port())
    result = await smtp.send(request())
    assert (result.outcome, result.error_code) == (T, "CONNECTION_ERROR")


async def test_connections_are_reused(plain_server: int) -> None:
    smtp = adapter(plain_server, pool_size=1)
    for n in range(5):
        assert (await smtp.send(request(key=f"9-{n + 1}"))).outcome == S
    assert len(smtp._idle) == 1
    await smtp.close()


def test_message_headers() -> None:
    message = build_message(
        request(subject="Hello", body="text", html="<b>hi</b>", reply_to="r@x.com"), "A <a@b.com>"
    )
    parsed = email.message_from_bytes(message.as_bytes())
    assert parsed["Message-ID"] == "<9-1.mailer@b.com>"
    assert parsed["X-Switchboard-Idempotency-Key"] == "9-1"
    assert (parsed["To"], parsed["Subject"], parsed["Reply-To"]) == ("jo@example.com", "Hello", "r@x.com")
    assert parsed.is_multipart()


@pytest.mark.parametrize(
    ("code", "message", "outcome", "ours"),
    [
        (550, "5.1.1 <x@y>: Recipient address rejected", P, "HARD_BOUNCE"),
        (550, "5.7.1 Message rejected as spam", P, "SPAM_REJECTED"),
        (552, "5.2.2 Mailbox full", T, "SOFT_BOUNCE"),
        (421, "4.3.2 Service not available", R, "PROVIDER_UNAVAILABLE"),
        (421, "Too many connections", T, "SERVER_BUSY"),
        (451, "4.7.1 Greylisted", T, "RATE_LIMITED"),
        (535, "5.7.8 Authentication credentials invalid", R, "AUTH_FAILED"),
        (553, "mailbox name not allowed", P, "INVALID_ADDRESS"),
        (499, "odd", T, "SMTP_499"),
        (599, "odd", P, "SMTP_599"),
    ],
)
def test_reply_classification(code: int, message: str, outcome: OutcomeClass, ours: str) -> None:
    row = classify_smtp(code, message)
    assert (row.outcome, row.code) == (outcome, ours)


def test_tables_only_use_known_classes() -> None:
    for row in [*SMTP_BASIC.values(), *SMTP_ENHANCED.values()]:
        assert row.outcome != S
        assert row.bounced <= (row.outcome == P)
