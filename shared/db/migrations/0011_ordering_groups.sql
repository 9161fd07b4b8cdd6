-- Ordering groups and due times (issue 17; docs/ordering.md).
--
-- Strict order holds within an ordering group, by due time then id:
--   ordering_key    optional, given by the user (like a message group id); scoped to the tenant.
--   ordering_group  what the poller's gate compares: the tenant's ordering_key when given, else the
--                   normalised recipient; an urgent message (priority 0) without a key forms its own
--                   group per recipient, so an OTP never waits behind marketing to the same person.
--   due_at          the log's due time at creation (send_at, or the insert time); next_attempt_at moves
--                   with retries and pauses, due_at never does.

ALTER TABLE communication_logs
    ADD COLUMN ordering_key text CHECK (ordering_key IS NULL OR length(ordering_key) BETWEEN 1 AND 200),
    ADD COLUMN due_at timestamptz NOT NULL DEFAULT now();

-- A generated column cannot read another one (recipient_key), so the normalisation of 0004 is repeated.
ALTER TABLE communication_logs
    ADD COLUMN ordering_group text GENERATED ALWAYS AS (
        CASE
            WHEN ordering_key IS NOT NULL THEN 'key:' || tenant || ':' || ordering_key
            ELSE CASE WHEN priority = 0 THEN 'urgent:' ELSE '' END
                 || CASE WHEN channel = 'email'
                         THEN lower(btrim(recipient))
                         ELSE regexp_replace(regexp_replace(btrim(recipient), '[[:space:]().-]', '', 'g'),
                                             '^00', '+')
                    END
        END) STORED;

-- Open logs of before this migration: the due time they had when created, as far as it is known
-- (a paused log's real due time waits in paused_logs; a retried log's first due time is its creation).
UPDATE communication_logs l
SET due_at = CASE WHEN l.attempts = 0
                  THEN COALESCE((SELECT p.next_attempt_at FROM paused_logs p WHERE p.log_id = l.id),
                                l.next_attempt_at)
                  ELSE l.created_at END
WHERE l.status IN ('PENDING', 'PROCESSING');

CREATE FUNCTION communication_logs_set_due_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_attempt_at < 'infinity' THEN
        NEW.due_at := NEW.next_attempt_at;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER communication_logs_due_at BEFORE INSERT ON communication_logs
    FOR EACH ROW EXECUTE FUNCTION communication_logs_set_due_at();

-- Wake the pollers (LISTEN switchboard_due) when a statement inserts logs that are due now; the payload
-- is the most urgent priority among them. One notification per statement, folded per transaction.
CREATE FUNCTION communication_logs_notify_due() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    most_urgent smallint;
BEGIN
    SELECT min(priority) INTO most_urgent FROM inserted WHERE status = 'PENDING' AND next_attempt_at <= now();
    IF most_urgent IS NOT NULL THEN
        PERFORM pg_notify('switchboard_due', most_urgent::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER communication_logs_notify_due AFTER INSERT ON communication_logs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION communication_logs_notify_due();

-- The gate: earlier open logs of the same group (replaces the per-recipient index of 0004).
DROP INDEX IF EXISTS logs_open_recipient_idx;
CREATE INDEX logs_open_group_idx ON communication_logs (ordering_group, due_at, id)
    WHERE status IN ('PENDING', 'PROCESSING');
-- ...and "is one of my group in flight": only the PROCESSING rows, so it stays small.
CREATE INDEX logs_processing_group_idx ON communication_logs (ordering_group) WHERE status = 'PROCESSING';
