-- Upstream calls lost with their dispatch (docs/billing.md, "Every upstream call, once").
--
-- When a dispatch instance dies while an upstream call runs and nothing has
-- reached the client yet, ingress sends the request again and the client is
-- billed once, for the attempt that answered. The lost first call still cost
-- the operator: it is recorded with its own usage row (request id
-- `REQUEST~lost-NONCE`), its estimated tokens, cost 0 and operator_loss, so that
-- every call an upstream served has exactly one usage row. Such rows are not
-- the account's requests: the hourly and daily rollups leave them out.
ALTER TABLE usage ADD COLUMN operator_loss boolean NOT NULL DEFAULT false;
