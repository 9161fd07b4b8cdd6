"""Recipient normalisation and validation, checked before any provider is called."""

from __future__ import annotations

import hashlib
import re

from shared.core.errors import InvalidRecipient

_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_URL = re.compile(r"https?://[^\s/$.?#][^\s]{1,2000}")
PHONE_CHANNELS = frozenset({"sms", "mms", "whatsapp", "signal"})
MAX_ROUTING_KEY = 255


def normalise(channel: str, recipient: str) -> str:
    """The canonical form of ``recipient`` on ``channel``; raises :class:`InvalidRecipient`."""
    raw = recipient.strip()
    if channel in PHONE_CHANNELS:
        number = _PHONE_SEPARATORS.sub("", raw)
        if number.startswith("00"):
            number = "+" + number[2:]
        if not _E164.fullmatch(number):
            raise InvalidRecipient("INVALID_NUMBER", f"not an E.164 phone number: {mask(raw)}")
        return number
    if channel == "email":
        if len(raw) > 254 or not _EMAIL.fullmatch(raw) or ".." in raw:
            raise InvalidRecipient("INVALID_ADDRESS", f"not an email address: {mask(raw)}")
        local, domain = raw.rsplit("@", 1)
        return f"{local}@{domain.lower()}"
    if channel == "webhook":
        if not _URL.fullmatch(raw):
            raise InvalidRecipient("INVALID_URL", "not an http(s) URL")
        if "@" in raw.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]:
            # user:password@host would become Basic auth on whatever the host is (shared/net/outbound.py)
            raise InvalidRecipient("URL_CREDENTIALS", "credentials in the URL are not allowed")
        return raw
    raise InvalidRecipient("UNKNOWN_CHANNEL", f"unknown channel {channel!r}")


def reachable_on(recipient_channel: str, channel: str) -> bool:
    """Whether a recipient address of ``recipient_channel`` is an address on ``channel`` too: a phone
    number serves sms, mms, whatsapp and signal; an email address or a URL only its own channel."""
    return recipient_channel == channel or (recipient_channel in PHONE_CHANNELS and channel in PHONE_CHANNELS)


def recipient_hash(recipient: str) -> str:
    """A short stable digest for logs and metrics, so recipients never appear in clear."""
    return hashlib.blake2b(recipient.encode(), digest_size=8).hexdigest()


def routing_key(recipient: str) -> str:
    """The consistent-hash routing key: the recipient itself when it fits AMQP's 255-byte limit."""
    if len(recipient.encode()) <= MAX_ROUTING_KEY:
        return recipient
    return "h:" + hashlib.sha256(recipient.encode()).hexdigest()


def mask(recipient: str) -> str:
    """``+4479****1234`` / ``j***@example.com``: enough for an operator, not a leak."""
    if "@" in recipient:
        local, _, domain = recipient.partition("@")
        return f"{local[:1]}***@{domain}" if len(local) > 1 else f"***@{domain}"
    if len(recipient) <= 6:
        return "*" * len(recipient)
    # Show at most half of the characters: the country-code side and the last few digits.
    side = min(len(recipient) // 4, 4)
    return recipient[:side] + "*" * (len(recipient) - 2 * side) + recipient[-side:]
