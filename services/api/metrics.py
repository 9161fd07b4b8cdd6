"""Prometheus metrics of the API process (served at /metrics with the shared ones)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.runtime.metrics import LATENCY_BUCKETS

REQUESTS = Counter("switchboard_api_requests_total", "HTTP requests answered", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "switchboard_api_request_seconds", "HTTP request duration", ["method", "route"], buckets=LATENCY_BUCKETS
)
ACCEPTED = Counter("switchboard_api_messages_accepted_total", "Messages accepted for delivery", ["source"])
AUTH_FAILURES = Counter(
    "switchboard_api_auth_failures_total",
    "Requests refused for a missing, malformed or unknown key",
    ["reason"],
)
AUTH_THROTTLED = Counter("switchboard_api_auth_throttled_total", "Requests refused for too many failed keys")
RATE_LIMITED = Counter("switchboard_api_rate_limited_total", "Requests refused with 429")
PRIORITY_BYPASS = Counter("switchboard_api_priority_bypass_total", "High-priority sends let past the limit")
IDEMPOTENT_REPLAYS = Counter(
    "switchboard_api_idempotent_replays_total", "Responses replayed for a reused key"
)
DB_UNAVAILABLE = Counter("switchboard_api_database_unavailable_total", "Requests answered 503: no database")
CAMPAIGN_RUNS = Counter("switchboard_api_campaign_runs_total", "Campaign runs materialised by the scheduler")
