#include "ledger_spans.h"
#include "proto_db.h"
#include "proto_log.h"
#include "proto_trace.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define S_FLUSH_MS 200
#define S_BATCH_MAX 1000
#define S_PRUNE_ROWS 1000
#define S_PRUNE_STATEMENTS 50 //  per table per pass; the next pass goes on

struct _ledger_spans_t {
    proto_service_t *service;   //  the program (borrowed)
    proto_loop_t *loop;         //  its loop (borrowed)
    proto_trace_t *tracer;      //  the program's span sender, its sink set to us (borrowed)
    proto_trace_t *own_tracer;  //  ours when the service has none (a test service)
    char *url;                  //  database_url, for reconnecting
    PGconn *db;                 //  our own connection, NULL while away
    json_t *queue;              //  array of span objects waiting
    json_t *details;            //  request id -> request_details row half(s) waiting
    int flush_timer;            //  repeating flush
    int prune_timer;            //  repeating prune
    int retention_days;         //  ledger.span_retention_days
    proto_metric_t *m_received; //  spans received
    proto_metric_t *m_inserted; //  spans inserted
    proto_metric_t *m_dropped;  //  spans dropped
    proto_metric_t *m_pruned;   //  rows pruned, spans and request details
    proto_metric_t *m_details;  //  request_details halves written
};

//  Turns a message into the row object json_to_recordset reads.
static json_t *s_row(proto_msg_t *msg)
{
    json_t *meta = json_loads(proto_msg_meta(msg), 0, NULL);
    if (!json_is_object(meta)) {
        json_decref(meta);
        return NULL;
    }
    char trace_id[33];
    json_t *row = json_pack(
        "{s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:s, s:I, s:I}", "request_id",
        proto_msg_request_id(msg), "trace_id", proto_trace_id(proto_msg_trace(msg), trace_id),
        "span_id", json_string_value(json_object_get(meta, "span_id")), "parent_id",
        json_string_value(json_object_get(meta, "parent_id")), "name",
        json_string_value(json_object_get(meta, "name")), "program",
        json_string_value(json_object_get(meta, "program")), "instance", proto_msg_instance(msg),
        "started_us", (json_int_t)proto_msg_started_us(msg), "duration_us",
        (json_int_t)proto_msg_latency_us(msg));
    if (!row || !json_is_string(json_object_get(row, "name"))) {
        json_decref(row);
        json_decref(meta);
        return NULL;
    }
    if (proto_msg_has(msg, PROTO_FIELD_status))
        json_object_set_new(row, "status", json_integer((json_int_t)proto_msg_status(msg)));
    if (proto_msg_has(msg, PROTO_FIELD_attempt))
        json_object_set_new(row, "attempt", json_integer((json_int_t)proto_msg_attempt(msg)));
    if (proto_msg_has(msg, PROTO_FIELD_provider_id))
        json_object_set_new(row, "provider_id",
                            json_integer((json_int_t)proto_msg_provider_id(msg)));
    if (proto_msg_has(msg, PROTO_FIELD_provider_key_id))
        json_object_set_new(row, "provider_key_id",
                            json_integer((json_int_t)proto_msg_provider_key_id(msg)));
    if (proto_msg_has(msg, PROTO_FIELD_upstream_model))
        json_object_set_new(row, "upstream_model", json_string(proto_msg_upstream_model(msg)));
    if (proto_msg_has(msg, PROTO_FIELD_error_code))
        json_object_set_new(row, "error_code", json_string(proto_msg_error_code(msg)));
    json_t *attributes = json_object_get(meta, "attributes");
    if (json_is_object(attributes))
        json_object_set(row, "attributes", attributes);
    json_decref(meta);
    return row;
}

static void s_details_add(ledger_spans_t *self, proto_msg_t *msg);
static bool s_connected(ledger_spans_t *self);

void ledger_spans_add(ledger_spans_t *self, proto_msg_t *msg)
{
    if (!self)
        return;
    if (proto_msg_type(msg) == PROTO_MSG_DETAILS) {
        s_details_add(self, msg);
        return;
    }
    proto_metric_add(self->m_received, 1);
    if (json_array_size(self->queue) >= LEDGER_SPANS_QUEUE_MAX) {
        proto_metric_add(self->m_dropped, 1);
        return;
    }
    json_t *row = s_row(msg);
    if (!row) {
        proto_metric_add(self->m_dropped, 1);
        log_debug(proto_msg_request_id(msg), "spans: dropped a span with unusable meta");
        return;
    }
    json_array_append_new(self->queue, row);
    if (json_array_size(self->queue) >= S_BATCH_MAX)
        ledger_spans_flush(self);
}

//  A DETAILS body is one object of request_details columns; anything of
//  the wrong kind drops it (one bad half must not sink a batch).
static json_t *s_details_row(proto_msg_t *msg)
{
    zframe_t *body = proto_msg_body(msg);
    json_t *row =
        body ? json_loadb((const char *)zframe_data(body), zframe_size(body), 0, NULL) : NULL;
    const char *level = json_string_value(json_object_get(row, "level"));
    bool valid = json_is_object(row) && level &&
                 (strcmp(level, "headers") == 0 || strcmp(level, "full") == 0);
    static const char *objects[] = {"request_headers", "response_headers", NULL};
    static const char *strings[] = {"client_protocol", "request_body", "response_body", NULL};
    static const char *flags[] = {"request_truncated", "response_truncated", NULL};
    for (int i = 0; valid && objects[i]; i++)
        valid =
            !json_object_get(row, objects[i]) || json_is_object(json_object_get(row, objects[i]));
    for (int i = 0; valid && strings[i]; i++)
        valid =
            !json_object_get(row, strings[i]) || json_is_string(json_object_get(row, strings[i]));
    for (int i = 0; valid && flags[i]; i++)
        valid = !json_object_get(row, flags[i]) || json_is_boolean(json_object_get(row, flags[i]));
    if (!valid) {
        json_decref(row);
        return NULL;
    }
    json_object_set_new(row, "request_id", json_string(proto_msg_request_id(msg)));
    return row;
}

//  Queues a half of a request_details row, joined with the other half
//  when both wait in the same batch (one statement may not touch a row
//  twice).
static void s_details_add(ledger_spans_t *self, proto_msg_t *msg)
{
    json_t *row = s_details_row(msg);
    if (!row || !*proto_msg_request_id(msg)) {
        json_decref(row);
        proto_metric_add(self->m_dropped, 1);
        log_debug(proto_msg_request_id(msg), "details: dropped an unusable DETAILS");
        return;
    }
    json_t *waiting = json_object_get(self->details, proto_msg_request_id(msg));
    if (waiting) {
        if (strcmp(json_string_value(json_object_get(row, "level")), "full") == 0)
            json_object_set_new(waiting, "level", json_string("full"));
        json_object_update_missing(waiting, row);
        json_decref(row);
    } else if (json_object_size(self->details) < LEDGER_SPANS_QUEUE_MAX)
        json_object_set_new(self->details, proto_msg_request_id(msg), row);
    else {
        json_decref(row);
        proto_metric_add(self->m_dropped, 1);
    }
}

//  Writes the waiting details: one row per request id, each column filled
//  once, whichever half came first.
static int s_details_flush(ledger_spans_t *self)
{
    size_t count = json_object_size(self->details);
    if (count == 0)
        return 0;
    json_t *rows = json_array();
    const char *key;
    json_t *row;
    json_object_foreach(self->details, key, row) json_array_append(rows, row);
    json_object_clear(self->details);
    char *text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    if (!text || !s_connected(self)) {
        free(text);
        proto_metric_add(self->m_dropped, (double)count);
        return -1;
    }
    const char *params[] = {text};
    PGresult *result = PQexecParams(
        self->db,
        "INSERT INTO request_details AS d (request_id, level, client_protocol, request_headers, "
        "response_headers, request_body, response_body, request_truncated, response_truncated) "
        "SELECT r.request_id, r.level, r.client_protocol, r.request_headers, r.response_headers, "
        "r.request_body, r.response_body, coalesce(r.request_truncated, false), "
        "coalesce(r.response_truncated, false) FROM json_to_recordset($1::json) AS r(request_id "
        "text, level text, client_protocol text, request_headers jsonb, response_headers jsonb, "
        "request_body text, response_body text, request_truncated boolean, response_truncated "
        "boolean) ON CONFLICT (request_id) DO UPDATE SET "
        "level = CASE WHEN d.level = 'full' OR EXCLUDED.level = 'full' THEN 'full' ELSE d.level "
        "END, "
        "client_protocol = coalesce(d.client_protocol, EXCLUDED.client_protocol), "
        "request_headers = coalesce(d.request_headers, EXCLUDED.request_headers), "
        "response_headers = coalesce(d.response_headers, EXCLUDED.response_headers), "
        "request_body = coalesce(d.request_body, EXCLUDED.request_body), "
        "response_body = coalesce(d.response_body, EXCLUDED.response_body), "
        "request_truncated = d.request_truncated OR EXCLUDED.request_truncated, "
        "response_truncated = d.response_truncated OR EXCLUDED.response_truncated",
        1, NULL, params, NULL, NULL, 0);
    free(text);
    int rc = (int)count;
    if (PQresultStatus(result) != PGRES_COMMAND_OK) {
        log_warn(NULL, "details: dropped a batch of %zu: %s", count, PQresultErrorMessage(result));
        proto_metric_add(self->m_dropped, (double)count);
        rc = -1;
    } else
        proto_metric_add(self->m_details, (double)count);
    PQclear(result);
    return rc;
}

static void s_sink(proto_msg_t **msg_p, void *arg)
{
    ledger_spans_add(arg, *msg_p);
}

void ledger_spans_committed(ledger_spans_t *self, const char *request_id, const char *trace,
                            uint64_t started_us, bool keep)
{
    if (!self)
        return;
    uint64_t took = proto_loop_now_us() - started_us;
    proto_span_t span = {.name = "ledger.commit",
                         .started_us = proto_loop_wall_us() - took,
                         .duration_us = took,
                         .status = 200,
                         .keep = keep};
    proto_trace_span(self->tracer, request_id, trace, &span);
}

static bool s_connected(ledger_spans_t *self)
{
    if (self->db && PQstatus(self->db) == CONNECTION_OK)
        return true;
    if (self->db)
        PQfinish(self->db);
    char error[512];
    self->db = proto_db_connect_once(self->url, error, sizeof error);
    if (!self->db)
        log_debug(NULL, "spans: %s", error);
    return self->db != NULL;
}

int ledger_spans_flush(ledger_spans_t *self)
{
    s_details_flush(self);
    size_t count = json_array_size(self->queue);
    if (count == 0)
        return 0;
    char *rows = json_dumps(self->queue, JSON_COMPACT);
    json_array_clear(self->queue);
    if (!rows || !s_connected(self)) {
        free(rows);
        proto_metric_add(self->m_dropped, (double)count);
        return -1;
    }
    const char *params[] = {rows};
    PGresult *result = PQexecParams(
        self->db,
        "INSERT INTO spans (request_id, trace_id, span_id, parent_id, name, program, instance, "
        "started_at, duration_us, status, attempt, provider_id, provider_key_id, upstream_model, "
        "error_code, attributes) "
        "SELECT r.request_id, coalesce(r.trace_id, ''), coalesce(r.span_id, ''), "
        "coalesce(r.parent_id, ''), r.name, coalesce(r.program, '?'), r.instance, "
        "to_timestamp(r.started_us / 1e6), r.duration_us, r.status, r.attempt, r.provider_id, "
        "r.provider_key_id, r.upstream_model, r.error_code, r.attributes "
        "FROM json_to_recordset($1::json) AS r(request_id text, trace_id text, span_id text, "
        "parent_id text, name text, program text, instance text, started_us bigint, "
        "duration_us bigint, status int, attempt int, provider_id bigint, provider_key_id "
        "bigint, upstream_model text, error_code text, attributes jsonb)",
        1, NULL, params, NULL, NULL, 0);
    free(rows);
    int rc = (int)count;
    if (PQresultStatus(result) != PGRES_COMMAND_OK) {
        log_warn(NULL, "spans: dropped a batch of %zu: %s", count, PQresultErrorMessage(result));
        proto_metric_add(self->m_dropped, (double)count);
        rc = -1;
    } else
        proto_metric_add(self->m_inserted, (double)count);
    PQclear(result);
    return rc;
}

//  Deletes old rows of one table in short statements. Returns rows deleted
//  or -1.
static int s_prune_table(ledger_spans_t *self, const char *sql, const char *days)
{
    int deleted = 0;
    const char *params[] = {days};
    for (int i = 0; i < S_PRUNE_STATEMENTS; i++) {
        PGresult *result = PQexecParams(self->db, sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(result) != PGRES_COMMAND_OK) {
            log_warn(NULL, "prune: %s", PQresultErrorMessage(result));
            PQclear(result);
            return -1;
        }
        int rows = atoi(PQcmdTuples(result));
        PQclear(result);
        deleted += rows;
        if (rows < S_PRUNE_ROWS)
            break;
    }
    return deleted;
}

int ledger_spans_prune(ledger_spans_t *self)
{
    if (!s_connected(self))
        return -1;
    char days[16];
    snprintf(days, sizeof days, "%d", self->retention_days);
    //  ctid batches: no long transaction, no lock beyond the rows deleted.
    int spans = s_prune_table(self,
                              "DELETE FROM spans WHERE ctid IN (SELECT ctid FROM spans "
                              "WHERE started_at < now() - make_interval(days => $1::int) "
                              "LIMIT 1000)",
                              days);
    int details = s_prune_table(
        self,
        "DELETE FROM request_details WHERE ctid IN (SELECT ctid FROM request_details "
        "WHERE captured_at < now() - make_interval(days => coalesce((SELECT "
        "(value->>'retention_days')::int FROM settings WHERE key = 'request_log'), $1::int)) "
        "LIMIT 1000)",
        "30");
    if (spans < 0 || details < 0)
        return -1;
    if (spans + details > 0) {
        proto_metric_add(self->m_pruned, spans + details);
        log_info(NULL, "pruned %d spans and %d request details", spans, details);
    }
    return spans + details;
}

static void s_flush_due(proto_loop_t *loop, int id, void *arg)
{
    ledger_spans_flush(arg);
}

static void s_prune_due(proto_loop_t *loop, int id, void *arg)
{
    ledger_spans_prune(arg);
}

ledger_spans_t *ledger_spans_new(proto_service_t *service)
{
    proto_config_t *config = proto_service_config(service);
    proto_metrics_t *metrics = proto_service_metrics(service);
    ledger_spans_t *self = calloc(1, sizeof *self);
    assert(self);
    self->service = service;
    self->loop = proto_service_loop(service);
    self->url = strdup(proto_config_str(config, "database_url"));
    self->queue = json_array();
    self->details = json_object();
    self->retention_days = (int)proto_config_int(config, "ledger.span_retention_days");
    self->m_received = proto_metrics_counter(metrics, "tollgate_ledger_spans_received_total",
                                             "Trace spans received.", NULL);
    self->m_inserted = proto_metrics_counter(metrics, "tollgate_ledger_spans_inserted_total",
                                             "Trace spans written.", NULL);
    self->m_dropped =
        proto_metrics_counter(metrics, "tollgate_ledger_spans_dropped_total",
                              "Trace spans dropped (queue full, bad, db error).", NULL);
    self->m_details = proto_metrics_counter(metrics, "tollgate_ledger_details_written_total",
                                            "request_details halves written.", NULL);
    self->m_pruned = proto_metrics_counter(metrics, "tollgate_ledger_pruned_rows_total",
                                           "Spans and request details pruned.", NULL);
    s_connected(self); //  a missing database is retried at the next flush
    self->flush_timer = proto_loop_add_timer(self->loop, S_FLUSH_MS, true, s_flush_due, self);
    self->prune_timer = proto_loop_add_timer(
        self->loop, (uint64_t)proto_config_int(config, "ledger.prune_interval_ms"), true,
        s_prune_due, self);
    //  The ledger's own spans skip the socket: its sender hands them to us.
    self->tracer = proto_service_trace(service);
    if (!self->tracer)
        self->tracer = self->own_tracer =
            proto_trace_new(NULL, NULL, "ledger", proto_service_instance(service));
    proto_trace_set_sink(self->tracer, s_sink, self);
    return self;
}

void ledger_spans_destroy(ledger_spans_t **self_p)
{
    assert(self_p);
    ledger_spans_t *self = *self_p;
    if (!self)
        return;
    proto_trace_set_sink(self->tracer, NULL, NULL);
    proto_trace_destroy(&self->own_tracer);
    proto_loop_cancel_timer(self->loop, self->flush_timer);
    proto_loop_cancel_timer(self->loop, self->prune_timer);
    ledger_spans_flush(self);
    json_decref(self->queue);
    json_decref(self->details);
    if (self->db)
        PQfinish(self->db);
    free(self->url);
    free(self);
    *self_p = NULL;
}
