-- Delivery reports already taken (services/receipts/replay.py), shared by every receipts replica so
-- that a report played again to another replica, or after a restart, is refused as well.
--   report_id   sha256 of the report's verified signature (HMAC over everything the report says)
--   seen_at     when a replica claimed it; rows older than the replay window are pruned in batches
--   published   false while the claiming replica publishes it (a crashed claim is taken over later)
CREATE TABLE receipt_reports (
    provider    text        NOT NULL,
    report_id   bytea       NOT NULL CHECK (length(report_id) = 32),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    published   boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (provider, report_id)
);
-- The prune: the oldest first.
CREATE INDEX receipt_reports_seen_idx ON receipt_reports (seen_at);
