-- Completion probes (docs/routing.md section 6): the last 1-token probe of
-- each (provider key, upstream model), written by the tollgate-health
-- instance that ran it, for GET /admin/providers/{provider}/probes and
-- `tollgate health probe`.
CREATE TABLE provider_probes (
    provider_id     bigint NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    provider_key_id bigint NOT NULL REFERENCES provider_keys(id) ON DELETE CASCADE,
    upstream_model  text NOT NULL,
    probed_at       timestamptz NOT NULL DEFAULT now(),
    ok              boolean NOT NULL,
    status          integer NOT NULL DEFAULT 0,
    error           text NOT NULL DEFAULT '',
    latency_us      bigint NOT NULL DEFAULT 0,
    cost_micros     bigint NOT NULL DEFAULT 0,
    on_demand       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (provider_key_id, upstream_model)
);
