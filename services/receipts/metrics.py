"""The receipts receiver's metrics; documented in docs/metrics.md."""

from __future__ import annotations

from prometheus_client import Counter

RECEIPTS = Counter(
    "switchboard_receipts_total",
    "Delivery reports received, by format and result",
    ["format", "result"],
)
