"""Turning raw rows and queue listings into what the page shows: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from shared.bus.topology import DEAD_LETTER_QUEUE, DISPATCH, RESPONSES
from shared.core.circuit import CircuitState
from shared.core.models import Status
from shared.core.recipients import recipient_hash

STATUSES = [s.value for s in Status]
SUCCEEDED = (Status.SENT.value, Status.DELIVERED.value)
CIRCUIT_METRIC = "switchboard_circuit_state"
# What a circuit breaker's state is called, whatever a table or the metric encodes it as.
CIRCUIT_STATES: dict[object, str] = {
    **{state.value: state.name.lower() for state in CircuitState},
    **{state.name.lower(): state.name.lower() for state in CircuitState},
    "half-open": "half_open",
    "halfopen": "half_open",
}


@dataclass(frozen=True, slots=True)
class QueueDepth:
    name: str
    ready: int
    unacked: int
    consumers: int
    group: str


@dataclass(frozen=True, slots=True)
class Throughput:
    bucket_s: int
    per_second: float  # finished logs per second over the last minute
    sent_last_minute: int
    failed_last_minute: int
    series: list[int] = field(default_factory=list)  # finished logs per bucket, oldest first


def status_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``(channel, status, n)`` rows -> totals by status, by channel and status, and the grand total."""
    by_status = dict.fromkeys(STATUSES, 0)
    by_channel: dict[str, dict[str, int]] = {}
    for row in rows:
        status, channel, n = str(row["status"]), str(row["channel"]), int(row["n"])
        by_status[status] = by_status.get(status, 0) + n
        channel_counts = by_channel.setdefault(channel, dict.fromkeys(STATUSES, 0))
        channel_counts[status] = channel_counts.get(status, 0) + n
    return {
        "by_status": by_status,
        "by_channel": dict(sorted(by_channel.items())),
        "total": sum(by_status.values()),
        "open": by_status[Status.PENDING.value] + by_status[Status.PROCESSING.value],
    }


def throughput(rows: Iterable[Mapping[str, Any]], window_s: int, bucket_s: int) -> Throughput:
    """``(bucket, status, n)`` rows, bucket 0 being the newest ``bucket_s`` seconds -> a rate and a series."""
    buckets = max(window_s // bucket_s, 1)
    series = [0] * buckets
    recent = max(60 // bucket_s, 1)
    sent = failed = 0
    for row in rows:
        age = int(row["bucket"])
        if not 0 <= age < buckets:
            continue
        n = int(row["n"])
        series[buckets - 1 - age] += n
        if age < recent:
            if row["status"] in SUCCEEDED:
                sent += n
            else:
                failed += n
    seconds = recent * bucket_s
    return Throughput(bucket_s, round((sent + failed) / seconds, 2), sent, failed, series)


def queue_group(name: str) -> str:
    if name == DEAD_LETTER_QUEUE:
        return "dlq"
    for exchange in (DISPATCH, RESPONSES):
        if name.startswith(exchange + "."):
            return exchange
    return "other"


def queue_depths(queues: Iterable[Mapping[str, Any]]) -> list[QueueDepth]:
    """Management API queue objects -> depths, shards in numeric order, the DLQ last."""
    depths = [
        QueueDepth(
            name=str(q["name"]),
            ready=int(q.get("messages_ready") or 0),
            unacked=int(q.get("messages_unacknowledged") or 0),
            consumers=int(q.get("consumers") or 0),
            group=queue_group(str(q["name"])),
        )
        for q in queues
    ]
    order = {DISPATCH: 0, RESPONSES: 1, "other": 2, "dlq": 3}

    def key(d: QueueDepth) -> tuple[int, str, int, str]:
        lane, _, suffix = d.name.removeprefix(d.group + ".").rpartition(".")
        # urgent before bulk, then the shards in numeric order
        return (
            order[d.group],
            "" if lane == "urgent" else lane,
            int(suffix) if suffix.isdigit() else 0,
            d.name,
        )

    return sorted(depths, key=key)


def queue_totals(depths: Sequence[QueueDepth]) -> dict[str, int]:
    totals = {DISPATCH: 0, RESPONSES: 0, "dlq": 0}
    for d in depths:
        if d.group in totals:
            totals[d.group] += d.ready + d.unacked
    return totals


def circuit_state(raw: Any) -> str:
    key = raw.strip().lower() if isinstance(raw, str) else raw
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    return CIRCUIT_STATES.get(key, str(raw)) if key is not None else "unknown"


def circuits(rows: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Rows of a ``provider_circuits`` table, whatever its exact columns; ``None`` when there is none."""
    if rows is None:
        return None
    result = []
    for row in rows:
        provider = row.get("provider") or row.get("name") or row.get("provider_name")
        if provider is None:
            continue
        state = row.get("state", row.get("status"))
        changed = row.get("updated_at") or row.get("changed_at") or row.get("opened_at")
        result.append({"provider": str(provider), "state": circuit_state(state), "since": iso(changed)})
    return sorted(result, key=lambda c: c["provider"])


def circuits_from_metrics(text: str) -> list[dict[str, Any]]:
    """A sender's Prometheus exposition -> one row per provider from ``switchboard_circuit_state``."""
    rows = [
        {"provider": sample.labels["provider"], "state": sample.value}
        for family in text_string_to_metric_families(text)
        if family.name == CIRCUIT_METRIC
        for sample in family.samples
        if "provider" in sample.labels
    ]
    return circuits(rows) or []


def failures(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Recent FAILED/BOUNCED logs, the recipient replaced by the hash the process logs use."""
    return [
        {
            "log_id": int(r["id"]),
            "channel": r["channel"],
            "recipient": recipient_hash(str(r["recipient"])),
            "status": r["status"],
            "attempts": int(r["attempts"]),
            "provider": r["provider"],
            "error_code": r["last_error_code"],
            "error": (r["last_error"] or "")[:200],
            "at": iso(r["updated_at"]),
        }
        for r in rows
    ]


def iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def as_json(value: QueueDepth | Throughput) -> dict[str, Any]:
    return asdict(value)
