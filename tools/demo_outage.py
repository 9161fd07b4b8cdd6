"""The demo's simulated provider outage: which provider goes down (and which channels fall back where),
taking it down through the mock provider's ``POST /admin/outage`` a few seconds into the delivery, and
what happened meanwhile (where the traffic went, second by second; no log lost or sent twice).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from rich.console import Group
from rich.table import Table
from rich.text import Text

from shared.core.routing import RoutingConfig
from shared.db.routing_store import load_config
from shared.runtime.settings import ProviderChains
from tools.demo_campaign import TENANT
from tools.demo_providers import ProviderWatch
from tools.demo_report import OPEN_STATUSES, _n
from tools.stack import Stack

CHANNEL_ORDER = ("sms", "mms", "whatsapp", "email", "webhook")  # how the demo lists channels


def channel_key(channel: str) -> tuple[int, str]:
    return (CHANNEL_ORDER.index(channel) if channel in CHANNEL_ORDER else len(CHANNEL_ORDER), channel)


@dataclass(frozen=True, slots=True)
class OutagePlan:
    provider: str
    after_s: float  # after the start of the delivery
    seconds: float
    channels: tuple[str, ...]  # the channels whose chain starts with ``provider``: they must fall back
    fallback: str | None  # where they fall back to (the next provider of their chain)


async def routing_config(conn: asyncpg.Connection, settings: ProviderChains) -> RoutingConfig:
    """What the senders route by: the tables, or the settings' chains while no provider is configured."""
    config = await load_config(conn)
    return config if config.providers else RoutingConfig.from_chains(settings.provider_chains)


def provider_order(config: RoutingConfig) -> list[str]:
    """Every provider once, in the order the channels' chains name them."""
    order: dict[str, None] = {}
    for channel in sorted(config.routes, key=channel_key):
        order.update(dict.fromkeys(config.chain(TENANT, channel)))
    order.update(dict.fromkeys(sorted(config.providers)))
    return list(order)


def plan_outage(config: RoutingConfig, provider: str | None, after_s: float, seconds: float) -> OutagePlan:
    """The outage of ``provider`` (default: the first sms provider); ValueError if there is no such one."""
    chains = {channel: config.chain(TENANT, channel) for channel in sorted(config.routes, key=channel_key)}
    if provider is None:
        if not chains.get("sms"):
            raise ValueError("no sms provider is configured: name one with --outage-provider")
        provider = chains["sms"][0]
    if provider not in config.providers:
        known = ", ".join(sorted(config.providers)) or "none"
        raise ValueError(f"unknown provider {provider!r} for --outage-provider (configured: {known})")
    channels = tuple(ch for ch, chain in chains.items() if chain and chain[0] == provider)
    fallback = next((chain[1] for ch, chain in chains.items() if ch in channels and len(chain) > 1), None)
    return OutagePlan(provider, after_s, seconds, channels, fallback)


def describe_plan(plan: OutagePlan) -> str:
    channels = ", ".join(plan.channels)
    if plan.channels and plan.fallback:
        moved = f"{channels} should fall back to {plan.fallback}"
    elif plan.channels:
        moved = f"{channels} has no other provider: retried on it after a backoff"
    else:
        moved = "no channel has it first: nothing should change"
    return f"{plan.provider} down {plan.after_s:g} s into the delivery for {plan.seconds:g} s ({moved})"


@dataclass(slots=True)
class Outage:
    """One outage during the run: taken down once, when due; the wall-clock window for the summary."""

    plan: OutagePlan
    requested_at: datetime | None = None  # just before the request: the window cannot start earlier
    confirmed_at: datetime | None = None  # the provider answered: from here on it is down
    started: float | None = None  # monotonic, at confirmation
    error: str | None = None

    @property
    def ends_at(self) -> datetime | None:
        return self.requested_at + timedelta(seconds=self.plan.seconds) if self.requested_at else None

    async def tick(self, client: httpx.AsyncClient, provider_url: str, elapsed_s: float) -> None:
        """Take the provider down once ``elapsed_s`` (since the delivery started) reaches the plan's."""
        if self.requested_at is not None or elapsed_s < self.plan.after_s:
            return
        self.requested_at = datetime.now(UTC)
        try:
            response = await client.post(
                f"{provider_url}/admin/outage",
                json={"provider": self.plan.provider, "seconds": self.plan.seconds},
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.error = f"POST /admin/outage failed: {exc!r}"
            return
        self.confirmed_at = datetime.now(UTC)
        self.started = time.monotonic()

    def status(self, elapsed_s: float) -> Text:
        plan = self.plan
        if self.error is not None:
            return Text(f"outage of {plan.provider}: {self.error}", style="bold red")
        if self.started is None:
            return Text(f"outage: {plan.provider} goes down in {max(plan.after_s - elapsed_s, 0):.0f} s")
        down_for = time.monotonic() - self.started
        if down_for < plan.seconds:
            return Text(
                f"outage: {plan.provider} DOWN for {plan.seconds - down_for:.0f} s more", style="bold red"
            )
        return Text(f"outage: {plan.provider} back after {plan.seconds:g} s", style="green")


@dataclass(slots=True)
class Watchers:
    """What the live view shows besides the campaign: the providers, and the outage it brings about."""

    providers: ProviderWatch
    outage: Outage | None
    started: float = field(default_factory=time.monotonic)  # when the delivery started

    @classmethod
    def of(cls, stack: Stack, providers: list[str], plan: OutagePlan | None) -> Watchers:
        senders = {p.name: stack.url(p.name) for p in stack.processes.values() if p.service == "sender"}
        return cls(ProviderWatch(senders, list(providers)), Outage(plan) if plan else None)

    def lines(self) -> list[Text]:
        watched = self.outage.plan.provider if self.outage else None
        lines = self.providers.lines(watched)
        if self.outage is not None:
            lines.append(self.outage.status(time.monotonic() - self.started))
        return lines


# ---------------------------------------------------------------- what happened

# Attempts of the channels that fall back, which certainly reached the provider while it was down:
# started (finished_at - latency) after it confirmed the outage, finished before the outage ended.
WINDOW_SQL = """
SELECT coalesce(a.provider, '') AS provider,
       count(*) FILTER (WHERE a.outcome = 'success' AND NOT a.replay) AS sent,
       count(*) AS attempts
FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id
WHERE l.campaign_id = $1 AND l.channel = ANY($2::text[])
  AND a.finished_at - make_interval(secs => a.latency_ms / 1000) >= $3 AND a.finished_at <= $4
GROUP BY 1
"""
# Sends of those channels per provider and second, t = 0 when the outage began.
TIMELINE_SQL = """
SELECT floor(extract(epoch FROM a.finished_at - $3::timestamptz))::int AS t, a.provider, count(*) AS n
FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id
WHERE l.campaign_id = $1 AND l.channel = ANY($2::text[]) AND a.outcome = 'success'
  AND a.finished_at >= $3::timestamptz - interval '1 second' AND a.finished_at < $4
GROUP BY 1, 2
"""
# The logs of those channels with an attempt during the outage, and how they ended.
CAUGHT_SQL = """
SELECT DISTINCT l.id, l.status
FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id
WHERE l.campaign_id = $1 AND l.channel = ANY($2::text[]) AND a.finished_at BETWEEN $3 AND $4
"""


@dataclass(slots=True)
class OutageReport:
    provider: str
    fallback: str | None
    channels: list[str]
    seconds: float
    started_after_s: float | None  # since the delivery started; None: it never started
    window: dict[str, dict[str, int]] = field(default_factory=dict)  # provider -> {sent, attempts}
    timeline: dict[int, dict[str, int]] = field(default_factory=dict)  # second -> provider -> sent
    caught: int = 0  # logs with an attempt during the outage
    caught_open: int = 0  # ... still PENDING or PROCESSING at the end
    caught_sent_twice: int = 0  # ... accepted by the provider more than once (ledger)
    caught_sent_unrecorded: int = 0  # ... SENT without exactly one accepted send in the ledger
    error: str | None = None

    def sent_in_window(self, provider: str | None) -> int:
        return self.window.get(provider or "", {}).get("sent", 0)

    def checks(self) -> dict[str, bool]:
        if self.started_after_s is None:  # the campaign was done first, or the provider refused
            return {f"outage: {self.provider} taken down": False} if self.error else {}
        if not self.channels:
            return {}
        channels = ", ".join(self.channels)
        if self.fallback is not None:
            moved = f"outage: {channels} moved to {self.fallback} while {self.provider} was down"
            checks = {moved: self.sent_in_window(self.provider) == 0 < self.sent_in_window(self.fallback)}
        else:
            checks = {
                f"outage: nothing sent via {self.provider} while down": not self.sent_in_window(self.provider)
            }
        checks[f"outage: its {_n(self.caught)} {channels} logs all terminal, each sent at most once"] = (
            self.caught_open == 0 and self.caught_sent_twice == 0 and self.caught_sent_unrecorded == 0
        )
        return checks

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "fallback": self.fallback,
            "channels": self.channels,
            "seconds": self.seconds,
            "started_after_s": self.started_after_s,
            "window": self.window,
            "timeline": {str(t): sent for t, sent in sorted(self.timeline.items())},
            "caught": self.caught,
            "caught_open": self.caught_open,
            "caught_sent_twice": self.caught_sent_twice,
            "caught_sent_unrecorded": self.caught_sent_unrecorded,
            "error": self.error,
        }


async def ledger_sends(client: httpx.AsyncClient, provider_url: str) -> Counter[int]:
    """Accepted (not replayed) sends per log id, from the mock provider's ledger."""
    response = await client.get(f"{provider_url}/ledger")
    response.raise_for_status()
    return Counter(int(r["log_id"]) for r in response.json() if not r["replay"] and r["log_id"] is not None)


async def outage_report(
    pool: asyncpg.Pool, campaign_id: int, outage: Outage, delivery_started: float, provider_url: str
) -> OutageReport:
    plan = outage.plan
    report = OutageReport(
        plan.provider,
        plan.fallback,
        list(plan.channels),
        plan.seconds,
        None if outage.started is None else round(outage.started - delivery_started, 1),
        error=outage.error,
    )
    start, confirmed, end = outage.requested_at, outage.confirmed_at, outage.ends_at
    if start is None or confirmed is None or end is None:
        return report
    channels = list(plan.channels)
    for r in await pool.fetch(WINDOW_SQL, campaign_id, channels, confirmed, end):
        report.window[r["provider"]] = {"sent": r["sent"], "attempts": r["attempts"]}
    until = end + timedelta(seconds=2)
    for r in await pool.fetch(TIMELINE_SQL, campaign_id, channels, start, until):
        report.timeline.setdefault(r["t"], {})[r["provider"]] = r["n"]
    caught = await pool.fetch(CAUGHT_SQL, campaign_id, channels, start, end)
    report.caught = len(caught)
    report.caught_open = sum(1 for r in caught if r["status"] in OPEN_STATUSES)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            sends = await ledger_sends(client, provider_url)
    except httpx.HTTPError as exc:
        report.error = f"could not read the provider's ledger: {exc!r}"
        report.caught_sent_twice = report.caught_sent_unrecorded = report.caught
        return report
    report.caught_sent_twice = sum(1 for r in caught if sends[r["id"]] > 1)
    report.caught_sent_unrecorded = sum(
        1 for r in caught if r["status"] in ("SENT", "DELIVERED") and sends[r["id"]] != 1
    )
    return report


def outage_view(report: OutageReport) -> Group:
    """The outage's window and a timeline: sends of the channels concerned per provider and second."""
    if report.started_after_s is None:
        why = report.error or "the campaign was done before it was due"
        return Group(Text(f"Outage of {report.provider}: did not happen ({why})", style="yellow"))
    channels = "/".join(report.channels) or "-"
    head = Text(
        f"Outage: {report.provider} down {report.started_after_s:g} s into the delivery for "
        f"{report.seconds:g} s. While it was down, {channels} messages sent: "
        f"{_n(report.sent_in_window(report.provider))} via {report.provider}"
        + (
            f", {_n(report.sent_in_window(report.fallback))} via {report.fallback}" if report.fallback else ""
        ),
        style="bold",
    )
    note = Text(
        f"{channels} sent per second, t = 0 when {report.provider} went down (red: down)", style="dim"
    )
    seconds = list(range(-1, math.ceil(report.seconds) + 2))
    table = Table()
    table.add_column("provider", no_wrap=True)
    for t in seconds:
        table.add_column(str(t), justify="right", style="red" if 0 <= t < report.seconds else None)
    providers = [p for p in (report.provider, report.fallback) if p]
    providers += sorted({p for sent in report.timeline.values() for p in sent} - set(providers))
    for provider in providers:
        table.add_row(provider, *(str(report.timeline.get(t, {}).get(provider, 0)) for t in seconds))
    return Group(head, note, table)
