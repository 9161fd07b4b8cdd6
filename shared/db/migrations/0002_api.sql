-- The HTTP API (services.api): keys, idempotency, templates, contact lists, campaign schedules, routing config.

-- API keys per tenant: only an HMAC-SHA256 (with a server-side pepper) of the key is kept.
CREATE TABLE api_keys (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant            text        NOT NULL,
    key_id            text        NOT NULL UNIQUE,
    key_hash          text        NOT NULL,
    name              text        NOT NULL DEFAULT '',
    rate_limit_per_s  double precision CHECK (rate_limit_per_s > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant);

-- Idempotency-Key header: the first response to a key is kept (24 h by default) and replayed.
CREATE TABLE api_idempotency (
    tenant            text        NOT NULL,
    key               text        NOT NULL,
    request_hash      text        NOT NULL,
    status_code       integer,
    response          jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX api_idempotency_expiry_idx ON api_idempotency (expires_at);

-- Message templates: named fields with {{variable}} placeholders, checked when created.
CREATE TABLE message_templates (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant            text        NOT NULL,
    name              text        NOT NULL,
    channel           text        NOT NULL,
    content           jsonb       NOT NULL,
    variables         text[]      NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, name)
);

-- Contact lists uploaded as CSV: one row per accepted contact, its other columns as template variables.
CREATE TABLE contact_lists (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant            text        NOT NULL,
    name              text        NOT NULL,
    channel           text        NOT NULL,
    columns           text[]      NOT NULL DEFAULT '{}',
    contact_count     integer     NOT NULL DEFAULT 0,
    rejected_count    integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contact_lists_tenant_idx ON contact_lists (tenant, id);

CREATE TABLE contacts (
    list_id           bigint      NOT NULL REFERENCES contact_lists (id) ON DELETE CASCADE,
    position          integer     NOT NULL,
    recipient         text        NOT NULL,
    variables         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (list_id, position),
    UNIQUE (list_id, recipient)
);

-- What a campaign sends and when: one row per campaign created through the API.
CREATE TABLE campaign_specs (
    campaign_id       bigint      PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    template_id       bigint      NOT NULL REFERENCES message_templates (id),
    contact_list_id   bigint      NOT NULL REFERENCES contact_lists (id),
    channel           text        NOT NULL,
    priority          smallint    NOT NULL DEFAULT 2 CHECK (priority BETWEEN 0 AND 2),
    max_attempts      integer     CHECK (max_attempts >= 1),
    start_at          timestamptz,
    cron              text,
    timezone          text        NOT NULL DEFAULT 'UTC',
    end_at            timestamptz,
    next_run_at       timestamptz,              -- cron campaigns: the next run to materialise
    runs              integer     NOT NULL DEFAULT 0
);
CREATE INDEX campaign_specs_due_idx ON campaign_specs (next_run_at) WHERE next_run_at IS NOT NULL;

-- One row per materialised run: the scheduler inserts it in the same transaction as the run's logs,
-- so a run is materialised at most once whatever the number of schedulers.
CREATE TABLE campaign_runs (
    campaign_id       bigint      NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    run_at            timestamptz NOT NULL,
    log_count         integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, run_at)
);

-- Pause: a paused campaign's PENDING logs keep their status but get next_attempt_at = 'infinity'
-- (out of the poller's reach); their real due time waits here until resume puts it back.
CREATE TABLE paused_logs (
    log_id            bigint      PRIMARY KEY REFERENCES communication_logs (id) ON DELETE CASCADE,
    campaign_id       bigint      NOT NULL,
    next_attempt_at   timestamptz NOT NULL
);
CREATE INDEX paused_logs_campaign_idx ON paused_logs (campaign_id);

-- Provider routing per channel: an ordered, weighted list of providers; tenant NULL is the default
-- for everyone, a tenant's own rows override it for that channel.
CREATE TABLE provider_routes (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant            text,
    channel           text        NOT NULL,
    provider          text        NOT NULL,
    position          integer     NOT NULL DEFAULT 0 CHECK (position >= 0),
    active            boolean     NOT NULL DEFAULT true,
    weight            integer     NOT NULL DEFAULT 100 CHECK (weight BETWEEN 0 AND 1000),
    cost_per_message  numeric(12, 6) NOT NULL DEFAULT 0 CHECK (cost_per_message >= 0),
    rate_limit_per_s  double precision CHECK (rate_limit_per_s > 0),
    burst             integer     CHECK (burst >= 1),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (tenant, channel, provider)
);
CREATE INDEX provider_routes_lookup_idx ON provider_routes (channel, tenant, position);

-- The API's reads: a tenant's messages newest first (cursor paging), and by creation time (statistics).
CREATE INDEX logs_tenant_id_idx ON communication_logs (tenant, id DESC);
CREATE INDEX logs_tenant_created_idx ON communication_logs (tenant, created_at);
