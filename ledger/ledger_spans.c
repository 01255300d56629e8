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
    char *url;                  //  database_url, for reconnecting
    PGconn *db;                 //  our own connection, NULL while away
    json_t *queue;              //  array of span objects waiting
    int flush_timer;            //  repeating flush
    int prune_timer;            //  repeating prune
    int retention_days;         //  ledger.span_retention_days
    proto_metric_t *m_received; //  spans received
    proto_metric_t *m_inserted; //  spans inserted
    proto_metric_t *m_dropped;  //  spans dropped
    proto_metric_t *m_pruned;   //  rows pruned, spans and request details
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

void ledger_spans_add(ledger_spans_t *self, proto_msg_t *msg)
{
    if (!self)
        return;
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

static void s_sink(proto_msg_t **msg_p, void *arg)
{
    ledger_spans_add(arg, *msg_p);
}

void ledger_spans_committed(ledger_spans_t *self, const char *request_id, const char *trace,
                            uint64_t started_us)
{
    if (!self)
        return;
    uint64_t took = proto_loop_now_us() - started_us;
    proto_span_t span = {.name = "ledger.commit",
                         .started_us = proto_loop_wall_us() - took,
                         .duration_us = took,
                         .status = 200};
    proto_trace_span(request_id, trace, &span);
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
    self->retention_days = (int)proto_config_int(config, "ledger.span_retention_days");
    self->m_received = proto_metrics_counter(metrics, "tollgate_ledger_spans_received_total",
                                             "Trace spans received.", NULL);
    self->m_inserted = proto_metrics_counter(metrics, "tollgate_ledger_spans_inserted_total",
                                             "Trace spans written.", NULL);
    self->m_dropped =
        proto_metrics_counter(metrics, "tollgate_ledger_spans_dropped_total",
                              "Trace spans dropped (queue full, bad, db error).", NULL);
    self->m_pruned = proto_metrics_counter(metrics, "tollgate_ledger_pruned_rows_total",
                                           "Spans and request details pruned.", NULL);
    s_connected(self); //  a missing database is retried at the next flush
    self->flush_timer = proto_loop_add_timer(self->loop, S_FLUSH_MS, true, s_flush_due, self);
    self->prune_timer = proto_loop_add_timer(
        self->loop, (uint64_t)proto_config_int(config, "ledger.prune_interval_ms"), true,
        s_prune_due, self);
    proto_trace_set_sink(s_sink, self);
    return self;
}

void ledger_spans_destroy(ledger_spans_t **self_p)
{
    assert(self_p);
    ledger_spans_t *self = *self_p;
    if (!self)
        return;
    proto_trace_set_sink(NULL, NULL);
    proto_loop_cancel_timer(self->loop, self->flush_timer);
    proto_loop_cancel_timer(self->loop, self->prune_timer);
    ledger_spans_flush(self);
    json_decref(self->queue);
    if (self->db)
        PQfinish(self->db);
    free(self->url);
    free(self);
    *self_p = NULL;
}
