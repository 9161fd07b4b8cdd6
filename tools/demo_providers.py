"""The demo's view of the providers: calls per second and circuit breakers from the senders' ``/metrics``
while it runs; at the end, the attempts per provider with their fallback reasons (``delivery_attempts``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table
from rich.text import Text

from tools.demo_report import Rate, _n

OUTCOMES_SAMPLE = "switchboard_outcomes_total"  # published by each sender, per provider and outcome
CIRCUIT_SAMPLE = "switchboard_circuit_state"  # per provider: 0 closed, 1 half-open, 2 open
CIRCUIT_NAMES = {0: "closed", 1: "half-open", 2: "OPEN"}
NO_PROVIDER = "(none)"  # attempts for which no provider was called (refused before, every circuit open)


def parse_metrics(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """A sender's Prometheus exposition -> (provider calls by provider, circuit state by provider)."""
    calls: dict[str, int] = {}
    circuits: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            provider = sample.labels.get("provider")
            if provider is None:
                continue
            if sample.name == OUTCOMES_SAMPLE and provider != "none":
                calls[provider] = calls.get(provider, 0) + int(sample.value)
            elif sample.name == CIRCUIT_SAMPLE:
                circuits[provider] = int(sample.value)
    return calls, circuits


@dataclass(slots=True)
class ProviderWatch:
    """Calls per second per provider (over the senders) and each sender's circuit state, for the live view."""

    senders: dict[str, str]  # sender name -> base URL of its metrics
    providers: list[str]  # in the order to show them (routing order)
    rates: dict[str, Rate] = field(default_factory=dict)
    per_second: dict[str, float] = field(default_factory=dict)
    # provider -> sender name -> state name ("?" while a sender's metrics cannot be read)
    circuits: dict[str, dict[str, str]] = field(default_factory=dict)

    async def refresh(self, client: httpx.AsyncClient) -> None:
        texts = await asyncio.gather(*(self._metrics(client, url) for url in self.senders.values()))
        calls: dict[str, int] = {}
        circuits: dict[str, dict[str, str]] = {}
        for sender, text in zip(self.senders, texts, strict=True):
            sender_calls, sender_circuits = parse_metrics(text) if text is not None else ({}, {})
            for provider, n in sender_calls.items():
                calls[provider] = calls.get(provider, 0) + n
            for provider in {*self.providers, *sender_circuits}:
                state = "?" if text is None else CIRCUIT_NAMES.get(sender_circuits.get(provider, 0), "?")
                circuits.setdefault(provider, {})[sender] = state
        for provider in calls.keys() - set(self.providers):
            self.providers.append(provider)
        for provider in self.providers:
            rate = self.rates.setdefault(provider, Rate())
            self.per_second[provider] = rate.add(calls.get(provider, 0))
        self.circuits = circuits

    @staticmethod
    async def _metrics(client: httpx.AsyncClient, url: str) -> str | None:
        try:
            response = await client.get(f"{url}/metrics")
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return response.text

    def lines(self, watched: str | None = None) -> list[Text]:
        """``calls/s: a 120 · b 0 ...`` and ``circuits (sender-0/sender-1): a OPEN/OPEN · others closed``;
        a circuit is named when it is not closed in every sender, and always for ``watched``."""
        calls = Text("calls/s: ")
        circuits = Text(f"circuits ({'/'.join(self.senders)}): ")
        named = 0
        for i, provider in enumerate(self.providers):
            if i:
                calls.append(" · ", style="dim")
            rate = self.per_second.get(provider, 0.0)
            calls.append(f"{provider} {rate:,.0f}", style="bold" if rate >= 1 else "dim")
            states = self.circuits.get(provider, {})
            if states and (provider == watched or any(s != "closed" for s in states.values())):
                shown = "/".join(states.values())
                style = "bold red" if "OPEN" in shown else "yellow" if "half-open" in shown else "green"
                circuits.append(" · " if named else "", style="dim")
                circuits.append(f"{provider} {shown}", style=style)
                named += 1
        circuits.append(" · others closed" if named else "all closed", style="dim")
        return [calls, circuits]


# ---------------------------------------------------------------- the summary

PROVIDERS_SQL = """
SELECT coalesce(a.provider, '') AS provider, a.outcome, coalesce(a.fallback_reason, '') AS reason,
       count(*) AS n
FROM delivery_attempts a JOIN communication_logs l ON l.id = a.log_id
WHERE l.campaign_id = $1
GROUP BY 1, 2, 3
"""


@dataclass(slots=True)
class ProviderRow:
    """The attempts of one campaign on one provider, by outcome and by fallback reason."""

    provider: str
    attempts: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # success, transient, recoverable, permanent
    fallback: dict[str, int] = field(default_factory=dict)  # fallback_reason -> attempts
    fallback_sent: dict[str, int] = field(default_factory=dict)  # fallback_reason -> successful ones

    @property
    def sent(self) -> int:
        return self.outcomes.get("success", 0)


async def provider_rows(pool: asyncpg.Pool, campaign_id: int, order: Sequence[str]) -> list[ProviderRow]:
    """One row per provider that had an attempt, in ``order`` (routing order), unknown ones after."""
    rows: dict[str, ProviderRow] = {}
    for r in await pool.fetch(PROVIDERS_SQL, campaign_id):
        row = rows.setdefault(r["provider"] or NO_PROVIDER, ProviderRow(r["provider"] or NO_PROVIDER))
        row.attempts += r["n"]
        row.outcomes[r["outcome"]] = row.outcomes.get(r["outcome"], 0) + r["n"]
        if r["reason"]:
            row.fallback[r["reason"]] = row.fallback.get(r["reason"], 0) + r["n"]
            if r["outcome"] == "success":
                row.fallback_sent[r["reason"]] = row.fallback_sent.get(r["reason"], 0) + r["n"]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(rows.values(), key=lambda r: (r.provider == NO_PROVIDER, rank.get(r.provider, len(rank))))


def fallback_totals(rows: Sequence[ProviderRow]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in rows:
        for reason, n in row.fallback.items():
            totals[reason] = totals.get(reason, 0) + n
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def provider_table(rows: Sequence[ProviderRow]) -> Table:
    """Attempts per provider by outcome (``(none)``: no provider was called)."""
    table = Table(title="Per provider (attempts by outcome)", title_justify="left", show_edge=False)
    table.add_column("provider", no_wrap=True)
    for name, style in (
        ("attempts", "bold"),
        ("sent", "green"),
        ("transient", "yellow"),
        ("recoverable", "yellow"),
        ("permanent", "red"),
        ("fell back", "cyan"),
    ):
        table.add_column(name, justify="right", style=style)
    for row in rows:
        table.add_row(
            row.provider,
            _n(row.attempts),
            _n(row.sent),
            *(_n(row.outcomes.get(k, 0)) for k in ("transient", "recoverable", "permanent")),
            _n(sum(row.fallback.values())),
        )
    return table


def fallback_table(rows: Sequence[ProviderRow]) -> Table | Text:
    """Attempts by ``delivery_attempts.fallback_reason`` and the provider they went to instead."""
    reasons = [(reason, row) for row in rows for reason in row.fallback]
    if not reasons:
        return Text("Fallback reasons: none (every attempt went to the first provider in line)", style="dim")
    table = Table(title="Fallback reasons (delivery_attempts.fallback_reason)", title_justify="left")
    table.add_column("reason", no_wrap=True)
    table.add_column("to provider", no_wrap=True)
    table.add_column("attempts", justify="right", style="bold")
    table.add_column("sent", justify="right", style="green")
    for reason, row in sorted(reasons, key=lambda item: -item[1].fallback[item[0]]):
        table.add_row(reason, row.provider, _n(row.fallback[reason]), _n(row.fallback_sent.get(reason, 0)))
    return table
