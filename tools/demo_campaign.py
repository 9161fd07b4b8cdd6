"""A realistic campaign for the demo: recipients in several countries and channels, mixed priorities,
and a small share of recipients that the mock provider always rejects or fails, so that bounces,
permanent failures, retries and dead letters all show up. Seeded: the same seed, the same campaign.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

TENANT = "acme"

# channel -> share of the campaign
CHANNEL_MIX: dict[str, float] = {"sms": 0.40, "email": 0.38, "whatsapp": 0.17, "mms": 0.05}
# priority (0 high, 1 normal, 2 low) -> share
PRIORITY_MIX: dict[int, float] = {0: 0.10, 1: 0.60, 2: 0.30}
# A recipient who gets a second message of the same campaign (a reminder): exercises the ordering gate.
REPEAT_SHARE = 0.04

# (country, formatter) for mobile numbers; mostly ranges reserved for fiction or documentation.
PHONE_FORMATS: tuple[tuple[str, Callable[[random.Random], str]], ...] = (
    ("US", lambda r: f"+1{r.choice(['212', '415', '646', '312', '617'])}555{r.randrange(10_000):04d}"),
    ("GB", lambda r: f"+447700900{r.randrange(1_000):03d}"),
    ("GB", lambda r: f"+44 7700 {r.randrange(900_000, 901_000)}"),  # as typed, with spaces
    ("FR", lambda r: f"+336{r.randrange(10**8):08d}"),
    ("DE", lambda r: f"+49151{r.randrange(10**8):08d}"),
    ("BR", lambda r: f"+55119{r.randrange(10**8):08d}"),
    ("IN", lambda r: f"+919{r.randrange(10**9):09d}"),
    ("AU", lambda r: f"+614{r.randrange(10**8):08d}"),
    ("NG", lambda r: f"00234803{r.randrange(10**7):07d}"),  # international prefix, normalised to +234
)
FIRST_NAMES = (
    "ana",
    "ben",
    "chloe",
    "david",
    "emma",
    "farah",
    "giulia",
    "hiro",
    "ines",
    "jamal",
    "kofi",
    "lena",
    "mateo",
    "nina",
    "omar",
    "priya",
    "quentin",
    "rosa",
    "sven",
    "tariq",
    "uma",
    "yuki",
)
LAST_NAMES = (
    "silva",
    "smith",
    "martin",
    "muller",
    "rossi",
    "tanaka",
    "okafor",
    "kumar",
    "dubois",
    "garcia",
    "nowak",
    "jensen",
    "haddad",
    "costa",
    "ivanova",
    "lee",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.co.uk", "corp.example.de")

# Recipients with a fixed answer from the mock provider (services/mock_provider/behaviour.py MAGIC_PREFIXES),
# or that fail validation before any provider is called: (share, channel, recipient maker).
TROUBLE: tuple[tuple[float, str, Callable[[random.Random, int], str]], ...] = (
    (0.005, "sms", lambda r, n: f"+999{r.randrange(10**8):08d}"),  # INVALID_NUMBER -> FAILED
    (0.002, "whatsapp", lambda r, n: f"+777{r.randrange(10**8):08d}"),  # BLOCKED -> FAILED
    (0.003, "sms", lambda r, n: f"+888{r.randrange(10**8):08d}"),  # always 5xx -> retried, exhausted
    (0.005, "email", lambda r, n: f"bounce.{n}@example.com"),  # HARD_BOUNCE -> BOUNCED
    (0.002, "email", lambda r, n: f"flaky.{n}@example.com"),  # always 5xx -> retried, exhausted
    (0.001, "email", lambda r, n: f"spam.{n}@example.org"),  # SPAM_REJECTED -> FAILED
    (0.001, "sms", lambda r, n: f"07700 900{n % 1000:03d} ext"),  # not E.164 -> refused before sending
    (0.001, "email", lambda r, n: f"user{n}@"),  # not an address -> refused before sending
)


@dataclass(frozen=True, slots=True)
class LogSpec:
    channel: str
    recipient: str
    priority: int
    payload: dict[str, Any]


@dataclass(slots=True)
class Campaign:
    name: str
    logs: list[LogSpec] = field(default_factory=list)

    def by_channel(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for log in self.logs:
            counts[log.channel] = counts.get(log.channel, 0) + 1
        return counts


def _pick(rng: random.Random, mix: dict[Any, float]) -> Any:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _person(rng: random.Random, n: int) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES) + (str(n) if rng.random() < 0.7 else "")


def _payload(rng: random.Random, channel: str, first: str) -> dict[str, Any]:
    name = first.capitalize()
    if channel == "email":
        return {
            "template": "spring-sale-2025",
            "subject": f"{name}, 20% off everything this weekend",
            "vars": {"first_name": name, "code": f"SPRING{rng.randrange(100, 999)}"},
        }
    if channel == "whatsapp":
        return {
            "template": "promo_offer",
            "language": rng.choice(["en", "pt_BR", "fr", "de"]),
            "params": [name, "20%"],
        }
    body = f"Hi {name}, spring sale: 20% off until Sunday. Reply STOP to opt out."
    if channel == "mms":
        return {"body": body, "media_url": "https://cdn.example.com/campaigns/spring-2025/banner.jpg"}
    return {"body": body, "sender_id": "ACME"}


def _recipient(rng: random.Random, channel: str, n: int) -> tuple[str, str]:
    first, last = _person(rng, n)
    if channel == "email":
        return f"{first}.{last}@{rng.choice(EMAIL_DOMAINS)}", first
    _, make = rng.choice(PHONE_FORMATS)
    return make(rng), first


def build_campaign(count: int, seed: int = 42, name: str = "Spring sale 2025") -> Campaign:
    """``count`` logs; the trouble recipients are a few per cent, spread through the campaign."""
    rng = random.Random(seed)
    campaign = Campaign(name)
    seen: dict[str, list[str]] = {c: [] for c in CHANNEL_MIX}
    for n in range(count):
        priority = _pick(rng, PRIORITY_MIX)
        u = rng.random()
        for share, channel, make in TROUBLE:
            if u < share:
                recipient = make(rng, n)
                campaign.logs.append(LogSpec(channel, recipient, priority, _payload(rng, channel, "there")))
                break
            u -= share
        else:
            channel = _pick(rng, CHANNEL_MIX)
            if seen[channel] and rng.random() < REPEAT_SHARE:
                recipient, first = rng.choice(seen[channel]), "again"
            else:
                recipient, first = _recipient(rng, channel, n)
                seen[channel].append(recipient)
            campaign.logs.append(LogSpec(channel, recipient, priority, _payload(rng, channel, first)))
    return campaign


CREATE_CAMPAIGN_SQL = """
INSERT INTO campaigns (tenant, name, status, total_count) VALUES ($1, $2, 'RUNNING', $3) RETURNING id
"""

INSERT_LOGS_SQL = """
INSERT INTO communication_logs (tenant, campaign_id, channel, recipient, payload, priority, max_attempts,
                                idempotency_key)
SELECT $1, $2, ch, r, p, pr, $3, $4 || '-' || k
FROM unnest($5::text[], $6::text[], $7::jsonb[], $8::smallint[], $9::int[]) AS x(ch, r, p, pr, k)
"""


async def create_campaign(pool: asyncpg.Pool, campaign: Campaign) -> int:
    campaign_id: int = await pool.fetchval(CREATE_CAMPAIGN_SQL, TENANT, campaign.name, len(campaign.logs))
    return campaign_id


def batches(count: int, statements: int = 5, minimum: int = 500) -> list[range]:
    """Split ``count`` rows into a few statements (at most ``statements`` unless they get tiny)."""
    size = max(minimum, math.ceil(count / statements))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


async def insert_logs(
    pool: asyncpg.Pool,
    campaign_id: int,
    logs: Sequence[LogSpec],
    max_attempts: int,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Insert ``logs`` PENDING, one statement (and transaction) per batch; ``on_batch(rows)`` after each."""
    prefix = f"campaign-{campaign_id}"
    for part in batches(len(logs)):
        chunk = [logs[i] for i in part]
        await pool.execute(
            INSERT_LOGS_SQL,
            TENANT,
            campaign_id,
            max_attempts,
            prefix,
            [x.channel for x in chunk],
            [x.recipient for x in chunk],
            [x.payload for x in chunk],
            [x.priority for x in chunk],
            list(part),
        )
        if on_batch is not None:
            on_batch(len(chunk))
