"""The operator's panels, from raw rows to what the page shows: pure functions, no I/O.

Providers (calls, error rate, latency, breaker state), lanes (the shard queues of each exchange, with
their depth and consumers), campaigns (progress and ETA), dead-lettered logs by reason with the
command that requeues them, the processes connected to the broker or PostgreSQL, and one message's timeline.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from services.dashboard.snapshot import QueueDepth, iso
from services.dlq.entries import DlqEntry, EntryKind
from shared.core.recipients import recipient_hash

_SHARD = re.compile(r"^(?P<lane>.+)\.(?P<shard>\d+)$")
_CONNECTION_NAME = re.compile(r"^(?P<process>[a-z_]+)-(?P<host>.+)-(?P<pid>\d+)$")
TERMINAL = ("SENT", "DELIVERED", "FAILED", "BOUNCED", "CANCELLED")


def providers(
    rows: Iterable[Mapping[str, Any]], circuits: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """Attempts per provider over the window -> calls, error rate, latency and the breaker's state."""
    states = {str(c["provider"]): str(c["state"]) for c in circuits or []}
    result: dict[str, dict[str, Any]] = {}
    for row in rows:
        calls = int(row["calls"])
        errors = int(row["errors"])
        name = str(row["provider"])
        result[name] = {
            "provider": name,
            "calls": calls,
            "errors": errors,
            "error_rate": round(errors / calls, 4) if calls else None,
            "latency_p50_ms": _round(row["p50_ms"]),
            "latency_p95_ms": _round(row["p95_ms"]),
            "state": states.get(name, "unknown" if circuits is not None else "n/a"),
        }
    for name, state in states.items():  # a provider the breaker knows but nobody called in the window
        result.setdefault(
            name,
            {
                "provider": name,
                "calls": 0,
                "errors": 0,
                "error_rate": None,
                "latency_p50_ms": None,
                "latency_p95_ms": None,
                "state": state,
            },
        )
    return sorted(result.values(), key=lambda p: p["provider"])


def lanes(depths: Iterable[QueueDepth]) -> list[dict[str, Any]]:
    """Shard queues (``<lane>.<n>``) grouped by lane: depth, consumers, shards nobody consumes."""
    grouped: dict[str, dict[str, Any]] = {}
    for depth in depths:
        match = _SHARD.match(depth.name)
        if match is None:
            continue
        lane = grouped.setdefault(
            match["lane"],
            {"lane": match["lane"], "shards": 0, "ready": 0, "unacked": 0, "consumers": 0, "unconsumed": []},
        )
        lane["shards"] += 1
        lane["ready"] += depth.ready
        lane["unacked"] += depth.unacked
        lane["consumers"] += depth.consumers
        if depth.consumers == 0:
            lane["unconsumed"].append(depth.name)
    return sorted(grouped.values(), key=lambda lane: lane["lane"])


def campaigns(
    rows: Iterable[Mapping[str, Any]], finished_last_minute: Mapping[int, int]
) -> list[dict[str, Any]]:
    """Campaign rows with counters -> progress and an ETA from the last minute's rate."""
    result = []
    for row in rows:
        total = int(row["total_count"] or 0)
        done = min(
            int(row["sent_count"] or 0) + int(row["failed_count"] or 0) + int(row["bounced_count"] or 0),
            total,
        )
        rate = finished_last_minute.get(int(row["id"]), 0) / 60
        remaining = total - done
        eta_s = round(remaining / rate) if rate > 0 and remaining > 0 else (0 if remaining == 0 else None)
        result.append(
            {
                "id": int(row["id"]),
                "name": str(row["name"]),
                "tenant": str(row["tenant"]),
                "status": str(row["status"]),
                "total": total,
                "done": done,
                "sent": int(row["sent_count"] or 0),
                "failed": int(row["failed_count"] or 0) + int(row["bounced_count"] or 0),
                "progress": round(done / total, 4) if total else None,
                "rate_per_s": round(rate, 2),
                "eta_s": eta_s,
            }
        )
    return result


def requeue_command(reason: str, error_code: str | None) -> str:
    parts = ["switchboard", "dlq", "requeue", "--reason", reason]
    if error_code:
        parts += ["--error-code", error_code]
    return shlex.join([*parts, "--dry-run"])


def inspect_command(reason: str) -> str:
    """Poison cannot be requeued (nothing valid to send): the command that lists it, to export or purge."""
    return shlex.join(["switchboard", "dlq", "list", "--kind", EntryKind.POISON.value, "--reason", reason])


def dead_letter_reasons(entries: Iterable[DlqEntry]) -> list[dict[str, Any]]:
    """DLQ messages grouped by kind, reason and error code, each with the command that requeues them
    (dead letters) or lists them (poison)."""
    groups: dict[tuple[str, str, str | None, str | None], dict[str, Any]] = {}
    for entry in entries:
        key = (entry.kind.value, entry.reason, entry.error_code, entry.status)
        group = groups.get(key)
        if group is None:
            poison = entry.kind is EntryKind.POISON
            group = groups[key] = {
                "kind": entry.kind.value,
                "reason": entry.reason,
                "error_code": entry.error_code,
                "status": entry.status or "poison",
                "count": 0,
                "latest": None,
                "command": inspect_command(entry.reason)
                if poison
                else requeue_command(entry.reason, entry.error_code),
            }
        group["count"] += 1
        when = iso(entry.dead_lettered_at)
        if when is not None and (group["latest"] is None or when > group["latest"]):
            group["latest"] = when
    return sorted(groups.values(), key=lambda r: (-r["count"], r["reason"], r["error_code"] or ""))


def processes(
    connections: Iterable[Mapping[str, Any]] | None, sessions: Iterable[Mapping[str, Any]] | None
) -> list[dict[str, Any]] | None:
    """Broker connections (management API) and PostgreSQL sessions (``pg_stat_activity``) -> one row
    per process, both named ``<process>-<host>-<pid>``; ``None`` when neither source answered.

    A process on both is one row. PostgreSQL keeps 63 bytes of a name (shared/runtime/identity.py shortens the
    host), so a host that is a prefix of the other's counts as the same. Broker connections without
    such a name are shown as ``unnamed``; database sessions without one (psql, other tools) are left out.
    """
    if connections is None and sessions is None:
        return None
    rows: list[dict[str, Any]] = []

    def row_for(process: str, host: str, pid: int | None) -> dict[str, Any]:
        for row in rows:
            same_host = row["host"].startswith(host) or host.startswith(row["host"])
            if pid is not None and (row["process"], row["pid"]) == (process, pid) and same_host:
                row["host"] = max(row["host"], host, key=len)
                return row
        row = {
            "process": process,
            "host": host,
            "pid": pid,
            "name": "",
            "user": None,
            "broker_connections": 0,
            "channels": 0,
            "state": None,
            "connected_at": None,
            "database_connections": 0,
            "database_since": None,
        }
        rows.append(row)
        return row

    for connection in connections or []:
        properties = connection.get("client_properties") or {}
        name = str(properties.get("connection_name") or connection.get("name") or "")
        match = _CONNECTION_NAME.match(name)
        if match:
            row = row_for(match["process"], match["host"], int(match["pid"]))
        else:
            row = row_for("unnamed", str(connection.get("peer_host") or ""), None)
        row["name"] = row["name"] or name
        row["user"] = row["user"] or connection.get("user")
        row["broker_connections"] += 1
        row["channels"] += int(connection.get("channels") or 0)
        row["state"] = connection.get("state") or row["state"]
        row["connected_at"] = row["connected_at"] or connection.get("connected_at")
    for session in sessions or []:
        match = _CONNECTION_NAME.match(str(session["name"] or ""))
        if match is None:
            continue
        row = row_for(match["process"], match["host"], int(match["pid"]))
        row["name"] = row["name"] or str(session["name"])
        row["database_connections"] += int(session["connections"])
        row["database_since"] = iso(session["since"])
    return sorted(rows, key=lambda p: (p["process"], p["host"], p["pid"] or 0))


def timeline(
    log: Mapping[str, Any], attempts: Iterable[Mapping[str, Any]], receipts: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """One log and what happened to it, in time order (recipient only as its hash)."""
    events: list[dict[str, Any]] = [
        {"at": iso(log["created_at"]), "event": "created", "detail": f"priority {log['priority']}"}
    ]
    for attempt in attempts:
        outcome = str(attempt["outcome"])
        detail = " ".join(
            part
            for part in (
                f"via {attempt['provider']}" if attempt["provider"] else "no provider",
                f"{attempt['error_code']}" if attempt["error_code"] else "",
                f"{float(attempt['latency_ms']):.0f} ms" if attempt["latency_ms"] is not None else "",
                f"(fallback: {attempt['fallback_reason']})" if attempt.get("fallback_reason") else "",
            )
            if part
        )
        events.append(
            {
                "at": iso(attempt["finished_at"]),
                "event": f"attempt {attempt['attempt']}: {outcome}",
                "detail": detail,
            }
        )
    for receipt in receipts:
        events.append(
            {
                "at": iso(receipt["received_at"]),
                "event": f"receipt: {str(receipt['status']).lower()}",
                "detail": f"from {receipt['provider']}" if receipt["provider"] else "",
            }
        )
    if log["status"] in TERMINAL:
        events.append(
            {
                "at": iso(log["updated_at"]),
                "event": f"now {log['status']}",
                "detail": log["last_error_code"] or "",
            }
        )
    events.sort(key=lambda e: e["at"] or "")
    return {
        "log_id": int(log["id"]),
        "tenant": str(log["tenant"]),
        "campaign_id": log["campaign_id"],
        "channel": str(log["channel"]),
        "recipient": recipient_hash(str(log["recipient"])),
        "status": str(log["status"]),
        "attempts": int(log["attempts"]),
        "max_attempts": int(log["max_attempts"]),
        "provider": log["provider"],
        "last_error": log["last_error"],
        "events": events,
    }


def recipient_keys(text: str) -> list[str]:
    """The ``recipient_key`` spellings a typed recipient may have (migration 0004's rule, both ways)."""
    stripped = text.strip()
    phone = re.sub(r"^00", "+", re.sub(r"[\s().-]", "", stripped))
    return list(dict.fromkeys([stripped.lower(), phone]))


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)
