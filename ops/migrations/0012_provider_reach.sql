-- Reaching providers as they are (docs/routing.md, "Reaching providers").
--
-- Per provider: extra request headers some relays demand (User-Agent,
-- Origin, Referer ...); HTTP or SOCKS proxies its calls go through, used in
-- turn; the path of its generate endpoint when it is not the protocol's
-- (a relay serving chat at /api/chat/completions); upstream models never to
-- be sent to it; and which upstream statuses fail over or are returned to
-- the client as they are, where that differs from the default
-- classification (dispatch_policy.h).
--
-- Proxy URLs may carry credentials, so they are sealed like provider
-- secrets (libsodium secretbox under secret_key); proxy_hints keeps them
-- with any user:password replaced by "***", for the admin API.
ALTER TABLE providers
    ADD COLUMN headers           jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(headers) = 'object'),
    ADD COLUMN proxies_sealed    bytea,
    ADD COLUMN proxies_nonce     bytea,
    ADD COLUMN proxy_hints       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN path              text CHECK (length(path) <= 500 AND path ~ '^/[^[:space:]]*$'),
    ADD COLUMN blocked_models    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN failover_statuses integer[] NOT NULL DEFAULT '{}'
        CHECK (400 <= ALL (failover_statuses) AND 599 >= ALL (failover_statuses)),
    ADD COLUMN return_statuses   integer[] NOT NULL DEFAULT '{}'
        CHECK (400 <= ALL (return_statuses) AND 599 >= ALL (return_statuses)),
    ADD CONSTRAINT providers_statuses_apart CHECK (NOT (failover_statuses && return_statuses));

-- Per (provider, upstream model): the protocol it is spoken to in and the
-- path of its endpoint, where they differ from the provider's (a relay that
-- serves one model family through Anthropic's Messages and the rest through
-- OpenAI's Chat). NULL keeps the provider's.
CREATE TABLE provider_model_settings (
    id              bigserial PRIMARY KEY,
    provider_id     bigint NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    model           text NOT NULL CHECK (length(model) BETWEEN 1 AND 127),
    protocol        text CHECK (protocol IN ('openai', 'openai-responses', 'anthropic', 'gemini')),
    path            text CHECK (length(path) <= 500 AND path ~ '^/[^[:space:]]*$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, model)
);

CREATE TRIGGER provider_model_settings_changed
    AFTER INSERT OR UPDATE OR DELETE ON provider_model_settings
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
