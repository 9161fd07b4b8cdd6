-- Core schema: campaigns, communication logs, attempts, receipts, dead-letter outbox.

CREATE TABLE campaigns (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant           text        NOT NULL DEFAULT 'default',
    name             text        NOT NULL,
    status           text        NOT NULL DEFAULT 'RUNNING'
                     CHECK (status IN ('DRAFT', 'SCHEDULED', 'RUNNING', 'PAUSED', 'COMPLETED', 'CANCELLED')),
    total_count      bigint      NOT NULL DEFAULT 0,
    sent_count       bigint      NOT NULL DEFAULT 0,
    delivered_count  bigint      NOT NULL DEFAULT 0,
    failed_count     bigint      NOT NULL DEFAULT 0,
    bounced_count    bigint      NOT NULL DEFAULT 0,
    retry_count      bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaigns_tenant_idx ON campaigns (tenant, created_at DESC);

CREATE TABLE communication_logs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant           text        NOT NULL DEFAULT 'default',
    campaign_id      bigint      REFERENCES campaigns (id),
    channel          text        NOT NULL,
    recipient        text        NOT NULL,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    priority         smallint    NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 2),
    status           text        NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'PROCESSING', 'SENT', 'DELIVERED', 'FAILED', 'BOUNCED', 'CANCELLED')),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer     NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    provider         text,
    vendor_ref       text,
    last_error_code  text,
    last_error       text,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    delivered_at     timestamptz
);

-- The claim: one range scan per priority over due PENDING rows.
CREATE INDEX logs_claim_idx ON communication_logs (priority, next_attempt_at) WHERE status = 'PENDING';
-- The starvation guard: the oldest due rows whatever their priority.
CREATE INDEX logs_due_idx ON communication_logs (next_attempt_at) WHERE status = 'PENDING';
-- Lease reclaim of PROCESSING rows whose sender or poller died.
CREATE INDEX logs_lease_idx ON communication_logs (lease_until) WHERE status = 'PROCESSING';
-- Strict ordering's head-of-line gate: earlier open logs of the same recipient.
CREATE INDEX logs_open_recipient_idx ON communication_logs (recipient, id)
    WHERE status IN ('PENDING', 'PROCESSING');
CREATE UNIQUE INDEX logs_idempotency_idx ON communication_logs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX logs_campaign_status_idx ON communication_logs (campaign_id, status);
CREATE INDEX logs_status_updated_idx ON communication_logs (status, updated_at);

CREATE TABLE delivery_attempts (
    log_id           bigint      NOT NULL REFERENCES communication_logs (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    provider         text,
    outcome          text        NOT NULL CHECK (outcome IN ('success', 'transient', 'recoverable', 'permanent')),
    error_code       text,
    error_message    text,
    fallback_reason  text,
    latency_ms       double precision NOT NULL DEFAULT 0,
    cost             numeric(12, 6)   NOT NULL DEFAULT 0,
    vendor_ref       text,
    replay           boolean     NOT NULL DEFAULT false,
    finished_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log_id, attempt)
);
CREATE INDEX attempts_provider_time_idx ON delivery_attempts (provider, recorded_at);

CREATE TABLE delivery_receipts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log_id           bigint      NOT NULL REFERENCES communication_logs (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    provider         text,
    vendor_ref       text,
    status           text        NOT NULL,
    provider_status  text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (log_id, attempt, status)
);
CREATE INDEX receipts_vendor_ref_idx ON delivery_receipts (provider, vendor_ref);

-- Dead letters written in the same transaction as the FAILED/BOUNCED status, then relayed to `dlx`.
CREATE TABLE dead_letter_outbox (
    log_id           bigint      NOT NULL,
    attempt          integer     NOT NULL,
    body             jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (log_id, attempt)
);
