-- Delivery semantics (docs/design-notes.md, "Deferral, failover and unknown outcomes"): local deferrals
-- that cost no attempt, failover after repeated transient failures, channel fallback, and unknown
-- outcomes retried under the same provider idempotency key.

ALTER TABLE communication_logs
    -- Channels to try, in order, when the log cannot be delivered on its own (per message; empty: the
    -- tenant's configuration in tenant_channel_fallbacks applies).
    ADD COLUMN fallback_channels text[] NOT NULL DEFAULT '{}',
    -- The channel the log is on now, once it moved to a fallback channel (NULL: ``channel``).
    ADD COLUMN delivery_channel text,
    -- Attempts made before the current channel: each channel gets the log's whole attempt budget.
    ADD COLUMN channel_attempts_from integer NOT NULL DEFAULT 0 CHECK (channel_attempts_from >= 0),
    -- After an unknown outcome: the attempt whose provider idempotency key the next call reuses.
    ADD COLUMN key_attempt integer CHECK (key_attempt >= 1),
    -- Consecutive transient failures of this log on ``provider`` (failover after the channel's limit).
    ADD COLUMN provider_failures integer NOT NULL DEFAULT 0 CHECK (provider_failures >= 0),
    -- Local deferrals (pacing, rate limit, every circuit open): never attempts.
    ADD COLUMN deferrals integer NOT NULL DEFAULT 0 CHECK (deferrals >= 0);

-- Every attempt says which channel it went out on; an unknown outcome (timeout or connection lost
-- after the request was written) is neither a success nor a failure.
-- (`unknown` is added to the list the CHECK holds now, whatever other migrations put in it.)
ALTER TABLE delivery_attempts ADD COLUMN channel text;
DO $$
DECLARE
    definition text;
BEGIN
    SELECT pg_get_constraintdef(c.oid) INTO definition FROM pg_constraint c
    WHERE c.conname = 'delivery_attempts_outcome_check' AND c.conrelid = 'delivery_attempts'::regclass;
    IF definition IS NULL OR position('ARRAY[' IN definition) = 0 THEN
        RAISE EXCEPTION 'constraint delivery_attempts_outcome_check is not a list of values: %', definition;
    END IF;
    IF position(quote_literal('unknown') IN definition) = 0 THEN
        ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_outcome_check;
        EXECUTE format('ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_outcome_check %s',
                       replace(definition, 'ARRAY[', 'ARRAY[' || quote_literal('unknown') || '::text, '));
    END IF;
END $$;

-- Per channel: how many consecutive transient failures of one log move it to the next provider, and
-- the longest Retry-After of a 429 worth waiting for on the same provider.
ALTER TABLE channel_policies
    ADD COLUMN failover_after integer CHECK (failover_after >= 1),
    ADD COLUMN retry_after_tolerance_s double precision CHECK (retry_after_tolerance_s >= 0);

-- A tenant's channel fallback: messages of ``channel`` that cannot be delivered on it go out on these
-- channels, in order (a message's own fallback_channels win).
CREATE TABLE tenant_channel_fallbacks (
    tenant            text        NOT NULL,
    channel           text        NOT NULL,  -- checked by the API (its list of channels)
    fallback_channels text[]      NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, channel)
);
CREATE TRIGGER tenant_channel_fallbacks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON tenant_channel_fallbacks FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version();
