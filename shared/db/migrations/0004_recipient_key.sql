-- One spelling per recipient for routing and strict ordering: "+44 7700 900123" and "+447700900123"
-- are the same person. Mirrors shared.recipients.normalise for well-formed input.
ALTER TABLE communication_logs
    ADD COLUMN recipient_key text GENERATED ALWAYS AS (
        CASE WHEN channel = 'email'
             THEN lower(btrim(recipient))
             ELSE regexp_replace(regexp_replace(btrim(recipient), '[[:space:]().-]', '', 'g'), '^00', '+')
        END) STORED;

DROP INDEX IF EXISTS logs_open_recipient_idx;
CREATE INDEX logs_open_recipient_idx ON communication_logs (recipient_key, id)
    WHERE status IN ('PENDING', 'PROCESSING');
