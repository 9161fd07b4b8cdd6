"""The mock provider's SMTP server (aiosmtpd, in the provider's own event loop): AUTH (the login names
the provider), optional STARTTLS, and replies with basic and enhanced status codes as real MTAs give."""

from __future__ import annotations

import asyncio
import email
import hmac
import ssl
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from services.mock_provider.behaviour import Answer, Verdict
from services.mock_provider.reports import Delivery
from services.mock_provider.results import Refused

if TYPE_CHECKING:
    from services.mock_provider.app import MockProvider

# Our words -> what an MTA says.
SMTP_REPLIES = {
    "HARD_BOUNCE": "550 5.1.1 Mailbox does not exist",
    "INVALID_NUMBER": "550 5.1.1 Mailbox does not exist",
    "BLOCKED": "550 5.2.1 Mailbox disabled",
    "SPAM_REJECTED": "554 5.7.1 Message rejected as spam",
    "RATE_LIMITED": "451 4.7.1 Too many messages, slow down",
    "SERVER_ERROR": "451 4.3.0 Temporary local problem",
    "PROVIDER_UNAVAILABLE": "421 4.3.2 Service not available",
}


def smtp_reply(answer: Answer) -> str:
    if answer.verdict == Verdict.OUTAGE:
        return SMTP_REPLIES["PROVIDER_UNAVAILABLE"]
    return SMTP_REPLIES.get(answer.code or "", "451 4.3.0 Temporary local problem")


def login_of(session: Session) -> str | None:
    data = getattr(session, "auth_data", None)
    if isinstance(data, LoginPassword):
        return data.login.decode(errors="replace")
    return data if isinstance(data, str) else None


class SmtpHandler:
    def __init__(self, provider: MockProvider) -> None:
        self.mock = provider

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.mock.in_outage(login_of(session) or "smtp", "email"):
            return SMTP_REPLIES["PROVIDER_UNAVAILABLE"]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content)
        key = message.get("X-Switchboard-Idempotency-Key") or message.get("Message-ID") or ""
        provider = login_of(session) or message.get("X-Switchboard-Provider") or "smtp"
        recipient = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        if not key or not recipient:
            return "554 5.6.0 Message without an idempotency key or recipient"
        delivery = Delivery("smtp", provider, "email", recipient, key)
        result = await self.mock.submit(provider, "email", recipient, key, delivery)
        if isinstance(result, Refused):
            return smtp_reply(result.answer)
        suffix = " (replay)" if result.response["replay"] else ""
        return f"250 2.0.0 Ok: queued as {result.response['id']}{suffix}"


def authenticator(token: str) -> Any:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(auth_data.password.decode(errors="replace"), token)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return check


def tls_context(cert_path: str, key_path: str) -> ssl.SSLContext | None:
    if not cert_path or not key_path:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


async def start_smtp(
    provider: MockProvider, host: str, port: int, context: ssl.SSLContext | None = None
) -> asyncio.Server:
    handler = SmtpHandler(provider)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="mock-provider",
            tls_context=context,
            authenticator=authenticator(provider.token),
            auth_require_tls=False,
            data_size_limit=1024 * 1024,
            timeout=60,
        )

    return await asyncio.get_running_loop().create_server(factory, host, port)
