-- One routing configuration. The API's routing endpoints now read and write the tables of 0003
-- (providers, channel_routes, channel_policies, tenant_routes), which senders and responders read;
-- 0002's provider_routes was read by nothing and goes.

-- A tenant's own rows of provider_routes said "try this provider at this position for my messages":
-- kept as tenant overrides where they can mean something (the provider exists and the channel routes
-- it). The rest (defaults with tenant NULL, per-tenant weights, costs and rate limits, rows naming
-- unknown providers) has no place in the model the senders use and is dropped with the table.
INSERT INTO tenant_routes (tenant, channel, provider, priority, active)
SELECT pr.tenant, pr.channel, pr.provider, pr.position, pr.active
FROM provider_routes pr
JOIN channel_routes cr ON cr.channel = pr.channel AND cr.provider = pr.provider
WHERE pr.tenant IS NOT NULL
ON CONFLICT (tenant, channel, provider) DO NOTHING;

DROP TABLE provider_routes;

-- Operator keys: besides acting for their tenant, they may change the global routing
-- configuration (providers, channel routes, channel policies). Created with `create-key --admin`.
ALTER TABLE api_keys ADD COLUMN admin boolean NOT NULL DEFAULT false;
