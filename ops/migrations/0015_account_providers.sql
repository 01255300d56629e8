-- Account-owned providers, "bring your own key" (docs/routing.md section 12):
-- a provider with an account is used only for that account's requests,
-- never for another's, and its keys are created at multiplier 0 (the
-- account pays its provider, not the operator's prices) unless given one.
ALTER TABLE providers ADD COLUMN account_id bigint REFERENCES accounts(id);
CREATE INDEX providers_account ON providers(account_id) WHERE account_id IS NOT NULL;
