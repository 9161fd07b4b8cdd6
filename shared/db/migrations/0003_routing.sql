-- Channels and providers: routing configuration read by senders and responders (reloaded when
-- routing_version changes), shared rate-limit buckets, per-sender-identity pacing, receipt details.
-- (The API's 0002 has its own provider_routes table for its CRUD; the two are to be unified.)

CREATE TABLE providers (
    name             text        PRIMARY KEY,
    kind             text        NOT NULL
                     CHECK (kind IN ('sms_gateway', 'whatsapp_cloud', 'smtp', 'webhook', 'mock_json')),
    active           boolean     NOT NULL DEFAULT true,
    rate_per_s       double precision CHECK (rate_per_s > 0),
    burst            integer     CHECK (burst >= 1),
    reserved_share   double precision NOT NULL DEFAULT 0 CHECK (reserved_share >= 0 AND reserved_share < 1),
    pacing           text        NOT NULL DEFAULT 'none' CHECK (pacing IN ('none', 'fast', 'balanced', 'safe')),
    pacing_gap_ms    integer     CHECK (pacing_gap_ms >= 0),       -- overrides the preset when set
    settings         jsonb       NOT NULL DEFAULT '{}'::jsonb,     -- endpoint, credentials ("env:NAME")
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE channel_routes (
    channel          text        NOT NULL CHECK (channel IN ('sms', 'mms', 'email', 'whatsapp', 'webhook')),
    provider         text        NOT NULL REFERENCES providers (name) ON DELETE CASCADE,
    priority         integer     NOT NULL DEFAULT 0,
    weight           integer     NOT NULL DEFAULT 100 CHECK (weight BETWEEN 0 AND 10000),
    cost             numeric(12, 6) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    active           boolean     NOT NULL DEFAULT true,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, provider)
);

CREATE TABLE channel_policies (
    channel          text        PRIMARY KEY CHECK (channel IN ('sms', 'mms', 'email', 'whatsapp', 'webhook')),
    strategy         text        NOT NULL DEFAULT 'fallback'
                     CHECK (strategy IN ('primary', 'fallback', 'round_robin', 'weighted', 'least_cost',
                                         'highest_reliability')),
    retry_mode       text        CHECK (retry_mode IN ('none', 'linear', 'exponential', 'custom')),
    retry_initial_s  double precision CHECK (retry_initial_s >= 0),
    retry_max_s      double precision CHECK (retry_max_s >= 0),
    retry_max_attempts integer   CHECK (retry_max_attempts >= 1),
    retry_delays_s   double precision[],
    max_cost         numeric(12, 6) CHECK (max_cost >= 0),
    min_success_rate double precision CHECK (min_success_rate BETWEEN 0 AND 1),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (retry_mode IS DISTINCT FROM 'custom' OR cardinality(retry_delays_s) > 0)
);

-- A tenant's own priorities (or exclusions) for a channel's providers, as in a multi-tenant gateway.
CREATE TABLE tenant_routes (
    tenant           text        NOT NULL,
    channel          text        NOT NULL,
    provider         text        NOT NULL REFERENCES providers (name) ON DELETE CASCADE,
    priority         integer     NOT NULL,
    active           boolean     NOT NULL DEFAULT true,
    PRIMARY KEY (tenant, channel, provider)
);

-- One counter that every routing change bumps: readers reload when it moves.
CREATE TABLE routing_version (
    id               boolean     PRIMARY KEY DEFAULT true CHECK (id),
    version          bigint      NOT NULL DEFAULT 0,
    changed_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO routing_version DEFAULT VALUES;

CREATE FUNCTION bump_routing_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE routing_version SET version = version + 1, changed_at = now();
    RETURN NULL;
END $$;

CREATE TRIGGER providers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version();
CREATE TRIGGER channel_routes_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON channel_routes
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version();
CREATE TRIGGER channel_policies_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON channel_policies
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version();
CREATE TRIGGER tenant_routes_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenant_routes
    FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_version();

-- The token bucket each provider's rate limit draws from, shared by every sender replica.
CREATE TABLE provider_buckets (
    provider         text        PRIMARY KEY,
    tokens           double precision NOT NULL,
    refilled_at      timestamptz NOT NULL
);

-- Pacing: the earliest moment the next message of one sender identity may leave.
CREATE TABLE sender_pacing (
    provider         text        NOT NULL,
    identity         text        NOT NULL,
    next_slot        timestamptz NOT NULL,
    PRIMARY KEY (provider, identity)
);

-- Receipts: the provider's error code, and when the provider says the event happened.
ALTER TABLE delivery_receipts ADD COLUMN error_code text;
ALTER TABLE delivery_receipts ADD COLUMN occurred_at timestamptz;
