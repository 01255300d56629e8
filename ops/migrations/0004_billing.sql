-- Tollgate schema, version 4: usage that grows for years (docs/billing.md).
--
-- 1. usage becomes a table partitioned by month on started_at. Its primary
--    key must contain the partition column, so it is (request_id,
--    started_at). Idempotency still holds: every re-send of a record carries
--    the started_us its sender stamped once (dispatch keeps the encoded
--    SETTLE, billing copies the field into ENTRY), so a re-sent row has the
--    same key and ON CONFLICT DO NOTHING drops it. journal_entries keeps its
--    own UNIQUE (request_id), so money can never move twice for one request
--    even if a row came back with another started_at.
-- 2. usage_hourly and usage_daily: rollups per (period, account, key, model,
--    provider), written by the ledger in the same transaction as the rows
--    they sum, so they are exact at every commit.
-- 3. tollgate_usage_partition(month) creates a month's partition without
--    locking out writers (CREATE + CHECK + ATTACH takes SHARE UPDATE
--    EXCLUSIVE on the parent, which inserts do not conflict with). The
--    ledger calls it ahead of time. There is no DEFAULT partition: it would
--    forbid DETACH ... CONCURRENTLY, which is how pruning avoids locking
--    the hot path (`tollgate ledger prune`).

ALTER TABLE usage RENAME TO usage_unpartitioned;
ALTER INDEX usage_pkey RENAME TO usage_unpartitioned_pkey;
ALTER INDEX usage_account_time RENAME TO usage_unpartitioned_account_time;
ALTER INDEX usage_time RENAME TO usage_unpartitioned_time;

CREATE TABLE usage (
    request_id          text NOT NULL,
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
    estimated           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (request_id, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX usage_account_time ON usage (account_id, started_at);
CREATE INDEX usage_time ON usage (started_at);

-- Creates the partition for the UTC month that contains `month` if it is
-- not there. Safe to call concurrently and often: it returns at once when
-- the partition exists.
CREATE FUNCTION tollgate_usage_partition(month timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    first timestamptz := date_trunc('month', month, 'UTC');
    next  timestamptz := date_trunc('month', month, 'UTC') + interval '1 month';
    name  text := 'usage_' || to_char(month AT TIME ZONE 'UTC', 'YYYY"m"MM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    -- Two ledgers may race here; the advisory lock makes the second wait
    -- and then find the table.
    PERFORM pg_advisory_xact_lock(hashtext('tollgate_usage_partition'));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE usage INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    -- The CHECK lets ATTACH skip its validation scan; it is redundant after.
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (started_at >= %L AND started_at < %L)',
                   name, name || '_range', first, next);
    EXECUTE format('ALTER TABLE usage ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, first, next);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', name, name || '_range');
    RETURN name;
END;
$$;

-- Move what version 1 recorded, month by month.
DO $$
DECLARE
    m timestamptz;
BEGIN
    FOR m IN SELECT DISTINCT date_trunc('month', started_at, 'UTC') FROM usage_unpartitioned LOOP
        PERFORM tollgate_usage_partition(m);
    END LOOP;
    PERFORM tollgate_usage_partition(now());
    PERFORM tollgate_usage_partition(now() + interval '1 month');
END;
$$;
INSERT INTO usage SELECT * FROM usage_unpartitioned;
DROP TABLE usage_unpartitioned;

-- Rollups. provider_id 0 stands for "no provider" (a request refused
-- before any upstream was chosen) because a primary key cannot hold NULL.
CREATE TABLE usage_hourly (
    hour                timestamptz NOT NULL,
    account_id          bigint NOT NULL,
    api_key_id          bigint NOT NULL,
    model               text NOT NULL,
    provider_id         bigint NOT NULL DEFAULT 0,
    requests            bigint NOT NULL DEFAULT 0,
    errors              bigint NOT NULL DEFAULT 0,
    tokens_in           bigint NOT NULL DEFAULT 0,
    tokens_out          bigint NOT NULL DEFAULT 0,
    tokens_cache_read   bigint NOT NULL DEFAULT 0,
    tokens_cache_write  bigint NOT NULL DEFAULT 0,
    cost_micros         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, account_id, api_key_id, model, provider_id)
);
CREATE INDEX usage_hourly_account ON usage_hourly (account_id, hour);

CREATE TABLE usage_daily (
    day                 date NOT NULL,
    account_id          bigint NOT NULL,
    api_key_id          bigint NOT NULL,
    model               text NOT NULL,
    provider_id         bigint NOT NULL DEFAULT 0,
    requests            bigint NOT NULL DEFAULT 0,
    errors              bigint NOT NULL DEFAULT 0,
    tokens_in           bigint NOT NULL DEFAULT 0,
    tokens_out          bigint NOT NULL DEFAULT 0,
    tokens_cache_read   bigint NOT NULL DEFAULT 0,
    tokens_cache_write  bigint NOT NULL DEFAULT 0,
    cost_micros         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, account_id, api_key_id, model, provider_id)
);
CREATE INDEX usage_daily_account ON usage_daily (account_id, day);

INSERT INTO usage_hourly
SELECT date_trunc('hour', started_at, 'UTC'), account_id, api_key_id, model,
       coalesce(provider_id, 0), count(*), count(*) FILTER (WHERE status >= 400),
       sum(tokens_in), sum(tokens_out), sum(tokens_cache_read), sum(tokens_cache_write),
       sum(cost_micros)
FROM usage GROUP BY 1, 2, 3, 4, 5;
INSERT INTO usage_daily
SELECT (started_at AT TIME ZONE 'UTC')::date, account_id, api_key_id, model,
       coalesce(provider_id, 0), count(*), count(*) FILTER (WHERE status >= 400),
       sum(tokens_in), sum(tokens_out), sum(tokens_cache_read), sum(tokens_cache_write),
       sum(cost_micros)
FROM usage GROUP BY 1, 2, 3, 4, 5;
