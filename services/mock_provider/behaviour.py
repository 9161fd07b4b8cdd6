"""What the mock provider answers to one request (pure and seeded, so tests can predict it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    ACCEPT = "accept"
    RATE_LIMIT = "rate_limit"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    OUTAGE = "outage"


@dataclass(frozen=True, slots=True)
class FailureMix:
    transient_rate: float = 0.04
    permanent_rate: float = 0.03
    rate_limit_rate: float = 0.02
    retry_after_s: float = 1.0
    seed: int = 42

    def __post_init__(self) -> None:
        if min(self.transient_rate, self.permanent_rate, self.rate_limit_rate) < 0:
            raise ValueError("failure rates cannot be negative")
        total = self.transient_rate + self.permanent_rate + self.rate_limit_rate
        if not 0 <= total <= 1:
            raise ValueError(f"failure rates add up to {total}, which is not within [0, 1]")


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    status: int
    code: str | None = None
    message: str | None = None
    retry_after_s: float | None = None


# Recipients that always get one answer, so that tests can aim at a path.
MAGIC_PREFIXES: tuple[tuple[str, Answer], ...] = (
    ("+999", Answer(Verdict.PERMANENT, 400, "INVALID_NUMBER", "number does not exist")),
    ("+888", Answer(Verdict.TRANSIENT, 500, "SERVER_ERROR", "upstream carrier error")),
    ("+777", Answer(Verdict.PERMANENT, 403, "BLOCKED", "recipient blocked")),
    ("bounce", Answer(Verdict.PERMANENT, 400, "HARD_BOUNCE", "mailbox does not exist")),
    ("flaky", Answer(Verdict.TRANSIENT, 500, "SERVER_ERROR", "temporary failure")),
    ("spam", Answer(Verdict.PERMANENT, 400, "SPAM_REJECTED", "message rejected as spam")),
)

# Recipients refused on one channel only (reachable on the others): channel fallback aims at these.
CHANNEL_MAGIC_PREFIXES: tuple[tuple[str, str, Answer], ...] = (
    ("+555", "whatsapp", Answer(Verdict.PERMANENT, 400, "UNDELIVERABLE", "recipient is not a WhatsApp user")),
)

PERMANENT_CHOICES = ("INVALID_NUMBER", "BLOCKED", "HARD_BOUNCE")


def draw(seed: int, idempotency_key: str) -> float:
    """A number in [0, 1) fixed by seed and key: a retried key gets the same answer, a new attempt a
    new one."""
    digest = hashlib.blake2b(f"{seed}:{idempotency_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def decide(
    mix: FailureMix, channel: str, recipient: str, idempotency_key: str, welcome: bool = False
) -> Answer:
    """The answer to one send. ``welcome``: accept it whatever the draw (magic prefixes still apply)."""
    for prefix, answer in MAGIC_PREFIXES:
        if recipient.startswith(prefix):
            return answer
    for prefix, refusing, answer in CHANNEL_MAGIC_PREFIXES:
        if channel == refusing and recipient.lstrip("+").startswith(prefix.lstrip("+")):
            return answer
    if welcome:
        return Answer(Verdict.ACCEPT, 200)
    u = draw(mix.seed, idempotency_key)
    if u < mix.rate_limit_rate:
        return Answer(Verdict.RATE_LIMIT, 429, "RATE_LIMITED", "too many requests", mix.retry_after_s)
    u -= mix.rate_limit_rate
    if u < mix.transient_rate:
        return Answer(Verdict.TRANSIENT, 500, "SERVER_ERROR", "temporary failure")
    u -= mix.transient_rate
    if u < mix.permanent_rate:
        code = PERMANENT_CHOICES[
            int(u / mix.permanent_rate * len(PERMANENT_CHOICES)) % len(PERMANENT_CHOICES)
        ]
        if code == "HARD_BOUNCE" and channel != "email":
            code = "INVALID_NUMBER"
        elif code == "INVALID_NUMBER" and channel == "email":
            code = "HARD_BOUNCE"
        return Answer(Verdict.PERMANENT, 400, code, "rejected by provider")
    return Answer(Verdict.ACCEPT, 200)


class ReceiptVerdict(StrEnum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ReceiptMix:
    """What delivery reports the mock sends after accepting a message (the rest get none)."""

    delivered_rate: float = 0.9
    bounced_rate: float = 0.03
    failed_rate: float = 0.02
    delay_ms: float = 200.0

    def __post_init__(self) -> None:
        if min(self.delivered_rate, self.bounced_rate, self.failed_rate) < 0:
            raise ValueError("receipt rates cannot be negative")
        total = self.delivered_rate + self.bounced_rate + self.failed_rate
        if not 0 <= total <= 1 + 1e-9:
            raise ValueError(f"receipt rates add up to {total}, which is not within [0, 1]")


# Recipients whose delivery report is fixed, whatever the mix.
RECEIPT_PREFIXES: tuple[tuple[str, ReceiptVerdict], ...] = (
    ("+444", ReceiptVerdict.BOUNCED),
    ("+333", ReceiptVerdict.FAILED),
    ("dlrbounce", ReceiptVerdict.BOUNCED),
    ("dlrfail", ReceiptVerdict.FAILED),
)


def receipt_verdict(
    mix: ReceiptMix, seed: int, recipient: str, idempotency_key: str
) -> ReceiptVerdict | None:
    """The delivery report for an accepted message; ``None``: the provider never reports."""
    for prefix, verdict in RECEIPT_PREFIXES:
        if recipient.startswith(prefix):
            return verdict
    u = draw(seed + 1, idempotency_key)
    for rate, verdict in (
        (mix.delivered_rate, ReceiptVerdict.DELIVERED),
        (mix.bounced_rate, ReceiptVerdict.BOUNCED),
        (mix.failed_rate, ReceiptVerdict.FAILED),
    ):
        if u < rate:
            return verdict
        u -= rate
    return None


def split_key(idempotency_key: str) -> tuple[int | None, int | None]:
    """``<log id>-<attempt>`` -> (log id, attempt); (None, None) for keys of another shape."""
    head, _, tail = idempotency_key.rpartition("-")
    if head.isascii() and tail.isascii() and head.isdigit() and tail.isdigit():
        return int(head), int(tail)
    return None, None
