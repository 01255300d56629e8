/*  mock_upstream - a fake OpenAI / Anthropic / Gemini upstream for Tollgate's tests

    This file is the HTTP side: it routes a request, records it, finds the fault in force,
    has the answer made (mock_reply, mock_shape, mock_stream, mock_control) and queues it to
    MHD, or parks it in mock_waiter first. mock_req.h shows the whole way of a request.
*/

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
//  Asserts guard our own invariants and drive the self test: they stay on in release builds.
#undef NDEBUG
#include "mock_upstream.h"
#include "proto_check.h"
#include "mock_control.h"
#include "mock_reply.h"
#include "mock_req.h"
#include "mock_shape.h"
#include "mock_stream.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

//  -------------------------------------------------------------------------
//  Request reading

static enum MHD_Result s_collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    (void)kind;
    char name[128];
    size_t size = strlen(key);
    if (size >= sizeof(name))
        return MHD_YES;
    for (size_t index = 0; index <= size; index++)
        name[index] = (char)(key[index] >= 'A' && key[index] <= 'Z' ? key[index] + 32 : key[index]);
    json_object_set_new(cls, name, json_string(value ? value : ""));
    return MHD_YES;
}

//  -------------------------------------------------------------------------
//  Answering

static enum MHD_Result s_queue(mock_req_t *req)
{
    mock_upstream_t *self = req->owner;
    struct MHD_Response *response;
    bool shared = false; //  The response holds a reference to req
    if (req->stream) {
        shared = true;
        atomic_fetch_add(&req->refs, 1);
        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, mock_stream_reader,
                                                     req, mock_req_unref);
        mock_control_stream_opened(self, req);
        pthread_mutex_lock(&self->mutex);
        self->streams_started++;
        pthread_mutex_unlock(&self->mutex);
    } else if (req->fault.cut_after >= 0 && req->reply) {
        shared = true;
        atomic_fetch_add(&req->refs, 1);
        response = MHD_create_response_from_callback(req->reply_len, 16384, mock_stream_cut_reader,
                                                     req, mock_req_unref);
    } else {
        size_t size = req->reply_len;
        if (req->fault.malformed && req->status < 300)
            size /= 2; //  Valid HTTP, invalid JSON
        response = MHD_create_response_from_buffer(size, req->reply, MHD_RESPMEM_MUST_FREE);
        if (response)
            req->reply = NULL; //  MHD owns it now
    }
    if (!response) {
        if (shared)
            mock_req_unref(req);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, req->ctype);
    if (req->stream)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    char value[64];
    snprintf(value, sizeof(value), "mock-%lu", req->seq);
    MHD_add_response_header(response, "x-request-id", value);
    if (req->status == 429) {
        snprintf(value, sizeof(value), "%d", req->fault.retry_after);
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, value);
    }
    enum MHD_Result rc = MHD_queue_response(req->conn, (unsigned)req->status, response);
    MHD_destroy_response(response);
    req->phase = PH_QUEUED;
    if (self->verbose)
        fprintf(stderr, "mock: %s %s model=%s status=%d%s\n", req->method, req->path,
                req->model ? req->model : "", req->status, req->stream ? " stream" : "");
    return rc;
}

//  Sends the plan now, or holds the connection first for delay-headers / hang.
static enum MHD_Result s_deliver(mock_req_t *req)
{
    if (req->fault.hang || req->fault.delay_headers_ms) {
        uint64_t due =
            req->fault.hang ? MOCK_NEVER : mock_now_ms() + (uint64_t)req->fault.delay_headers_ms;
        mock_control_stream_opened(req->owner, req);
        req->phase = PH_WAIT;
        return mock_waiter_hold(req, due) ? MHD_NO : MHD_YES;
    }
    return s_queue(req);
}

//  -------------------------------------------------------------------------
//  Dispatch

//  The path a request is served as: its alias's target (a relay's own
//  path, such as /api/chat/completions for /v1/chat/completions), else itself.
static const char *s_alias(mock_upstream_t *self, const char *path, char *buf, size_t size)
{
    for (const char *at = self->aliases; at && *at;) {
        size_t length = strcspn(at, ",");
        const char *equals = memchr(at, '=', length);
        if (equals && (size_t)(equals - at) == strlen(path) && !strncmp(at, path, strlen(path))) {
            snprintf(buf, size, "%.*s", (int)(length - (size_t)(equals + 1 - at)), equals + 1);
            return buf;
        }
        at += length + (at[length] == ',');
    }
    return path;
}

static void s_route(mock_req_t *req)
{
    char alias[512];
    const char *path = s_alias(req->owner, req->path, alias, sizeof alias);
    bool post = !strcmp(req->method, "POST");
    bool get = !strcmp(req->method, "GET");
    req->route = R_NOT_FOUND;
    req->proto = P_OPENAI;
    if (!strncmp(path, "/v1beta/", 8) ||
        (!strncmp(path, "/v1/models/", 11) && strchr(path + 11, ':'))) {
        req->proto = P_GEMINI;
        const char *rest = strstr(path, "/models");
        rest = rest ? rest + 7 : "";
        const char *colon = strchr(rest, ':');
        if (!strcmp(rest, "") && get)
            req->route = R_GEM_MODELS;
        else if (*rest == '/' && !colon && get) {
            req->route = R_GEM_MODEL;
            req->model = strdup(rest + 1);
        } else if (*rest == '/' && colon && post) {
            req->model = strndup(rest + 1, (size_t)(colon - rest - 1));
            if (!strcmp(colon, ":generateContent"))
                req->route = R_GEM_GENERATE;
            else if (!strcmp(colon, ":streamGenerateContent"))
                req->route = R_GEM_STREAM;
            else if (!strcmp(colon, ":countTokens"))
                req->route = R_GEM_COUNT;
        }
        return;
    }
    if (!strcmp(path, "/v1/messages") || !strcmp(path, "/v1/messages/count_tokens")) {
        req->proto = P_ANTHROPIC;
        if (post)
            req->route = path[12] ? R_COUNT_TOKENS : R_MESSAGES;
        return;
    }
    if (!strncmp(path, "/v1/models", 10) && mock_req_header(req, "anthropic-version"))
        req->proto = P_ANTHROPIC;
    if (post && !strcmp(path, "/v1/chat/completions"))
        req->route = R_CHAT;
    else if (post && !strcmp(path, "/v1/responses"))
        req->route = R_RESPONSES;
    else if (post && !strcmp(path, "/v1/embeddings"))
        req->route = R_EMBEDDINGS;
    else if (post && !strcmp(path, "/v1/images/generations"))
        req->route = R_IMAGES;
    else if (get && !strcmp(path, "/v1/models"))
        req->route = R_MODELS;
    else if (get && !strncmp(path, "/v1/models/", 11)) {
        req->route = R_MODEL;
        req->model = strdup(path + 11);
    } else if (get && !strcmp(path, "/mock/stats"))
        req->route = R_MOCK_STATS;
    else if (post && !strcmp(path, "/mock/reset"))
        req->route = R_MOCK_RESET;
    else if (get && !strcmp(path, "/mock/requests"))
        req->route = R_MOCK_REQUESTS;
    else if ((post || get) && !strcmp(path, "/mock/faults"))
        req->route = R_MOCK_FAULTS;
}

//  Returns the API key the request carries and how; NULL if none.
static const char *s_api_key(mock_req_t *req, const char **kind)
{
    const char *value = mock_req_header(req, "authorization");
    if (value && !strncasecmp(value, "Bearer ", 7)) {
        *kind = "bearer";
        return value + 7;
    }
    if ((value = mock_req_header(req, "x-api-key"))) {
        *kind = "x-api-key";
        return value;
    }
    if ((value = mock_req_header(req, "x-goog-api-key"))) {
        *kind = "x-goog-api-key";
        return value;
    }
    if ((value = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "key"))) {
        *kind = "query-key";
        return value;
    }
    *kind = NULL;
    return NULL;
}

//  Records the request in the counters and as "last"; returns the key seen.
//  A GET (a model list, which health asks for whenever it likes) is in the
//  journal and the per-path counts but is neither "last" nor in
//  requests_total: those say what a test's own generation calls did.
static void s_record(mock_req_t *req, json_t *body, const char *key, const char *kind)
{
    mock_upstream_t *self = req->owner;
    json_t *headers = json_object();
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, s_collect_header, headers);
    json_t *stream = NULL;
    if (req->route == R_GEM_STREAM || req->route == R_GEM_GENERATE)
        stream = json_boolean(req->route == R_GEM_STREAM);
    else
        stream = json_incref(json_object_get(body, "stream"));
    json_t *options = json_object_get(body, "stream_options");
    const char *version = mock_req_header(req, "anthropic-version");
    const char *beta = mock_req_header(req, "anthropic-beta");
    json_t *last = json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:o, s:o, s:o}", "method",
                             req->method, "path", req->path, "model", req->model, "auth_type", kind,
                             "api_key", key, "anthropic_version", version, "anthropic_beta", beta,
                             "stream", stream ? stream : json_null(), "stream_options",
                             options ? json_deep_copy(options) : json_null(), "headers", headers);
    const char *query = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "alt");
    if (query)
        json_object_set_new(last, "alt", json_string(query));
    char alt[64];
    snprintf(alt, sizeof alt, "alt=%s", query ? query : "");
    mock_journal_add(self->journal, req->method, req->path, query ? alt : NULL, req->model, headers,
                     req->body.data, req->body.len);
    size_t keep = req->body.len < MOCK_MAX_LAST_BODY ? req->body.len : MOCK_MAX_LAST_BODY;
    char *copy = keep ? malloc(keep) : NULL;
    if (copy)
        memcpy(copy, req->body.data, keep);

    bool listing = strcmp(req->method, "GET") == 0;
    pthread_mutex_lock(&self->mutex);
    if (!listing)
        self->requests_total++;
    mock_control_count(self->paths, req->path);
    if (req->model && *req->model)
        mock_control_count(self->models_seen, req->model);
    if (key)
        mock_control_count(self->keys, key);
    if (listing) {
        json_decref(last);
        free(copy);
    } else {
        json_decref(self->last);
        self->last = last;
        free(self->last_body);
        self->last_body = copy;
        self->last_body_len = copy ? keep : 0;
        self->last_body_size = req->body.len;
    }
    pthread_mutex_unlock(&self->mutex);
}

//  Finds the fault in force: header, then runtime, then static; the model, then "*".
static int s_find_fault(mock_req_t *req)
{
    mock_upstream_t *self = req->owner;
    const char *header = mock_req_header(req, "x-mock-fault");
    if (header)
        return mock_fault_parse(header, &req->fault);
    char spec[256] = "";
    const char *model = req->model ? req->model : "";
    pthread_mutex_lock(&self->mutex);
    json_t *tables[] = {self->runtime_faults, self->static_faults};
    for (int table = 0; table < 2 && !*spec; table++) {
        const char *found = json_string_value(json_object_get(tables[table], model));
        if (!found)
            found = json_string_value(json_object_get(tables[table], "*"));
        if (found)
            snprintf(spec, sizeof(spec), "%s", found);
    }
    pthread_mutex_unlock(&self->mutex);
    return mock_fault_parse(*spec ? spec : NULL, &req->fault);
}

static enum MHD_Result s_dispatch(mock_req_t *req)
{
    mock_upstream_t *self = req->owner;
    s_route(req);
    if (req->route >= R_MOCK_STATS) {
        mock_control_answer(req);
        return s_queue(req);
    }

    req->seq = atomic_fetch_add(&self->seq, 1) + 1;
    req->created = (long)time(NULL);
    req->prompt_tokens = (int)((req->body.len + 3) / 4);
    json_t *body = NULL;
    bool posted = req->route != R_MODELS && req->route != R_MODEL && req->route != R_GEM_MODELS &&
                  req->route != R_GEM_MODEL;
    bool bad_json = false;
    if (posted && req->route != R_NOT_FOUND && !req->too_large) {
        body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, NULL);
        bad_json = !json_is_object(body);
        const char *model = json_string_value(json_object_get(body, "model"));
        if (model && !req->model)
            req->model = strdup(model);
    }
    if (!req->model)
        req->model = strdup("");
    const char *kind;
    const char *key = s_api_key(req, &kind);
    s_record(req, body, key, kind);

    int fault_rc = s_find_fault(req);
    if (req->too_large)
        mock_shape_error(req, 413, "request body too large");
    else if (req->route == R_NOT_FOUND)
        mock_shape_error(req, 404, "no such endpoint on the mock upstream");
    else if (self->require_key && (!key || strcmp(key, self->require_key)))
        mock_shape_error(req, 401, "invalid API key (mock)");
    else if (fault_rc)
        mock_shape_error(req, 400, "unparsable x-mock-fault or configured fault spec");
    else if (bad_json)
        mock_shape_error(req, 400, "request body is not a JSON object");
    else {
        mock_fault_t *fault = &req->fault;
        if (fault->flap) {
            pthread_mutex_lock(&self->mutex);
            mock_control_count(self->flap_counts, req->model);
            json_int_t seen = json_integer_value(json_object_get(self->flap_counts, req->model));
            pthread_mutex_unlock(&self->mutex);
            if (seen % fault->flap == 0)
                fault->status = 500;
        }
        if (fault->status)
            mock_shape_error(req, fault->status, "injected fault (mock)");
        else if (req->route == R_MODELS || req->route == R_GEM_MODELS)
            mock_shape_json(req, 200, mock_shape_models(self, req, NULL));
        else if (req->route == R_MODEL || req->route == R_GEM_MODEL) {
            json_t *model = mock_shape_models(self, req, req->model);
            if (model)
                mock_shape_json(req, 200, model);
            else
                mock_shape_error(req, 404, "model not found (mock)");
        } else if (req->route == R_COUNT_TOKENS)
            mock_shape_json(req, 200, json_pack("{s:i}", "input_tokens", req->prompt_tokens));
        else if (req->route == R_GEM_COUNT)
            mock_shape_json(req, 200, json_pack("{s:i}", "totalTokens", req->prompt_tokens));
        else if (req->route == R_EMBEDDINGS)
            mock_shape_json(req, 200, mock_shape_embeddings(req, body));
        else if (req->route == R_IMAGES)
            mock_shape_json(req, 200, mock_shape_images(req, body));
        else {
            //  The header, else a per-model setting (for clients whose headers
            //  do not reach the upstream, such as a gateway's).
            const char *cached = mock_req_header(req, "x-mock-cached-tokens");
            if (!(cached && mock_parse_int(cached, 0, 1 << 30, &req->cached_tokens)))
                req->cached_tokens = fault->cached_tokens;
            if (req->cached_tokens > req->prompt_tokens)
                req->cached_tokens = req->prompt_tokens;
            req->cache_write_5m = fault->cache_write_5m;
            req->cache_write_1h = fault->cache_write_1h;
            req->stream =
                req->route == R_GEM_STREAM ||
                (req->route != R_GEM_GENERATE && json_is_true(json_object_get(body, "stream")));
            req->include_usage = json_is_true(
                json_object_get(json_object_get(body, "stream_options"), "include_usage"));
            const char *alt = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "alt");
            req->gemini_sse = alt && !strcmp(alt, "sse");
            if (mock_reply_plan(req, body))
                mock_shape_error(req, 500, "mock out of memory");
            else if (!req->stream)
                mock_shape_json(req, 200, mock_shape_full_answer(req));
            else if (mock_stream_plan(req))
                mock_shape_error(req, 500, "mock out of memory");
            else {
                req->status = 200;
                req->ctype = req->route == R_GEM_STREAM && !req->gemini_sse
                                 ? "application/json; charset=UTF-8"
                                 : "text/event-stream; charset=utf-8";
            }
        }
    }
    json_decref(body);
    if (!req->stream && !req->reply)
        mock_shape_error(req, 500, "mock out of memory");

    pthread_mutex_lock(&self->mutex);
    char status[8];
    snprintf(status, sizeof(status), "%d", req->status);
    mock_control_count(self->statuses, status);
    if (mock_fault_any(&req->fault))
        self->faults_injected++;
    pthread_mutex_unlock(&self->mutex);
    return s_deliver(req);
}

//  -------------------------------------------------------------------------
//  MHD callbacks

static enum MHD_Result s_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)version;
    mock_upstream_t *self = cls;
    mock_req_t *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        atomic_init(&req->refs, 1);
        req->owner = self;
        req->conn = conn;
        req->path = strdup(url);
        req->method = strdup(method);
        req->wait_fd = -1;
        req->malformed_event = -1;
        req->fault.cut_after = -1;
        *con_cls = req;
        if (!req->path || !req->method)
            return MHD_NO;
        //  A declared oversize body is refused before reading it; MHD then closes.
        const char *length = mock_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, NULL, 10) > MOCK_UPSTREAM_MAX_BODY) {
            req->too_large = true;
            return s_dispatch(req);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!req->too_large && req->body.len + *upload_data_size > MOCK_UPSTREAM_MAX_BODY) {
            req->too_large = true; //  Chunked upload: discard the rest, answer 413 at the end
            mock_buf_reset(&req->body);
        }
        if (!req->too_large && mock_buf_append(&req->body, upload_data, *upload_data_size))
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->phase == PH_QUEUED)
        return MHD_YES;
    if (req->phase == PH_WAIT) {
        //  Resumed by the waiter: deadline reached, or the client left, or shutdown.
        if (atomic_load(&req->aborted) || atomic_load(&self->stopping) ||
            req->wait_due == MOCK_NEVER)
            return MHD_NO;
        return s_queue(req);
    }
    if (atomic_load(&self->stopping))
        return MHD_NO;
    return s_dispatch(req);
}

static void s_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    mock_upstream_t *self = cls;
    mock_req_t *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    if (req->held) {
        //  A held request that did not end on our terms was ended by the client.
        bool aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !req->finished &&
                       toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN &&
                       !atomic_load(&self->stopping);
        pthread_mutex_lock(&self->mutex);
        self->open_streams--;
        if (aborted)
            self->client_aborts++;
        pthread_mutex_unlock(&self->mutex);
    }
    mock_req_unref(req);
}

//  -------------------------------------------------------------------------
//  Constructor and destructor

void mock_upstream_config_init(mock_upstream_config_t *config)
{
    memset(config, 0, sizeof(*config));
    config->host = "127.0.0.1";
    config->threads = 2;
    config->models = "gpt-4o-mini,claude-3-5-haiku-latest,gemini-2.0-flash,mock-model";
}

mock_upstream_t *mock_upstream_new(const mock_upstream_config_t *config)
{
    mock_upstream_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    pthread_mutex_init(&self->mutex, NULL);
    self->verbose = config->verbose;
    self->static_faults = json_object();
    self->journal = mock_journal_new();
    mock_control_reset(self);
    if (config->require_key)
        self->require_key = strdup(config->require_key);
    if (config->aliases)
        self->aliases = strdup(config->aliases);
    char *models = strdup(config->models ? config->models : "");
    char *save = NULL;
    for (char *model = strtok_r(models, ",", &save); model; model = strtok_r(NULL, ",", &save)) {
        char **grown = realloc(self->models, (self->n_models + 1) * sizeof(*grown));
        if (!grown)
            break;
        self->models = grown;
        self->models[self->n_models++] = strdup(model);
    }
    free(models);

    struct sockaddr_storage address;
    memset(&address, 0, sizeof(address));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&address;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&address;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    const char *host = config->host ? config->host : "127.0.0.1";
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(config->port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(config->port);
        flags |= MHD_USE_IPv6;
    } else {
        fprintf(stderr, "mock: bad --host %s\n", host);
        mock_upstream_destroy(&self);
        return NULL;
    }
    if (config->verbose)
        flags |= MHD_USE_ERROR_LOG;
    if (mock_waiter_start(&self->waiter)) {
        mock_upstream_destroy(&self);
        return NULL;
    }
    self->waiter_started = true;
    unsigned threads = config->threads ? config->threads : 1;
    //  MHD's default connection cap is FD_SETSIZE-4 even with epoll; streams tests hold
    //  thousands of connections open. The pool stays at 32 KiB, where MHD takes it from
    //  malloc: above that it mmaps, zeroes and munmaps one per connection, which was half of
    //  the mock's CPU while 10,000 streams connected (page faults, and TLB shootdowns across
    //  the worker threads on every munmap) and kept it from accepting (docs/benchmarks.md).
    self->daemon = MHD_start_daemon(
        flags, config->port, NULL, NULL, s_on_request, self, MHD_OPTION_SOCK_ADDR, &address,
        MHD_OPTION_NOTIFY_COMPLETED, s_on_completed, self, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)60000, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024), MHD_OPTION_THREAD_POOL_SIZE,
        threads > 1 ? threads : 0u, MHD_OPTION_END);
    if (!self->daemon) {
        fprintf(stderr, "mock: cannot start HTTP daemon on %s:%u\n", host, (unsigned)config->port);
        mock_upstream_destroy(&self);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : config->port;
    return self;
}

void mock_upstream_destroy(mock_upstream_t **self_p)
{
    assert(self_p);
    mock_upstream_t *self = *self_p;
    if (!self)
        return;
    //  Order matters: flag the stop so no callback parks a connection again, make the waiter
    //  resume every parked connection (MHD must not be stopped with suspended ones), then
    //  stop MHD, which runs the resumed connections to their close.
    atomic_store(&self->stopping, true);
    if (self->waiter_started)
        mock_waiter_stop(&self->waiter);
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    mock_waiter_close(&self->waiter);
    for (size_t index = 0; index < self->n_models; index++)
        free(self->models[index]);
    free(self->models);
    free(self->require_key);
    free(self->aliases);
    json_decref(self->paths);
    json_decref(self->models_seen);
    json_decref(self->keys);
    json_decref(self->statuses);
    json_decref(self->flap_counts);
    json_decref(self->runtime_faults);
    json_decref(self->static_faults);
    json_decref(self->last);
    free(self->last_body);
    mock_journal_destroy(&self->journal);
    pthread_mutex_destroy(&self->mutex);
    free(self);
    *self_p = NULL;
}

uint16_t mock_upstream_port(mock_upstream_t *self)
{
    assert(self);
    return self->port;
}

int mock_upstream_set_fault(mock_upstream_t *self, const char *model, const char *spec)
{
    assert(self);
    assert(model);
    mock_fault_t fault;
    if (spec && mock_fault_parse(spec, &fault))
        return -1;
    pthread_mutex_lock(&self->mutex);
    if (spec && *spec)
        json_object_set_new(self->static_faults, model, json_string(spec));
    else
        json_object_del(self->static_faults, model);
    pthread_mutex_unlock(&self->mutex);
    return 0;
}

//  -------------------------------------------------------------------------
//  Self test

//  Sends a raw HTTP/1.1 request and returns the socket (response left unread).
static int s_test_send(uint16_t port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    size_t size = strlen(request);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof(address)) ||
        send(fd, request, size, MSG_NOSIGNAL) != (ssize_t)size) {
        perror("mock_upstream_test");
        abort();
    }
    return fd;
}

//  Reads until the peer closes (requests use Connection: close).
static void s_test_read_all(int fd, mock_buf_t *out)
{
    char chunk[4096];
    ssize_t size;
    while ((size = recv(fd, chunk, sizeof(chunk), 0)) > 0)
        mock_buf_append(out, chunk, (size_t)size);
    close(fd);
}

static int s_test_post(char *request, size_t size, const char *path, const char *extra,
                       const char *body)
{
    return snprintf(request, size,
                    "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n%s",
                    path, extra, strlen(body), body);
}

void mock_upstream_test(bool verbose)
{
    printf(" * mock_upstream: ");
    mock_fault_t fault;
    PROTO_CHECK(mock_fault_parse("429:5, cut:3", &fault) == 0);
    PROTO_CHECK(fault.status == 429 && fault.retry_after == 5 && fault.cut_after == 3);
    PROTO_CHECK(mock_fault_parse("hang,bogus", &fault) == -1);
    PROTO_CHECK(!fault.hang && fault.cut_after == -1);
    PROTO_CHECK(mock_fault_parse("500:3", &fault) == -1);

    mock_upstream_config_t config;
    mock_upstream_config_init(&config);
    config.verbose = verbose;
    mock_upstream_t *self = mock_upstream_new(&config);
    PROTO_CHECK(self);
    PROTO_CHECK(mock_upstream_port(self) > 0);
    PROTO_CHECK(mock_upstream_set_fault(self, "mock-bad", "nonsense") == -1);
    PROTO_CHECK(mock_upstream_set_fault(self, "mock-err", "503") == 0);

    char request[1024];
    s_test_post(request, sizeof(request), "/v1/chat/completions", "Connection: close\r\n",
                "{\"model\":\"mock-3\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    mock_buf_t reply = {0};
    s_test_read_all(s_test_send(self->port, request), &reply);
    PROTO_CHECK(reply.data && strstr(reply.data, "200 OK"));
    PROTO_CHECK(strstr(reply.data, "\"content\":\"Hello from mock\""));
    PROTO_CHECK(strstr(reply.data, "\"completion_tokens\":3"));
    mock_buf_reset(&reply);

    s_test_post(request, sizeof(request), "/v1/messages", "Connection: close\r\n",
                "{\"model\":\"mock-err\",\"messages\":[]}");
    s_test_read_all(s_test_send(self->port, request), &reply);
    PROTO_CHECK(reply.data && strstr(reply.data, "HTTP/1.1 503"));
    PROTO_CHECK(strstr(reply.data, "\"type\":\"overloaded_error\""));
    mock_buf_reset(&reply);

    //  A held connection (hang) and a parked stream must not stop destroy from finishing.
    int hung = s_test_send(self->port, "GET /v1/models HTTP/1.1\r\nHost: x\r\n"
                                       "x-mock-fault: hang\r\n\r\n");
    s_test_post(request, sizeof(request), "/v1/chat/completions",
                "x-mock-fault: delay-chunks:60000\r\n",
                "{\"model\":\"mock-3\",\"stream\":true,\"messages\":[]}");
    int parked = s_test_send(self->port, request);
    char first[64];
    if (recv(parked, first, sizeof(first), 0) <= 0) //  Headers: the stream has started
        abort();
    mock_upstream_destroy(&self);
    PROTO_CHECK(self == NULL);
    close(hung);
    close(parked);
    printf("OK\n");
}
