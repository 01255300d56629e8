-- Tollgate schema, version 1.
-- Money is integer micro-units (1e-6 of the account currency) in bigint columns
-- named *_micros. Prices are micro-units per million tokens.

CREATE TABLE accounts (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    balance_micros  bigint NOT NULL DEFAULT 0,
    currency        text NOT NULL DEFAULT 'USD',
    -- Limits; NULL means none.
    rpm_limit           integer CHECK (rpm_limit > 0),
    tpm_limit           bigint CHECK (tpm_limit > 0),
    concurrency_limit   integer CHECK (concurrency_limit > 0),
    daily_spend_micros  bigint CHECK (daily_spend_micros >= 0),
    monthly_spend_micros bigint CHECK (monthly_spend_micros >= 0),
    allowed_models  text[],
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Client API keys: only a hash of the key is kept (SHA-256, hex), and a short
-- prefix to recognise it in lists. The key itself is shown once, at creation.
CREATE TABLE api_keys (
    id              bigserial PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts(id),
    name            text NOT NULL DEFAULT '',
    key_hash        text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_prefix      text NOT NULL,
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'disabled', 'revoked')),
    allowed_models  text[],
    expires_at      timestamptz,
    rpm_limit           integer CHECK (rpm_limit > 0),
    tpm_limit           bigint CHECK (tpm_limit > 0),
    concurrency_limit   integer CHECK (concurrency_limit > 0),
    daily_spend_micros  bigint CHECK (daily_spend_micros >= 0),
    monthly_spend_micros bigint CHECK (monthly_spend_micros >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_account ON api_keys(account_id);

CREATE TABLE providers (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
    protocol        text NOT NULL CHECK (protocol IN ('openai', 'anthropic', 'gemini')),
    base_url        text NOT NULL CHECK (base_url ~ '^https?://'),
    priority        integer NOT NULL DEFAULT 0,
    weight          integer NOT NULL DEFAULT 1 CHECK (weight >= 0),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    settings        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Provider secrets are sealed with libsodium's secretbox; the key comes from
-- the environment and never reaches the database.
CREATE TABLE provider_keys (
    id              bigserial PRIMARY KEY,
    provider_id     bigint NOT NULL REFERENCES providers(id),
    name            text NOT NULL DEFAULT '',
    secret_sealed   bytea NOT NULL,
    secret_nonce    bytea NOT NULL,
    secret_hint     text NOT NULL DEFAULT '',
    priority        integer NOT NULL DEFAULT 0,
    weight          integer NOT NULL DEFAULT 1 CHECK (weight >= 0),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason text,
    -- Cost multiplier in parts per million: 1000000 = list price, 0 = free tier.
    multiplier_ppm  bigint NOT NULL DEFAULT 1000000 CHECK (multiplier_ppm >= 0),
    capabilities    text[] NOT NULL DEFAULT '{}',
    max_rps         integer CHECK (max_rps > 0),
    max_concurrent  integer CHECK (max_concurrent > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_keys_provider ON provider_keys(provider_id);

-- Logical models, the names clients ask for, with their prices.
CREATE TABLE models (
    id                      bigserial PRIMARY KEY,
    name                    text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    status                  text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    price_in_micros         bigint NOT NULL DEFAULT 0 CHECK (price_in_micros >= 0),
    price_out_micros        bigint NOT NULL DEFAULT 0 CHECK (price_out_micros >= 0),
    price_cache_read_micros bigint NOT NULL DEFAULT 0 CHECK (price_cache_read_micros >= 0),
    price_cache_write_micros bigint NOT NULL DEFAULT 0 CHECK (price_cache_write_micros >= 0),
    price_cache_write_1h_micros bigint NOT NULL DEFAULT 0 CHECK (price_cache_write_1h_micros >= 0),
    price_request_micros    bigint NOT NULL DEFAULT 0 CHECK (price_request_micros >= 0),
    long_context_threshold  bigint CHECK (long_context_threshold > 0),
    long_price_in_micros    bigint CHECK (long_price_in_micros >= 0),
    long_price_out_micros   bigint CHECK (long_price_out_micros >= 0),
    scheduling              text NOT NULL DEFAULT 'priority',
    capabilities            text[] NOT NULL DEFAULT '{}',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Where a logical model may go: a provider and the model name it uses there.
CREATE TABLE routes (
    id              bigserial PRIMARY KEY,
    model_id        bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    provider_id     bigint NOT NULL REFERENCES providers(id),
    upstream_model  text NOT NULL CHECK (length(upstream_model) BETWEEN 1 AND 127),
    priority        integer NOT NULL DEFAULT 0,
    weight          integer NOT NULL DEFAULT 1 CHECK (weight >= 0),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, provider_id, upstream_model)
);

-- Mapping rules resolve a logical model against providers' model lists.
CREATE TABLE mapping_rules (
    id              bigserial PRIMARY KEY,
    model_id        bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('exact', 'prefix', 'keyword', 'regex',
                                                  'exclude_keyword', 'include', 'exclude_provider')),
    pattern         text NOT NULL DEFAULT '',
    provider_id     bigint REFERENCES providers(id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per finished request, keyed by its request id: the ledger inserts
-- with ON CONFLICT DO NOTHING, so a re-sent record is never counted twice.
CREATE TABLE usage (
    request_id          text PRIMARY KEY,
    started_at          timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    account_id          bigint NOT NULL,
    api_key_id          bigint NOT NULL,
    model               text NOT NULL,
    provider_id         bigint,
    provider_key_id     bigint,
    upstream_model      text,
    status              integer NOT NULL,
    tokens_in           bigint NOT NULL DEFAULT 0,
    tokens_out          bigint NOT NULL DEFAULT 0,
    tokens_cache_read   bigint NOT NULL DEFAULT 0,
    tokens_cache_write  bigint NOT NULL DEFAULT 0,
    cost_micros         bigint NOT NULL DEFAULT 0,
    latency_ms          integer NOT NULL DEFAULT 0,
    ttfb_ms             integer NOT NULL DEFAULT 0,
    attempts            integer NOT NULL DEFAULT 1,
    estimated           boolean NOT NULL DEFAULT false
);
CREATE INDEX usage_account_time ON usage(account_id, started_at);
CREATE INDEX usage_time ON usage(started_at);

-- Double-entry journal. Every entry's lines sum to zero; an account's
-- balance_micros always equals the sum of its lines (tollgate ledger check).
-- Ledger accounts other than customer accounts are named system accounts.
CREATE TABLE ledger_accounts (
    id              bigserial PRIMARY KEY,
    account_id      bigint UNIQUE REFERENCES accounts(id),
    system_name     text UNIQUE,
    CHECK ((account_id IS NULL) <> (system_name IS NULL))
);
INSERT INTO ledger_accounts (system_name) VALUES ('revenue'), ('funding'), ('adjustments');

CREATE TABLE journal_entries (
    id              bigserial PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL CHECK (kind IN ('usage', 'topup', 'adjustment')),
    request_id      text UNIQUE,
    reason          text NOT NULL DEFAULT '',
    created_by      text NOT NULL DEFAULT ''
);

CREATE TABLE journal_lines (
    entry_id        bigint NOT NULL REFERENCES journal_entries(id),
    ledger_account_id bigint NOT NULL REFERENCES ledger_accounts(id),
    amount_micros   bigint NOT NULL,
    PRIMARY KEY (entry_id, ledger_account_id)
);
CREATE INDEX journal_lines_account ON journal_lines(ledger_account_id);

CREATE TABLE admin_users (
    id              bigserial PRIMARY KEY,
    username        text NOT NULL UNIQUE,
    password_hash   text NOT NULL,
    role            text NOT NULL CHECK (role IN ('owner', 'operator', 'viewer')),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE settings (
    key             text PRIMARY KEY,
    value           jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Every program keeps an in-memory copy of this configuration; a change to
-- any of these tables tells them all, through one channel, which one moved.
CREATE FUNCTION tollgate_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tollgate_config', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

-- The ledger moves balance_micros on every batch; that is money, not
-- configuration, so it does not wake every program.
CREATE TRIGGER accounts_changed AFTER INSERT OR DELETE OR UPDATE OF name, status, currency,
    rpm_limit, tpm_limit, concurrency_limit, daily_spend_micros, monthly_spend_micros,
    allowed_models ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
CREATE TRIGGER providers_changed AFTER INSERT OR UPDATE OR DELETE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
CREATE TRIGGER provider_keys_changed AFTER INSERT OR UPDATE OR DELETE ON provider_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
CREATE TRIGGER models_changed AFTER INSERT OR UPDATE OR DELETE ON models
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
CREATE TRIGGER routes_changed AFTER INSERT OR UPDATE OR DELETE ON routes
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
CREATE TRIGGER mapping_rules_changed AFTER INSERT OR UPDATE OR DELETE ON mapping_rules
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE OR DELETE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();
