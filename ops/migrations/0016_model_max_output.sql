-- A model's maximum output tokens (docs/billing.md "Admission"): the
-- reservation assumes it when a request gives no max_tokens, and a request
-- asking for more is refused (400 naming max_tokens). NULL: no maximum known,
-- the reservation assumes 4,096 output tokens.
ALTER TABLE models ADD COLUMN max_output_tokens bigint CHECK (max_output_tokens > 0);
