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

-- Signal (signal-cli REST API): a channel and a provider kind.
ALTER TABLE channel_routes DROP CONSTRAINT channel_routes_channel_check;
ALTER TABLE channel_routes ADD CONSTRAINT channel_routes_channel_check
    CHECK (channel IN ('sms', 'mms', 'email', 'whatsapp', 'webhook', 'signal'));
ALTER TABLE channel_policies DROP CONSTRAINT channel_policies_channel_check;
ALTER TABLE channel_policies ADD CONSTRAINT channel_policies_channel_check
    CHECK (channel IN ('sms', 'mms', 'email', 'whatsapp', 'webhook', 'signal'));
ALTER TABLE providers DROP CONSTRAINT providers_kind_check;
ALTER TABLE providers ADD CONSTRAINT providers_kind_check
    CHECK (kind IN ('sms_gateway', 'whatsapp_cloud', 'smtp', 'webhook', 'mock_json', 'signal_cli'));

-- Strict ordering's gate and routing read recipient_key: Signal numbers are spelt like phone numbers
-- (0004's expression already treats every channel but email that way).
