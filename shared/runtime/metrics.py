"""Prometheus metrics shared by every process (names documented in README.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

MESSAGES_IN = Counter("switchboard_messages_in_total", "Messages taken in by a stage", ["stage"])
MESSAGES_OUT = Counter("switchboard_messages_out_total", "Messages handed on by a stage", ["stage"])
CLAIM_BATCH = Histogram(
    "switchboard_claim_batch_size", "Rows claimed per poll", buckets=(0, 1, 10, 50, 100, 250, 500, 1000, 5000)
)
RECLAIMED = Counter(
    "switchboard_leases_reclaimed_total",
    "PROCESSING rows re-published after their lease ran out, by the lane whose cycle reclaimed them",
    ["lane"],
)
BACKPRESSURE = Gauge("switchboard_backpressure", "1 while the poller pauses because dispatch queues are deep")
LANE_DRAIN_RATE = Gauge(
    "switchboard_lane_drain_rate",
    "Dispatch messages consumed per second in a lane, as the poller measures it",
    ["lane"],
)
LANE_BACKLOG_ALLOWED = Gauge(
    "switchboard_lane_backlog_allowed",
    "Messages the poller lets wait in a lane's queues (its time budget)",
    ["lane"],
)
QUEUE_DEPTH = Gauge("switchboard_queue_depth", "Messages ready in a queue", ["queue"])
PROVIDER_LATENCY = Histogram(
    "switchboard_provider_latency_seconds",
    "Provider call latency",
    ["provider", "outcome"],
    buckets=LATENCY_BUCKETS,
)
OUTCOMES = Counter("switchboard_outcomes_total", "Provider outcomes by class", ["provider", "outcome"])
RETRIES = Counter("switchboard_retries_total", "Retries scheduled", ["channel", "reason"])
DEFERRALS = Counter(
    "switchboard_deferrals_total",
    "Logs put back to PENDING by a local refusal, attempt count unchanged (pacing, rate limit, circuits)",
    ["channel", "reason"],
)
CHANNEL_FALLBACKS = Counter(
    "switchboard_channel_fallbacks_total", "Logs moved to a fallback channel", ["channel", "to_channel"]
)
FAILURES = Counter("switchboard_failures_total", "Logs given up on", ["channel", "error_class"])
DEAD_LETTERS = Counter("switchboard_dead_letters_total", "Dead letters published to dlx", ["reason"])
POISON = Counter(
    "switchboard_poison_messages_total", "Unusable messages rejected to the DLQ", ["stage", "error"]
)
END_TO_END = Histogram(
    "switchboard_end_to_end_seconds", "From log creation to SENT", ["channel"], buckets=LATENCY_BUCKETS
)
APPLY_BATCH = Histogram(
    "switchboard_apply_batch_size",
    "Outcomes applied per transaction",
    buckets=(1, 10, 50, 100, 250, 500, 1000),
)
READY = Gauge("switchboard_ready", "1 when the process is connected and taking work")
