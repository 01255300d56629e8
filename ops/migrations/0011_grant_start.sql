-- Recurring grants (0009) start in the period that contains starts_at: now
-- by default; a later time defers the first grant, an earlier one grants
-- the periods since then at once (each still once).
ALTER TABLE credit_grants ADD COLUMN starts_at timestamptz NOT NULL DEFAULT now();
UPDATE credit_grants SET starts_at = created_at;
