-- Money that can be set (issue 13): prices, multipliers, forced
-- capabilities per model, 1-hour cache writes apart, recurring grants.
-- docs/billing.md says how each one is applied.

-- The 1-hour cache-write price: NULL means "the 5-minute price". Until now
-- 1-hour writes were priced at the 5-minute price (SETTLE carried one
-- count), so a 0 that nobody could set through the admin API becomes NULL
-- and nothing is charged differently until an operator sets a price.
ALTER TABLE models ALTER COLUMN price_cache_write_1h_micros DROP NOT NULL;
ALTER TABLE models ALTER COLUMN price_cache_write_1h_micros DROP DEFAULT;
UPDATE models SET price_cache_write_1h_micros = NULL WHERE price_cache_write_1h_micros = 0;

-- A model can force capabilities, as an account or a key can: every request
-- for it routes only to provider keys (or models) that have them.
ALTER TABLE models ADD COLUMN force_capabilities text[] NOT NULL DEFAULT '{}';

-- An account's multiplier, parts per million of list price, like a
-- provider key's: 1000000 = list price, 0 = free tier. Both apply.
ALTER TABLE accounts ADD COLUMN multiplier_ppm bigint NOT NULL DEFAULT 1000000
    CHECK (multiplier_ppm >= 0);
DROP TRIGGER accounts_changed ON accounts;
CREATE TRIGGER accounts_changed AFTER INSERT OR DELETE OR UPDATE OF name, status, currency,
    rpm_limit, tpm_limit, concurrency_limit, daily_spend_micros, monthly_spend_micros,
    allowed_models, force_capabilities, multiplier_ppm ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify_change();

-- Cache writes as Anthropic reports them: tokens_cache_write stays every
-- cache-write token (cache_creation_input_tokens); tokens_cache_write_1h is
-- the part of it written for one hour (cache_creation.ephemeral_1h_input_tokens),
-- priced at the 1-hour price. Partitions take the column from the parent.
ALTER TABLE usage ADD COLUMN tokens_cache_write_1h bigint NOT NULL DEFAULT 0;

-- Recurring credit grants: an account gets amount_micros every UTC day,
-- ISO week (from Monday) or month. The ledger grants each period once: the
-- primary key of credit_grant_periods is the unique key a second ledger
-- instance meets (its INSERT waits for the first one's commit and then
-- does nothing), and the journal entry is written in the same statement.
CREATE TABLE credit_grants (
    id              bigserial PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts(id),
    amount_micros   bigint NOT NULL CHECK (amount_micros > 0),
    every           text NOT NULL CHECK (every IN ('day', 'week', 'month')),
    reason          text NOT NULL DEFAULT '',
    created_by      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz
);
CREATE INDEX credit_grants_account ON credit_grants(account_id);

CREATE TABLE credit_grant_periods (
    grant_id        bigint NOT NULL REFERENCES credit_grants(id),
    period_start    timestamptz NOT NULL,
    entry_id        bigint NOT NULL REFERENCES journal_entries(id),
    granted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grant_id, period_start)
);

ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_kind_check;
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_kind_check
    CHECK (kind IN ('usage', 'topup', 'adjustment', 'grant'));
-- Granted credit comes from its own system account, so what was given
-- away is one balance to read.
INSERT INTO ledger_accounts (system_name) VALUES ('grants') ON CONFLICT DO NOTHING;
