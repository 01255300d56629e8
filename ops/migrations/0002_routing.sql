-- Tollgate schema, version 2: routing.
-- What providers say they serve, what the mapping rules resolve to, and the
-- columns rules need. Breaker and sticky-session state is soft (rebuilt by
-- every router from the outcome stream, docs/routing.md); the only durable
-- breaker fact is a key disabled after 401/403, kept in provider_keys.status
-- and disabled_reason (0001).

-- Rules that add pairs give them a priority and a weight, like routes.
ALTER TABLE mapping_rules
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN weight   integer NOT NULL DEFAULT 1 CHECK (weight >= 0);

ALTER TABLE models
    ADD CONSTRAINT models_scheduling_known CHECK (scheduling IN
        ('priority', 'key_priority', 'weighted', 'latency', 'cost', 'reliability'));

-- Each provider's model list as last fetched by tollgate-health (GET
-- /v1/models, Anthropic's /v1/models, Gemini's /v1beta/models). Rows change
-- only when the list does, so the trigger below wakes every program only
-- then; when it was fetched is kept apart, in provider_model_fetches.
CREATE TABLE provider_models (
    provider_id     bigint NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    model           text NOT NULL CHECK (length(model) BETWEEN 1 AND 127),
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, model)
);

-- The last fetch of each provider's list, successful or not.
CREATE TABLE provider_model_fetches (
    provider_id     bigint PRIMARY KEY REFERENCES providers(id) ON DELETE CASCADE,
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    ok              boolean NOT NULL,
    model_count     integer NOT NULL DEFAULT 0,
    provider_key_id bigint,
    error           text NOT NULL DEFAULT ''
);

-- What the routes and mapping rules resolve to against those lists: the
-- pairs routing may pick, for people and the admin API to read. Routers
-- resolve the same thing in memory from the same rows (router_map), so this
-- table is written by tollgate-health and read by nobody on the hot path.
CREATE TABLE model_mappings (
    model_id        bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    provider_id     bigint NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    upstream_model  text NOT NULL,
    source          text NOT NULL CHECK (source IN ('route', 'include', 'rule', 'zero_config')),
    rule_id         bigint,
    priority        integer NOT NULL DEFAULT 0,
    weight          integer NOT NULL DEFAULT 1,
    active          boolean NOT NULL DEFAULT true,
    resolved_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, provider_id, upstream_model)
);

CREATE TRIGGER provider_models_changed AFTER INSERT OR UPDATE OR DELETE ON provider_models
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();

-- Health per (provider, key, upstream model) as tollgate-health last folded
-- it (passive outcomes, and active probes under upstream_model ''), for
-- GET /admin/health. Written every few seconds by each health instance;
-- the routers get the same numbers live from the HEALTH stream instead.
CREATE TABLE provider_health (
    provider_id     bigint NOT NULL,
    provider_key_id bigint NOT NULL,
    upstream_model  text NOT NULL,
    state           text NOT NULL CHECK (state IN ('unknown', 'up', 'degraded', 'down')),
    success_ppm     integer NOT NULL,
    latency_us      bigint NOT NULL,
    ttfb_us         bigint NOT NULL,
    attempts        bigint NOT NULL,
    last_status     integer NOT NULL DEFAULT 0,
    last_error      text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_id, provider_key_id, upstream_model)
);
