-- Image counts in the usage rollups (issue #13): usage_hourly and
-- usage_daily sum usage.images (migration 0017) beside the token columns,
-- so spend reports (tollgate ledger spend, GET /admin/reports/spend) show
-- how many images each group made. Rows written before this migration are
-- filled in from usage (operator's losses are not in the rollups).
ALTER TABLE usage_hourly ADD COLUMN images bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN images bigint NOT NULL DEFAULT 0;

UPDATE usage_hourly h SET images = u.images
FROM (SELECT date_trunc('hour', started_at, 'UTC') AS hour, account_id, api_key_id, model,
             coalesce(provider_id, 0) AS provider_id, sum(images) AS images
      FROM usage WHERE images > 0 AND NOT operator_loss GROUP BY 1, 2, 3, 4, 5) u
WHERE h.hour = u.hour AND h.account_id = u.account_id AND h.api_key_id = u.api_key_id
  AND h.model = u.model AND h.provider_id = u.provider_id;

UPDATE usage_daily d SET images = u.images
FROM (SELECT (started_at AT TIME ZONE 'UTC')::date AS day, account_id, api_key_id, model,
             coalesce(provider_id, 0) AS provider_id, sum(images) AS images
      FROM usage WHERE images > 0 AND NOT operator_loss GROUP BY 1, 2, 3, 4, 5) u
WHERE d.day = u.day AND d.account_id = u.account_id AND d.api_key_id = u.api_key_id
  AND d.model = u.model AND d.provider_id = u.provider_id;
