-- Forced capabilities and Responses upstreams.
--
-- An account or a key can be set to force capabilities: every request made
-- with it routes only to provider keys (or models) that have them, e.g. an
-- account that must always get the 1M-context tier.
ALTER TABLE accounts ADD COLUMN force_capabilities text[] NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN force_capabilities text[] NOT NULL DEFAULT '{}';

-- The accounts trigger lists the columns that are configuration (not the
-- balance, which the ledger moves on every batch); the new one is.
DROP TRIGGER accounts_changed ON accounts;
CREATE TRIGGER accounts_changed AFTER INSERT OR DELETE OR UPDATE OF name, status, currency,
    rpm_limit, tpm_limit, concurrency_limit, daily_spend_micros, monthly_spend_micros,
    allowed_models, force_capabilities ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();

-- A provider may speak OpenAI's Responses API upstream ("openai-responses"),
-- so Responses clients pass through untouched to it.
ALTER TABLE providers DROP CONSTRAINT providers_protocol_check;
ALTER TABLE providers ADD CONSTRAINT providers_protocol_check
    CHECK (protocol IN ('openai', 'openai-responses', 'anthropic', 'gemini'));
