-- Issue 16: draft campaigns with their own contacts, campaign pacing, tenant retries of failed logs,
-- routes by destination country or prefix, the Signal channel and provider kind.

-- A draft campaign keeps its contacts in a list of its own (JSON rows added to it, or a copy of an
-- uploaded list); such a list belongs to the campaign and goes with it.
ALTER TABLE contact_lists ADD COLUMN campaign_id bigint REFERENCES campaigns (id) ON DELETE CASCADE;
CREATE UNIQUE INDEX contact_lists_campaign_idx ON contact_lists (campaign_id) WHERE campaign_id IS NOT NULL;

-- Pacing of a campaign's messages: the preset (a random gap inside its range between two messages of
-- one sender identity) and the time its last message is scheduled for (its ETA when it is paced).
ALTER TABLE campaign_specs
    ADD COLUMN pacing text NOT NULL DEFAULT 'none' CHECK (pacing IN ('none', 'fast', 'balanced', 'safe'));

-- The next free slot of each (tenant, sender identity) for paced campaigns, so that two paced
-- campaigns of one identity do not interleave inside each other's gaps.
CREATE TABLE campaign_pacing (
    tenant           text        NOT NULL,
    identity         text        NOT NULL,
    next_slot        timestamptz NOT NULL,
    PRIMARY KEY (tenant, identity)
);

-- POST /v1/messages/retry-failed: a tenant's FAILED logs, oldest failure first.
CREATE INDEX logs_tenant_failed_idx ON communication_logs (tenant, updated_at, id) WHERE status = 'FAILED';

-- Routes by destination: a route with destinations serves only recipients in one of those countries
-- (ISO 3166 alpha-2, e.g. GB) or with one of those E.164 prefixes (e.g. +4477); the most specific
-- match wins. Without destinations a route serves every recipient (after the matching ones).
ALTER TABLE channel_routes ADD COLUMN destinations text[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(destinations) <= 100
           AND array_to_string(destinations, ',') ~ '^(((\+[1-9][0-9]{0,14})|[A-Z]{2})(,((\+[1-9][0-9]{0,14})|[A-Z]{2}))*)?$');

-- Signal (signal-cli REST API): a channel and a provider kind, added to the lists the CHECK
-- constraints hold now (whatever other migrations put in them), not a list written out again here.
DO $$
DECLARE
    item record;
    definition text;
BEGIN
    FOR item IN SELECT * FROM (VALUES
        ('channel_routes', 'channel_routes_channel_check', 'signal'),
        ('channel_policies', 'channel_policies_channel_check', 'signal'),
        ('providers', 'providers_kind_check', 'signal_cli')) AS x(tbl, con, val)
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
-- (Strict ordering and routing read recipient_key: 0004's expression already spells a Signal number
-- as a phone number, like every channel but email.)
