-- Issue 14 (in-doubt sends, receipt timeout, attempt visibility) and issue 16 item 9 (attempt metadata).

-- A provider says whether it honours idempotency keys (NULL: what its kind does, shared/routing.py)
-- and what to do with an attempt that may or may not have reached it when it does not: hold the log
-- for an operator (IN_DOUBT, dead letter `in_doubt`) or send it again. A provider whose delivery
-- reports may be late says how long a SENT log may wait for one before it is counted as overdue.
ALTER TABLE providers
    ADD COLUMN idempotency_keys boolean,
    ADD COLUMN in_doubt text NOT NULL DEFAULT 'hold' CHECK (in_doubt IN ('hold', 'resend')),
    ADD COLUMN receipt_timeout_s double precision CHECK (receipt_timeout_s > 0);

-- Attempts started on a provider that does not honour idempotency keys, recorded (one statement per
-- group of messages) before the call. A dispatch of the same attempt that finds its start here was
-- redelivered after a crash or a lease that ran out while the call was in flight: in doubt.
CREATE TABLE attempt_starts (
    log_id           bigint      NOT NULL REFERENCES communication_logs (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    provider         text        NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log_id, attempt)
);
-- The sender's clean-up of starts whose log has long moved on.
CREATE INDEX attempt_starts_time_idx ON attempt_starts (started_at);

-- Per-attempt provider details (status text, segments, region ...; seed 000's AdditionalMetadata).
ALTER TABLE delivery_attempts ADD COLUMN details jsonb;

-- SENT logs waiting for a delivery report, oldest first (the receipt-timeout count).
CREATE INDEX logs_sent_awaiting_receipt_idx ON communication_logs (provider, sent_at) WHERE status = 'SENT';

-- IN_DOUBT: a terminal status (the log is held for an operator), and `in_doubt` as an attempt's outcome;
-- added to the lists the CHECK constraints hold now (whatever other migrations put in them).
DO $$
DECLARE
    item record;
    definition text;
BEGIN
    FOR item IN SELECT * FROM (VALUES
        ('communication_logs', 'communication_logs_status_check', 'IN_DOUBT'),
        ('delivery_attempts', 'delivery_attempts_outcome_check', 'in_doubt')) AS x(tbl, con, val)
    LOOP
        SELECT pg_get_constraintdef(c.oid) INTO definition FROM pg_constraint c
        WHERE c.conname = item.con AND c.conrelid = item.tbl::regclass;
        IF definition IS NULL OR position('ARRAY[' IN definition) = 0 THEN
            RAISE EXCEPTION 'constraint %.% is not a list of values: %', item.tbl, item.con, definition;
        END IF;
        IF position(quote_literal(item.val) IN definition) = 0 THEN
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', item.tbl, item.con);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s', item.tbl, item.con,
                           replace(definition, 'ARRAY[', 'ARRAY[' || quote_literal(item.val) || '::text, '));
        END IF;
    END LOOP;
END $$;
