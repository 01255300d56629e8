#include "ingress_http.h"
#include "proto_check.h"
#include "ingress_fixture.h"
#include "ingress_admit.h"
#include "ingress_images.h"
#include "ingress_models.h"
#include "ingress_parse.h"
#include "ingress_relay.h"
#include "ingress_request.h"
#include "ingress_route.h"
#include "ingress_server_private.h"
#include "ingress_usage.h"
#include "proto_crypto.h"
#include "proto_error.h"
#include "proto_log.h"
#include "proto_observe.h"
#include "proto_trace.h"

#include <assert.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_DISCARD_FACTOR 4ULL    //  oversize bodies read and dropped up to this x limit
#define S_BODY_INITIAL_MAX 65536 //  first body allocation, whatever Content-Length says

static proto_metric_t *s_requests_counter(ingress_server_t *self, const char *route,
                                          const char *model, int status)
{
    //  A model name is the operator's text: it may hold a quote.
    char labels[512], escaped[300];
    proto_metrics_label(escaped, sizeof escaped, model);
    snprintf(labels, sizeof labels, "route=\"%s\",model=\"%s\",status=\"%d\"", route, escaped,
             status);
    proto_metric_t *metric = zhashx_lookup(self->counters, labels);
    if (!metric) {
        metric = proto_metrics_counter(self->metrics, "tollgate_ingress_requests_total",
                                       "Client API requests by route, model and status.", labels);
        zhashx_insert(self->counters, labels, metric);
    }
    return metric;
}

static proto_metric_t *s_duration_histogram(ingress_server_t *self, const char *route)
{
    proto_metric_t *metric = zhashx_lookup(self->histograms, route);
    if (!metric) {
        char labels[128];
        snprintf(labels, sizeof labels, "route=\"%s\"", route);
        metric = proto_metrics_histogram(self->metrics, "tollgate_ingress_request_seconds",
                                         "Client API request duration, first byte in to last "
                                         "byte out.",
                                         labels);
        zhashx_insert(self->histograms, route, metric);
    }
    return metric;
}

//  The model label: only names the catalog knows, so that clients cannot
//  grow the metric set without bound.
static const char *s_model_label(ingress_server_t *self, ingress_request_t *r)
{
    if (!r->route || r->route->kind != INGRESS_ROUTE_GENERATE)
        return "";
    if (!r->parsed.model[0])
        return "none";
    return proto_catalog_model_for_client(self->catalog, r->parsed.model) ? r->parsed.model
                                                                          : "unknown";
}

//  True when /metrics is open, or the request bears its token (compared
//  as hashes, in constant time).
static bool s_metrics_allowed(ingress_server_t *self, ingress_request_t *r)
{
    if (!self->metrics_token_hash[0])
        return true;
    const char *authorization =
        MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    char hash[PROTO_CRYPTO_HASH_HEX + 1];
    proto_crypto_hash_hex(authorization + 7, strlen(authorization + 7), hash);
    return sodium_memcmp(hash, self->metrics_token_hash, PROTO_CRYPTO_HASH_HEX) == 0;
}

static int s_authenticate(ingress_server_t *self, ingress_request_t *r)
{
    struct MHD_Connection *c = r->connection;
    size_t length;
    ingress_key_source_t source;
    const char *key = ingress_parse_key(
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key"),
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-goog-api-key"),
        //  ?key= only where a protocol defines it (Gemini): elsewhere a key
        //  in a URL ends up in logs and proxies for nothing.
        r->protocol == PROTO_PROTOCOL_GEMINI
            ? MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "key")
            : NULL,
        proto_crypto_key_prefix(), &length, &source);
    if (!key) {
        ingress_request_answer_error(
            r, 401, "invalid_api_key",
            r->protocol == PROTO_PROTOCOL_ANTHROPIC
                ? "Missing API key. Send it in the x-api-key header."
            : r->protocol == PROTO_PROTOCOL_GEMINI
                ? "Missing API key. Send it in the x-goog-api-key header or as ?key=."
                : "Missing API key. Send it as 'Authorization: Bearer YOUR_KEY' (or "
                  "in the x-api-key header).");
        return -1;
    }
    const proto_api_key_t *entry = NULL;
    if (self->test_key && length == 7 && memcmp(key, "tg-test", 7) == 0)
        entry = self->test_key;
    else if (length <= INGRESS_KEY_MAX) {
        char hash[PROTO_CRYPTO_HASH_HEX + 1];
        proto_crypto_hash_hex(key, length, hash);
        entry = proto_catalog_key_by_hash(self->catalog, hash);
    }
    const char *problem =
        entry == self->test_key && entry
            ? NULL
            : proto_catalog_key_problem(self->catalog, entry, proto_loop_wall_us());
    if (problem) {
        log_debug(r->id, "key refused: %s", problem);
        const char *message = strcmp(problem, "revoked") == 0    ? "This API key has been revoked."
                              : strcmp(problem, "expired") == 0  ? "This API key has expired."
                              : strcmp(problem, "disabled") == 0 ? "This API key is disabled."
                              : strcmp(problem, "account_disabled") == 0
                                  ? "The account of this API key is disabled."
                                  : "Invalid API key.";
        ingress_request_answer_error(r, 401, "invalid_api_key", message);
        return -1;
    }
    r->key_id = entry->id;
    r->account_id = entry->account_id;
    return 0;
}

//  The models this key may use (ingress_models), in the list shape of the
//  client's protocol; or one of them, named by the path.
static void s_answer_models(ingress_server_t *self, ingress_request_t *r)
{
    const proto_api_key_t *key = proto_catalog_key(self->catalog, r->key_id);
    char *text;
    if (r->route->kind == INGRESS_ROUTE_MODEL) {
        const char *model = r->path_model ? r->path_model : "";
        text = ingress_models_one(self->catalog, key, r->protocol, model);
        if (!text) {
            char message[INGRESS_MODEL_MAX + 96];
            snprintf(message, sizeof message,
                     "The model '%s' does not exist or you do not have access to it.", model);
            ingress_request_answer_error(r, 404, "model_not_found", message);
            return;
        }
    } else
        text = strdup(ingress_models_list(self->models, self->catalog, key, r->protocol,
                                          proto_loop_now_ms(), NULL));
    assert(text);
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    //  The list is per key: shared caches must not keep it.
    char cache[48];
    snprintf(cache, sizeof cache, "private, max-age=%llu",
             (unsigned long long)(self->models_cache_ms / 1000));
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, cache);
    ingress_request_answer(r, 200, response);
}

//  OpenAI, Anthropic and Gemini clients share GET /v1/models; an Anthropic
//  SDK sends anthropic-version (and its key as x-api-key), a Gemini one
//  x-goog-api-key or ?key=, and each expects its own list and error shapes.
static void s_models_protocol(ingress_request_t *r)
{
    struct MHD_Connection *c = r->connection;
    if ((r->route->kind == INGRESS_ROUTE_MODELS || r->route->kind == INGRESS_ROUTE_MODEL) &&
        r->protocol == PROTO_PROTOCOL_OPENAI) {
        if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "anthropic-version") ||
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key"))
            r->protocol = PROTO_PROTOCOL_ANTHROPIC;
        //  Gemini serves its list under /v1 too, for its own key headers.
        else if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-goog-api-key") ||
                 MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "key"))
            r->protocol = PROTO_PROTOCOL_GEMINI;
    }
}

//  First call for a request: headers are in, the body (if any) is not.
static enum MHD_Result s_client_begin(ingress_server_t *self, ingress_request_t *r, const char *url,
                                      const char *method)
{
    struct MHD_Connection *c = r->connection;
    const char *client_id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-request-id");
    if (ingress_parse_request_id_valid(client_id))
        ingress_parse_client_request_id(client_id, r->id);
    else
        ingress_parse_new_request_id(r->id);
    ingress_parse_traceparent(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "traceparent"),
                              r->trace);
    int status;
    r->route = ingress_route_find(url, method, &status, &r->protocol);
    if (r->route)
        s_models_protocol(r);
    size_t head = ingress_daemon_head_size(c, url, method);
    if (head > ingress_daemon_head_room(self->client)) {
        char message[160];
        snprintf(message, sizeof message,
                 "The request's headers are too large (%zu bytes; at most %zu here)", head,
                 ingress_daemon_head_room(self->client));
        r->bare_answer = true;
        ingress_request_answer_error(r, 431, "request_header_fields_too_large", message);
        return MHD_YES;
    }
    if (!r->route) {
        char message[300];
        if (status == 405)
            snprintf(message, sizeof message, "Method %.16s is not allowed on %.200s (use %s)",
                     method, url, ingress_route_allowed(url));
        else
            snprintf(message, sizeof message, "Unknown path %.200s", url);
        char *body = proto_error_body(r->protocol, status,
                                      status == 405 ? "method_not_allowed" : "not_found", message);
        struct MHD_Response *response =
            MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        if (status == 405)
            MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, ingress_route_allowed(url));
        ingress_request_answer(r, (unsigned)status, response);
        return MHD_YES;
    }
    if (r->route->prefix) {
        char model[INGRESS_MODEL_MAX + 1];
        if (ingress_route_model(r->route, url, model, sizeof model) != 0) {
            ingress_request_answer_error(r, 400, "invalid_request_error",
                                         "The model name in the path is too long");
            return MHD_YES;
        }
        r->path_model = strdup(model);
        assert(r->path_model);
    }
    if (r->route->stream == INGRESS_STREAM_ALWAYS) {
        //  Gemini streams SSE only with alt=sse; without it the answer is
        //  one JSON array whose elements arrive as they are made.
        const char *alt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "alt");
        //  An Accept header asking for server-sent events gets them too.
        r->json_array =
            (!alt || strcmp(alt, "sse") != 0) &&
            !ingress_parse_accepts_sse(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "accept"));
    }
    switch (r->route->kind) {
    case INGRESS_ROUTE_HEALTH:
        if (self->draining)
            ingress_request_answer_text(r, 503, "application/json", "{\"status\":\"draining\"}",
                                        false);
        else if (!self->catalog)
            ingress_request_answer_text(r, 503, "application/json", "{\"status\":\"loading\"}",
                                        false);
        else if (!ingress_relay_dispatch_connected(self))
            //  Requests would only wait (ingress_relay): a load balancer
            //  should send them to another ingress.
            ingress_request_answer_text(r, 503, "application/json", "{\"status\":\"no_dispatch\"}",
                                        false);
        else
            ingress_request_answer_text(r, 200, "application/json", "{\"status\":\"ok\"}", false);
        return MHD_YES;
    case INGRESS_ROUTE_METRICS:
        if (!self->client_metrics)
            ingress_request_answer_error(r, 404, "not_found", "Unknown path.");
        else if (!s_metrics_allowed(self, r))
            ingress_request_answer_error(r, 401, "invalid_api_key",
                                         "/metrics needs its bearer token.");
        else
            ingress_request_answer_text(r, 200, "text/plain; version=0.0.4",
                                        proto_metrics_render(self->metrics), true);
        return MHD_YES;
    case INGRESS_ROUTE_USAGE: {
        char problem[160];
        if (s_authenticate(self, r) == 0 &&
            ingress_usage_check(r->route->name,
                                MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "start_date"),
                                MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "end_date"),
                                problem, sizeof problem) != 0)
            ingress_request_answer_error(r, 400, "invalid_request_error", problem);
        return MHD_YES; //  asked for at the handler's last call (ingress_admit_usage)
    }
    case INGRESS_ROUTE_MODELS:
    case INGRESS_ROUTE_MODEL:
        if (s_authenticate(self, r) == 0)
            s_answer_models(self, r);
        return MHD_YES;
    case INGRESS_ROUTE_GENERATE:
        break;
    }
    if (self->draining) {
        ingress_request_answer_error(r, 503, "shutting_down",
                                     "The gateway is shutting down; retry");
        return MHD_YES;
    }
    if (s_authenticate(self, r) != 0)
        return MHD_YES;
    //  Refuse an announced oversize body before reading any of it.
    const char *length =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long announced = length ? strtoull(length, NULL, 10) : 0;
    if (announced > self->max_body) {
        char message[160];
        snprintf(message, sizeof message, "The request body is larger than %zu bytes",
                 self->max_body);
        //  Most clients (Node's fetch among them) do not read an answer
        //  until they have sent their body, and see a reset instead of the
        //  413 when the server answers early and closes. So a body up to a
        //  few times the limit is read and dropped before the 413 goes out;
        //  only a larger one is cut short.
        r->close_now = announced > S_DISCARD_FACTOR * self->max_body;
        ingress_request_answer_error(r, 413, "request_too_large", message);
        return MHD_YES;
    }
    r->body_capacity = announced ? (size_t)announced : 4096;
    if (r->body_capacity > S_BODY_INITIAL_MAX)
        r->body_capacity = S_BODY_INITIAL_MAX;
    r->body = malloc(r->body_capacity + 1);
    assert(r->body);
    return MHD_YES;
}

static enum MHD_Result s_client_body(ingress_server_t *self, ingress_request_t *r, const char *data,
                                     size_t size)
{
    if (r->body_too_large || r->body_size + size > self->max_body) {
        //  Over the limit mid-body (no Content-Length): MHD lets us answer
        //  only once the body is in, so read on and drop, but not forever.
        r->body_too_large = true;
        r->body_discarded += size;
        return r->body_discarded > S_DISCARD_FACTOR * self->max_body ? MHD_NO : MHD_YES;
    }
    if (r->body_size + size > r->body_capacity) {
        size_t capacity = r->body_capacity * 2;
        while (capacity < r->body_size + size)
            capacity *= 2;
        if (capacity > self->max_body)
            capacity = self->max_body;
        char *grown = realloc(r->body, capacity + 1);
        assert(grown);
        r->body = grown;
        r->body_capacity = capacity;
    }
    memcpy(r->body + r->body_size, data, size);
    r->body_size += size;
    return MHD_YES;
}

//  Routing hints from the headers complete those of the body: X-Session-Id
//  wins over the body's user ids, and Anthropic's 1M-context beta header
//  needs keys that have that context.
static void s_route_hints(ingress_request_t *r)
{
    struct MHD_Connection *c = r->connection;
    const char *session = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-session-id");
    if (session && *session && strlen(session) <= INGRESS_SESSION_MAX)
        ingress_body_set_session(&r->parsed, session);
    const char *beta = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "anthropic-beta");
    if (beta && strstr(beta, "context-1m"))
        ingress_body_need_capability(&r->parsed, "context-1m");
    //  What the key, its account or the model is set to force, whatever the request.
    proto_catalog_t *catalog = r->server->catalog;
    const proto_api_key_t *key = catalog ? proto_catalog_key(catalog, r->key_id) : NULL;
    const proto_account_t *account = catalog ? proto_catalog_account(catalog, r->account_id) : NULL;
    for (size_t i = 0; key && i < key->force_capabilities.count; i++)
        ingress_body_need_capability(&r->parsed, key->force_capabilities.names[i]);
    for (size_t i = 0; account && i < account->force_capabilities.count; i++)
        ingress_body_need_capability(&r->parsed, account->force_capabilities.names[i]);
    const proto_model_t *model =
        catalog ? proto_catalog_model_for_client(catalog, r->parsed.model) : NULL;
    for (size_t i = 0; model && i < model->force_capabilities.count; i++)
        ingress_body_need_capability(&r->parsed, model->force_capabilities.names[i]);
}

static enum MHD_Result s_client_submit(ingress_server_t *self, ingress_request_t *r)
{
    r->received_us = proto_loop_now_us();
    r->phase = INGRESS_PHASE_ANSWERED; //  unless it goes out below
    if (r->body_too_large) {
        char message[160];
        snprintf(message, sizeof message, "The request body is larger than %zu bytes",
                 self->max_body);
        ingress_request_answer_error(r, 413, "request_too_large", message);
        return MHD_YES;
    }
    //  jansson would build every value first: a body of nothing but zeros
    //  is refused before it costs memory and time.
    if (ingress_parse_json_elements(r->body, r->body_size, self->max_json_elements) >
        self->max_json_elements) {
        char message[160];
        snprintf(message, sizeof message, "The request body holds more than %zu JSON values",
                 self->max_json_elements);
        ingress_request_answer_error(r, 413, "request_too_large", message);
        return MHD_YES;
    }
    //  The buffer keeps a byte for it: proto_jscan checks a real number with
    //  strtod, which (like ASan's strict string checks) may look for a NUL.
    if (r->body)
        r->body[r->body_size] = '\0';
    char problem[300];
    if (ingress_parse_body(r->protocol, r->route->count_tokens,
                           r->path_model && *r->path_model ? r->path_model : NULL, r->body,
                           r->body_size, &r->parsed, problem, sizeof problem) != 0) {
        log_debug(r->id, "bad request: %s", problem);
        ingress_request_answer_error(r, 400, "invalid_request_error", problem);
        return MHD_YES;
    }
    if (ingress_images_check(self->catalog, r->protocol, r->parsed.model, problem,
                             sizeof problem) != 0) {
        ingress_request_answer_error(r, 400, "invalid_request_error", problem);
        return MHD_YES;
    }
    if (r->route->stream == INGRESS_STREAM_ALWAYS)
        r->parsed.stream = true;
    else if (r->route->stream == INGRESS_STREAM_NEVER)
        r->parsed.stream = false;
    else if (!r->parsed.stream_given && !r->route->count_tokens &&
             ingress_parse_accepts_sse(
                 MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND, "accept")) &&
             ingress_parse_add_stream(&r->body, &r->body_size) == 0) {
        //  Asked for a stream by its Accept header alone: the body says so
        //  too from here on, so every adapter downstream sees one flag. A
        //  body's own "stream" (true or false) is the client's word and wins.
        r->parsed.stream = true;
        r->body_capacity = r->body_size;
    }
    if (!ingress_request_register(r)) {
        //  Another request took this client id since the headers came.
        ingress_parse_new_request_id(r->id);
        ingress_request_register(r);
    }
    s_route_hints(r);
    ingress_admit_submit(self, r);
    return MHD_YES;
}

enum MHD_Result ingress_http_access(void *arg, struct MHD_Connection *connection, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **request_p)
{
    ingress_server_t *self = arg;
    ingress_request_t *r = *request_p;
    enum MHD_Result rc = MHD_YES;
    if (!r) {
        r = ingress_request_new(self, connection);
        *request_p = r;
        r->in_handler = r->first_call = true;
        rc = s_client_begin(self, r, url, method);
        r->first_call = false;
    } else if (*upload_data_size) {
        r->in_handler = true;
        size_t size = *upload_data_size;
        *upload_data_size = 0;
        if (r->phase == INGRESS_PHASE_RECEIVING && r->body && !r->response)
            rc = s_client_body(self, r, upload_data, size);
        else {
            //  The answer is decided already; read the body to keep the
            //  connection, but only so much of it.
            r->body_discarded += size;
            rc = r->body_discarded > S_DISCARD_FACTOR * self->max_body ? MHD_NO : MHD_YES;
        }
    } else if (r->response) {
        //  The last call of a request answered early, or a call after a
        //  resume: queue what was prepared.
        struct MHD_Response *response = r->response;
        r->response = NULL;
        rc = MHD_queue_response(connection, r->response_status, response);
        MHD_destroy_response(response);
    } else if (r->phase == INGRESS_PHASE_RECEIVING && r->route &&
               r->route->kind == INGRESS_ROUTE_USAGE) {
        r->in_handler = true;
        ingress_admit_usage(self, r);
    } else if (r->phase == INGRESS_PHASE_RECEIVING && r->body) {
        r->in_handler = true;
        //  Read whole: a slow answer is not a slow client.
        ingress_daemon_request_received(self->client, connection);
        rc = s_client_submit(self, r);
    }
    r->in_handler = false;
    return rc;
}

void ingress_http_completed(void *arg, struct MHD_Connection *connection, void **request_p,
                            enum MHD_RequestTerminationCode code)
{
    ingress_server_t *self = arg;
    ingress_request_t *r = *request_p;
    if (!r)
        return;
    *request_p = NULL;
    ingress_request_unwatch(r);
    bool clean = code == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (!clean) {
        switch (r->phase) {
        case INGRESS_PHASE_WAITING:
            ingress_admit_abandon(self, r, 499);
            break;
        case INGRESS_PHASE_QUERY:
            ingress_server_forget(r);
            break;
        case INGRESS_PHASE_DISPATCHED:
        case INGRESS_PHASE_STREAMING:
            if (r->phase == INGRESS_PHASE_DISPATCHED)
                ingress_relay_settle_held(r);
            ingress_relay_end(r, "client_closed");
            break;
        default:
            break;
        }
        if (!r->status || r->phase == INGRESS_PHASE_STREAMING)
            r->status = 499;
    }
    r->connection = NULL;
    ingress_request_unlink(r);
    const char *route = r->route ? r->route->name : "unmatched";
    proto_metric_add(s_requests_counter(self, route, s_model_label(self, r), r->status), 1);
    proto_metric_observe(s_duration_histogram(self, route),
                         (double)(proto_loop_now_us() - r->started_us) / 1e6);
    //  The request's end in this program: its spans are kept when it failed,
    //  failed over or was slow (or is in the sampled share), else dropped.
    //  A stream was slow if its first byte was.
    uint64_t waited_us =
        proto_trace_waited_us(r->first_byte_us != 0, proto_loop_now_us() - r->started_us,
                              r->first_byte_us ? r->first_byte_us - r->started_us : 0);
    bool keep = r->status >= 400 || r->attempts > 1 || proto_trace_is_slow(self->tracer, waited_us);
    proto_observe_span_final(self->tracer, r->id, r->trace, "ingress.request", r->started_us,
                             r->first_byte_us, r->status, keep);
    proto_trace_finish(self->tracer, r->id, keep);
    proto_capture_send(&r->capture, self->tracer, r->id, r->trace, r->protocol, NULL);
    if (r->received_us && r->route && r->route->kind == INGRESS_ROUTE_GENERATE)
        log_debug(r->id, "%d %s in %.3f ms", r->status, r->parsed.model,
                  (double)(proto_loop_now_us() - r->started_us) / 1000.0);
    ingress_request_unref(r);
    ingress_server_check_drained(self);
}

//  --------------------------------------------------------------------------
//  Self test: through a server with fake billing and dispatch (ingress_fixture).

//  Answers that need nobody else.
static void s_test_local_answers(ingress_fixture_t *test)
{
    char request[4096];
    ingress_fixture_client_t *client =
        ingress_fixture_request(test, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                      "x-request-id: my-id.1\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(strstr(client->data, "x-request-id: my-id.1."));
    PROTO_CHECK(strstr(client->data, "{\"status\":\"ok\"}"));
    //  Answers decided from the headers keep the connection alive.
    client = ingress_fixture_request(test, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                                           "GET /v1/models HTTP/1.1\r\nHost: t\r\n"
                                           "Connection: close\r\n\r\n");
    char *second_answer = strstr(client->data, "HTTP/1.1 401");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0 && second_answer);
    PROTO_CHECK(!memmem(client->data, (size_t)(second_answer - client->data), "close", 5));
    client =
        ingress_fixture_request(test, "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 404", 12) == 0);
    PROTO_CHECK(strstr(client->data, "\"code\":\"not_found\"") &&
                strstr(client->data, "x-request-id"));
    client = ingress_fixture_request(
        test, "GET /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 405", 12) == 0);
    PROTO_CHECK(strstr(client->data, "Allow: POST"));
    client = ingress_fixture_request(
        test, "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
              "Content-Length: 2\r\n\r\n{}");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 401", 12) == 0);
    PROTO_CHECK(strstr(client->data, "Missing API key") && strstr(client->data, "invalid_api_key"));
    client =
        ingress_fixture_request(test, "GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                      "x-api-key: wrong\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 401", 12) == 0);
    PROTO_CHECK(strstr(client->data, "Invalid API key."));
    client = ingress_fixture_request(
        test, "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
              "Authorization: Bearer tg-test\r\nContent-Length: 65536\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 413", 12) == 0);
    client = ingress_fixture_request(
        test, ingress_fixture_chat("", "{\"model\":", request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 400", 12) == 0 && strstr(client->data, "JSON"));
    client = ingress_fixture_request(
        test, ingress_fixture_chat("", "{\"model\":\"m\"}", request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 400", 12) == 0);
    PROTO_CHECK(strstr(client->data, "'messages'") &&
                strstr(client->data, "x-tollgate-overhead-ms"));
    client =
        ingress_fixture_request(test, "GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                      "Authorization: Bearer tg-test\r\n\r\n");
    PROTO_CHECK(strstr(client->data, "{\"object\":\"list\",\"data\":[]}"));
    client = ingress_fixture_request(
        test, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    PROTO_CHECK(strstr(client->data, "tollgate_ingress_requests_total{route=\"models\""));
    PROTO_CHECK(test->admits == 0);
}

//  Gemini: model and stream from the path, the JSON array asked for
//  without alt=sse; the key in x-goog-api-key. Anthropic count_tokens.
static void s_test_protocols(ingress_fixture_t *test)
{
    char request[4096];
    const char *gemini = "{\"contents\":[{\"parts\":[{\"text\":\"hi\"}]}]}";
    snprintf(request, sizeof request,
             "POST /v1beta/models/gm-1:streamGenerateContent HTTP/1.1\r\nHost: t\r\n"
             "Connection: close\r\nx-goog-api-key: tg-test\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(gemini), gemini);
    ingress_fixture_client_t *client = ingress_fixture_request(test, request);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(test->dispatch_protocol == PROTO_PROTOCOL_GEMINI && test->dispatch_stream);
    PROTO_CHECK(strcmp(test->dispatch_model, "gm-1") == 0);
    PROTO_CHECK(strcmp(test->dispatch_meta, "{\"json_array\":true}") == 0);
    const char *count = "{\"model\":\"c-1\",\"messages\":[]}";
    snprintf(request, sizeof request,
             "POST /v1/messages/count_tokens HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "x-api-key: tg-test\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(count), count);
    client = ingress_fixture_request(test, request);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(test->dispatch_protocol == PROTO_PROTOCOL_ANTHROPIC && !test->dispatch_stream);
    PROTO_CHECK(strcmp(test->dispatch_meta, "{\"count_tokens\":true}") == 0);
    //  Errors on a Gemini path are in Gemini's shape.
    client = ingress_fixture_request(test,
                                     "POST /v1beta/models/gm-1:generateContent HTTP/1.1\r\n"
                                     "Host: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 401", 12) == 0);
    PROTO_CHECK(strstr(client->data, "\"status\":\"UNAUTHENTICATED\""));
    test->admits = test->dispatches = 0;
}

//  A request whose head nearly fills its connection's pool (8 KiB here)
//  still gets an answer with a status line: a 431 in its protocol's shape
//  once the head leaves too little room for an answer, the request served
//  below that size. Before, a GET with a head of ~7.6-7.9 KB was closed
//  with nothing sent (no room for the answer's headers), and MHD's own 431
//  (HTML) is what a head that does not fit at all gets. A POST's body takes
//  room too: heads within ~150 bytes of that point still get nothing
//  (MHD 0.9.75 closes), so its sweep stops short of them.
static void s_test_head_room(ingress_fixture_t *test)
{
    size_t size = 16 * 1024;
    char *pad = malloc(size), *request = malloc(size);
    assert(pad && request);
    const char *body = "{\"model\":\"c-1\",\"max_tokens\":5,\"messages\":[]}";
    for (int get = 0; get < 2; get++) {
        int refused = 0;
        for (size_t length = 5000; length <= (get ? 7680u : 7550u); length += 10) {
            memset(pad, 'a', length);
            pad[length] = '\0';
            if (get)
                snprintf(request, size,
                         "GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                         "x-api-key: tg-test\r\nX-Pad: %s\r\n\r\n",
                         pad);
            else
                snprintf(request, size,
                         "POST /v1/messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                         "x-api-key: tg-test\r\nX-Pad: %s\r\nContent-Length: %zu\r\n\r\n%s",
                         pad, strlen(body), body);
            ingress_fixture_client_t *client = ingress_fixture_request(test, request);
            PROTO_CHECK(strncmp(client->data, "HTTP/1.1 ", 9) == 0);
            if (strstr(client->data, "<html>"))
                break; //  MHD's own 431: the head did not fit in the pool at all
            if (strncmp(client->data, "HTTP/1.1 431", 12) == 0) {
                //  Anthropic's shape (x-api-key), the size in the message.
                PROTO_CHECK(strstr(client->data, "\"type\":\"error\"") &&
                            strstr(client->data, "headers are too large"));
                refused++;
            } else
                PROTO_CHECK(refused == 0); //  served below a size, refused above it
        }
        PROTO_CHECK(refused >= 3);
    }
    free(pad);
    free(request);
    test->admits = test->dispatches = 0;
}

void ingress_http_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_http: ");
    ingress_fixture_t *test = ingress_fixture_new(50);
    s_test_local_answers(test);
    s_test_protocols(test);
    s_test_head_room(test);
    ingress_fixture_destroy(&test);
    if (verbose)
        printf("OK\n");
}
