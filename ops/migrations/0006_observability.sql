-- Observability: trace spans and the run-time log level.
--
-- Every process sends the spans of a request (ingress receive, admission,
-- route decision, each upstream attempt, first byte, settlement, ledger
-- commit) to the ledger as SPAN messages; the ledger batch-inserts them
-- here, off the request path. GET /admin/requests/{id} reads them back as
-- the request's timeline. Rows are pruned by the ledger after
-- ledger.span_retention_days, in small batches (docs/observability.md).
CREATE TABLE spans (
    id              bigserial PRIMARY KEY,
    request_id      text NOT NULL,
    trace_id        text NOT NULL DEFAULT '',   -- W3C trace id, 32 hex digits, or ''
    span_id         text NOT NULL DEFAULT '',
    parent_id       text NOT NULL DEFAULT '',   -- the span id of the traceparent it came under
    name            text NOT NULL,              -- ingress.receive, dispatch.attempt, ...
    program         text NOT NULL,
    instance        text NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_us     bigint NOT NULL DEFAULT 0,
    status          integer,
    attempt         integer,
    provider_id     bigint,                     -- no foreign key: a span outlives a provider
    provider_key_id bigint,
    upstream_model  text,
    error_code      text,
    attributes      jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spans_request ON spans(request_id, started_at);
CREATE INDEX spans_trace ON spans(trace_id) WHERE trace_id <> '';
CREATE INDEX spans_time ON spans(started_at);

-- The log level every program follows at run time (proto_service LISTENs on
-- tollgate_config; the settings trigger notifies): "level" for all, and
-- "programs" for one program's own. Empty: the configured log_level.
INSERT INTO settings (key, value) VALUES ('log_level', '{}')
ON CONFLICT (key) DO NOTHING;
