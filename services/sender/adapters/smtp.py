"""Email over SMTP (aiosmtplib): plain or STARTTLS (or implicit TLS), optional AUTH, a small pool of
connections per provider. Reply codes (basic and enhanced, RFC 3463) are classified by table."""

from __future__ import annotations

import asyncio
import email.errors
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import aiosmtplib

from services.sender.adapters.base import (
    ErrorClass,
    SendRequest,
    SendResult,
    Stopwatch,
    details,
    failure,
    required_setting,
    setting,
)
from shared.core.errors import InvalidPayload
from shared.core.models import OutcomeClass

P, T, R = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE

SMTP_ENHANCED: dict[str, ErrorClass] = {
    "5.1.1": ErrorClass(P, "HARD_BOUNCE", bounced=True),  # no such mailbox
    "5.1.2": ErrorClass(P, "HARD_BOUNCE", bounced=True),  # no such domain
    "5.1.3": ErrorClass(P, "INVALID_ADDRESS"),
    "5.1.10": ErrorClass(P, "HARD_BOUNCE", bounced=True),  # null MX
    "5.2.1": ErrorClass(P, "BLOCKED"),  # mailbox disabled
    "5.2.2": ErrorClass(T, "SOFT_BOUNCE"),  # mailbox full
    "5.3.4": ErrorClass(P, "PAYLOAD_TOO_LARGE"),
    "5.7.1": ErrorClass(P, "SPAM_REJECTED"),  # refused by policy
    "5.7.26": ErrorClass(P, "SPAM_REJECTED"),  # DMARC
    "5.7.8": ErrorClass(R, "AUTH_FAILED"),
    "4.2.2": ErrorClass(T, "SOFT_BOUNCE"),
    "4.3.2": ErrorClass(R, "PROVIDER_UNAVAILABLE"),  # system not accepting messages
    "4.7.0": ErrorClass(T, "RATE_LIMITED"),  # greylisting, throttling
    "4.7.1": ErrorClass(T, "RATE_LIMITED"),
}
SMTP_BASIC: dict[int, ErrorClass] = {
    421: ErrorClass(T, "SERVER_BUSY"),
    450: ErrorClass(T, "SOFT_BOUNCE"),
    451: ErrorClass(T, "SERVER_ERROR"),
    452: ErrorClass(T, "SERVER_ERROR"),
    454: ErrorClass(T, "SERVER_ERROR"),
    530: ErrorClass(R, "AUTH_FAILED"),
    534: ErrorClass(R, "AUTH_FAILED"),
    535: ErrorClass(R, "AUTH_FAILED"),
    538: ErrorClass(R, "AUTH_FAILED"),
    550: ErrorClass(P, "HARD_BOUNCE", bounced=True),
    551: ErrorClass(P, "INVALID_ADDRESS"),
    552: ErrorClass(P, "PAYLOAD_TOO_LARGE"),
    553: ErrorClass(P, "INVALID_ADDRESS"),
    554: ErrorClass(P, "REJECTED"),
}
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_QUEUED_AS = re.compile(r"queued as\s+(\S+)", re.IGNORECASE)


def classify_smtp(code: int, message: str) -> ErrorClass:
    """An SMTP reply -> our class: the enhanced status code first, then the basic code, then its class."""
    match = _ENHANCED.search(message or "")
    if match and match.group(1) in SMTP_ENHANCED:
        return SMTP_ENHANCED[match.group(1)]
    if code in SMTP_BASIC:
        return SMTP_BASIC[code]
    if 400 <= code < 500:
        return ErrorClass(T, f"SMTP_{code}")
    return ErrorClass(P, f"SMTP_{code}")


def build_message(request: SendRequest, sender: str) -> EmailMessage:
    """The email for ``request``; :class:`InvalidPayload` when the payload cannot make one (a header
    with CR/LF, characters no encoding takes), found here and not halfway through an SMTP session."""
    try:
        message = _compose(request, sender)
        message.as_bytes(policy=SMTP_POLICY)  # what aiosmtplib sends: every header and part must encode
    except (ValueError, TypeError, LookupError, AttributeError, email.errors.MessageError) as exc:
        raise InvalidPayload(f"cannot build the email: {exc}"[:500]) from exc
    return message


def _compose(request: SendRequest, sender: str) -> EmailMessage:
    payload = request.payload
    message = EmailMessage()
    message["From"] = str(payload.get("from") or sender)
    message["To"] = request.recipient
    message["Subject"] = str(payload.get("subject") or "")
    domain = str(message["From"]).rpartition("@")[2].strip("> ") or "switchboard.invalid"
    message["Message-ID"] = f"<{request.idempotency_key}.{request.provider}@{domain}>"
    message["X-Switchboard-Idempotency-Key"] = request.idempotency_key
    message["X-Switchboard-Provider"] = request.provider
    if payload.get("reply_to"):
        message["Reply-To"] = str(payload["reply_to"])
    message.set_content(str(payload.get("body") or payload.get("text") or ""))
    if payload.get("html"):
        message.add_alternative(str(payload["html"]), subtype="html")
    return message


class SmtpAdapter:
    def __init__(self, settings: Any, default_host: str, default_port: int, timeout_s: float) -> None:
        self.host = str(setting(settings, "host", default_host) or required_setting(settings, "host", "smtp"))
        self.port = int(setting(settings, "port", default_port))
        self.username = setting(settings, "username")
        self.password = setting(settings, "password")
        self.sender = str(setting(settings, "from", "Switchboard <noreply@switchboard.invalid>"))
        self.starttls = bool(setting(settings, "starttls", False))
        self.use_tls = bool(setting(settings, "use_tls", False))
        self.validate_certs = bool(setting(settings, "validate_certs", True))
        self.ca_file = setting(settings, "ca_file")
        self.timeout_s = float(setting(settings, "timeout_s", timeout_s))
        self.size = int(setting(settings, "pool_size", 4))
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(self.size)

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.starttls if not self.use_tls else False,
            validate_certs=self.validate_certs,
            cert_bundle=self.ca_file,
            timeout=self.timeout_s,
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            if client is None or not client.is_connected:
                client = self._client()
                await client.connect()
            try:
                yield client
            except BaseException:
                client.close()  # a connection in an unknown state is not reused
                raise
            self._idle.append(client)

    async def send(self, request: SendRequest) -> SendResult:
        message = build_message(request, self.sender)
        watch = Stopwatch()
        connected = False  # past connect (and STARTTLS, AUTH): from here on the message may get queued
        try:
            async with self.connection() as client:
                connected = True
                _, reply = await client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code, text = (refused.code, refused.message) if refused else (550, str(exc))
            return failure(
                classify_smtp(code, text), watch.ms(), f"{code} {text}", None, details(smtp_code=code)
            )
        except aiosmtplib.SMTPResponseException as exc:
            return failure(
                classify_smtp(exc.code, exc.message),
                watch.ms(),
                f"{exc.code} {exc.message}",
                None,
                details(smtp_code=exc.code),
            )
        except (aiosmtplib.SMTPException, OSError) as exc:  # TimeoutError is an OSError
            timed_out = isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError)
            kind = ("TIMEOUT" if timed_out else "CONNECTION_LOST") if connected else "CONNECTION_ERROR"
            return failure(ErrorClass(T, kind), watch.ms(), repr(exc))
        queued = _QUEUED_AS.search(reply or "")
        replay = "replay" in (reply or "").lower()
        return SendResult(
            OutcomeClass.SUCCESS,
            watch.ms(),
            vendor_ref=queued.group(1) if queued else message["Message-ID"],
            replay=replay,
            details=details(reply=reply),
        )

    async def close(self) -> None:
        while self._idle:
            client = self._idle.pop()
            try:
                await asyncio.wait_for(client.quit(), 2)
            except Exception:
                client.close()
