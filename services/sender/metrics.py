"""The sender's own metrics (the pipeline's are in shared/runtime/metrics.py); see docs/metrics.md."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CIRCUIT_STATE = Gauge(
    "switchboard_circuit_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open", ["provider"]
)
CIRCUIT_TRANSITIONS = Counter(
    "switchboard_circuit_transitions_total",
    "Circuit breaker state changes seen by this replica (source: local or peer)",
    ["provider", "state", "source"],
)
FALLBACKS = Counter(
    "switchboard_fallbacks_total",
    "Attempts sent to other than the first provider in line",
    ["channel", "reason"],
)
LOCAL_REFUSALS = Counter(
    "switchboard_local_refusals_total",
    "Attempts no provider was called for (every one open or saturated)",
    ["code"],
)
STALE_TOKENS = Counter(
    "switchboard_rate_limit_stale_tokens_total",
    "Rate-limit tokens dropped because the sender could not use them within their lease",
)
PROVIDER_BATCH_SIZE = Histogram(
    "switchboard_provider_batch_size",
    "Messages per provider request (bulk APIs; 1 for single sends)",
    ["provider"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
IN_DOUBT = Counter(
    "switchboard_in_doubt_total",
    "Attempts on providers without idempotency keys that may have been sent already, by what was done:"
    " held (the log is IN_DOUBT for an operator), resent (in_doubt: resend), skipped (a stale copy"
    " whose outcome was applied)",
    ["provider", "resolution"],
)
STALE_DISPATCHES = Counter(
    "switchboard_stale_dispatches_total",
    "Dispatch copies of an attempt whose outcome was applied already: acked, no provider called",
)
