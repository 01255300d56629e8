/*  ingress_server: see the header, and docs/ingress.md.

    The server owns the listener, the peers (a DEALER per billing and per
    dispatch instance), the catalog, the drain, and what the parts of the
    request path share (ingress_server_private.h). The parts, by job:
    ingress_http (the client API's handlers), ingress_admit (billing),
    ingress_relay (dispatch), ingress_request (one request's life and
    answers), ingress_queue (timeouts).
*/
#include "ingress_server.h"
#include "ingress_admit.h"
#include "ingress_daemon.h"
#include "ingress_http.h"
#include "ingress_lease.h"
#include "ingress_models.h"
#include "ingress_queue.h"
#include "ingress_relay.h"
#include "ingress_request.h"
#include "ingress_server_private.h"
#include "proto_check.h"
#include "proto_batch.h"
#include "proto_crypto.h"
#include "proto_log.h"
#include "proto_socket.h"
#include "proto_msg.h"
#include "proto_outbox.h"
#include "proto_tls.h"
#include "proto_watch.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define S_CONNECTION_LIMIT 16384   //  client connections (fds permitting)
#define S_CONNECTION_MEMORY 16384  //  per-connection MHD pool: headers and write buffer
#define S_CONNECTION_TIMEOUT_S 120 //  idle keep-alive connections close after this
#define S_SETTLE_RESEND_MS 1000    //  outbox re-send period for SETTLE
#define S_PEER_RCVHWM 100000       //  CHUNKs we queue before dispatch's ROUTER must drop
#define S_LEASE_SWEEP_MS 250       //  expired leases are given back this often
#define S_MODELS_CACHE_MAX 10000   //  model lists kept (one per key and protocol)

//  --------------------------------------------------------------------------
//  The pipeline's hold

void ingress_server_forget(ingress_request_t *r)
{
    ingress_queue_remove(&r->timeout);
    if (!r->registered)
        return;
    ingress_admit_lease_release(r);
    zhashx_delete(r->server->requests, r->id);
    r->registered = false;
    ingress_server_t *self = r->server;
    ingress_request_unref(r);
    ingress_server_check_drained(self);
}

//  --------------------------------------------------------------------------
//  A client that hangs up while suspended

//  A suspended client hung up. Its connection goes back to MHD with a
//  token answer so MHD finds the closed socket and ends the request.
void ingress_server_hangup(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    ingress_request_t *r = arg;
    ingress_server_t *self = r->server;
    ingress_request_unwatch(r);
    log_debug(r->id, "client hung up while we waited");
    switch (r->phase) {
    case INGRESS_PHASE_WAITING:
        ingress_request_answer_error(r, 499, "client_closed", "The client closed the connection");
        ingress_admit_abandon(self, r, 499);
        break;
    case INGRESS_PHASE_DISPATCHED:
        ingress_relay_settle_held(r);
        ingress_relay_cancel(r, "client_closed");
        r->upstream_done = true;
        r->phase = INGRESS_PHASE_ANSWERED;
        ingress_server_forget(r);
        ingress_request_answer_error(r, 499, "client_closed", "The client closed the connection");
        break;
    case INGRESS_PHASE_QUERY:
        r->phase = INGRESS_PHASE_ANSWERED;
        ingress_server_forget(r);
        ingress_request_resume(r);
        break;
    case INGRESS_PHASE_STREAMING:
        ingress_relay_cancel(r, "client_closed");
        r->upstream_done = true;
        r->client_gone = true;
        r->status = 499;
        ingress_server_forget(r);
        ingress_request_resume(r);
        break;
    default:
        ingress_request_resume(r);
        break;
    }
}

//  --------------------------------------------------------------------------
//  The server

static int s_turn(proto_loop_t *loop, void *arg)
{
    ingress_server_t *self = arg;
    int wait = ingress_daemon_turn(self->client);
    return wait;
}

static void s_catalog_loaded(proto_catalog_t **catalog_p, void *arg)
{
    ingress_server_set_catalog(arg, catalog_p);
}

//  Connects a DEALER to an endpoint and hands it to the loop.
static int s_peer_open(ingress_server_t *self, ingress_peer_t *peer, int index,
                       const char *component, const char **endpoints, int count, bool immediate,
                       proto_loop_socket_fn *fn, char *error, size_t error_size)
{
    peer->server = self;
    peer->index = index;
    peer->socket = proto_socket_new(ZMQ_DEALER);
    //  Never block the loop on a send: a full queue is an answer (503).
    zsock_set_sndtimeo(peer->socket, 0);
    zsock_set_rcvhwm(peer->socket, S_PEER_RCVHWM);
    zsock_set_immediate(peer->socket, immediate ? 1 : 0);
    //  A restarted peer is found again within tens of milliseconds, not
    //  ZeroMQ's default 100 ms, backing off to half a second while it is down.
    zsock_set_reconnect_ivl(peer->socket, 20);
    zsock_set_reconnect_ivl_max(peer->socket, 500);
    for (int i = 0; i < count; i++)
        if (proto_socket_connect(peer->socket, component, endpoints[i]) != 0) {
            snprintf(error, error_size, "cannot connect to %s", endpoints[i]);
            return -1;
        }
    proto_loop_add_socket(self->loop, peer->socket, fn, peer);
    return 0;
}

static int s_connect_peers(ingress_server_t *self, char *error, size_t error_size)
{
    const char *endpoints[64];
    int count = proto_config_endpoints(self->config, "billing", endpoints, 64);
    if (count < 1 || count > INGRESS_MAX_BILLING) {
        snprintf(error, error_size, "billing.endpoints must list 1 to %d endpoints",
                 INGRESS_MAX_BILLING);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        //  Billing queues while it restarts: the internal
        //  timeout reports them down. Dispatch is chosen per request, so
        //  an instance without a live connection is skipped (immediate).
        if (s_peer_open(self, &self->billing[i], i, "billing", &endpoints[i], 1, false,
                        ingress_admit_ready, error, error_size) != 0)
            return -1;
        self->billing[i].outbox =
            proto_outbox_new(self->loop, self->billing[i].socket, S_SETTLE_RESEND_MS);
        self->billing_count++;
    }
    count = proto_config_endpoints(self->config, "dispatch", endpoints, 64);
    if (count < 1 || count > INGRESS_MAX_DISPATCH) {
        snprintf(error, error_size, "dispatch.endpoints must list 1 to %d endpoints",
                 INGRESS_MAX_DISPATCH);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        if (s_peer_open(self, &self->dispatch[i], i, "dispatch", &endpoints[i], 1, true,
                        ingress_relay_ready, error, error_size) != 0)
            return -1;
        self->dispatch_count++;
        ingress_relay_watch(self, &self->dispatch[i]);
    }
    return 0;
}

//  Thousands of concurrent streams need thousands of descriptors.
static unsigned s_connection_limit(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return 1000;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
    }
    rlim_t usable = limit.rlim_cur > 512 ? limit.rlim_cur - 256 : limit.rlim_cur / 2;
    return usable < S_CONNECTION_LIMIT ? (unsigned)usable : S_CONNECTION_LIMIT;
}

ingress_server_t *ingress_server_new(proto_loop_t *loop, proto_config_t *config,
                                     proto_metrics_t *metrics, proto_trace_t *tracer, bool database,
                                     char *error, size_t error_size)
{
    if (proto_crypto_init() != 0) {
        snprintf(error, error_size, "cannot initialise libsodium");
        return NULL;
    }
    ingress_server_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->config = config;
    self->metrics = metrics;
    self->tracer = tracer;
    self->requests = zhashx_new();
    self->counters = zhashx_new();
    self->histograms = zhashx_new();
    self->waiting = ingress_queue_new(loop, ingress_admit_waiting_expired, self);
    self->running = ingress_queue_new(loop, ingress_relay_running_expired, self);
    self->held = ingress_queue_new(loop, ingress_relay_held_expired, self);
    //  A certificate that will not load is a configuration error: said
    //  before anything connects anywhere.
    if (proto_tls_from_config(config, "ingress", &self->tls, error, error_size) != 0)
        goto failed;
    self->max_body = (size_t)proto_config_int(config, "ingress.max_body_bytes");
    self->client_metrics = proto_config_bool(config, "ingress.client_metrics");
    self->max_json_elements = (size_t)proto_config_int(config, "ingress.max_json_elements");
    const char *metrics_token = proto_config_str(config, "ingress.client_metrics_token");
    if (*metrics_token)
        proto_crypto_hash_hex(metrics_token, strlen(metrics_token), self->metrics_token_hash);
    self->internal_timeout_ms = (uint64_t)proto_config_int(config, "ingress.internal_timeout_ms");
    self->dispatch_grace_ms = (uint64_t)proto_config_int(config, "ingress.dispatch_grace_ms");
    self->request_timeout_ms = (uint64_t)proto_config_int(config, "ingress.request_timeout_ms");
    self->models_cache_ms = (uint64_t)proto_config_int(config, "ingress.models_cache_ms");
    self->models = ingress_models_new(self->models_cache_ms, S_MODELS_CACHE_MAX);
    self->in_flight = proto_metrics_gauge(metrics, "tollgate_ingress_in_flight",
                                          "Client API requests in flight.", NULL);
    self->key_cache = proto_metrics_gauge(metrics, "tollgate_ingress_key_cache_size",
                                          "Client API keys held in memory.", NULL);
    self->overhead = proto_metrics_histogram(metrics, "tollgate_ingress_overhead_seconds",
                                             "Latency added by the gateway.", NULL);
    self->cancels = proto_metrics_counter(metrics, "tollgate_ingress_cancels_total",
                                          "CANCELs sent to dispatch.", NULL);
    self->settles = proto_metrics_counter(metrics, "tollgate_ingress_settles_total",
                                          "Admitted requests settled by the ingress.", NULL);
    self->lease_admits =
        proto_metrics_counter(metrics, "tollgate_ingress_lease_admits_total",
                              "Requests admitted from this ingress' leases, without ADMIT.", NULL);
    self->dropped = proto_metrics_counter(metrics, "tollgate_ingress_late_replies_total",
                                          "Replies for requests no longer in flight.", NULL);
    if (s_connect_peers(self, error, error_size) != 0)
        goto failed;
    //  Leases are per holder: a restarted ingress is a new one (its old
    //  leases lapse), so the id has a random part.
    char holder[128], suffix[9];
    proto_crypto_random_hex(suffix, 4);
    const char *instance = proto_config_str(config, "instance_id");
    snprintf(holder, sizeof holder, "%s-%s", instance && *instance ? instance : "ingress", suffix);
    self->leases = ingress_lease_new(holder);
    self->leases_on = proto_config_bool(config, "billing.leases");
    self->lease_timer =
        proto_loop_add_timer(loop, S_LEASE_SWEEP_MS, true, ingress_admit_lease_sweep, self);
    if (database) {
        self->watch =
            proto_watch_new(loop, config, false, s_catalog_loaded, self, error, error_size);
        if (!self->watch)
            goto failed;
    } else {
        proto_catalog_t *empty = proto_catalog_new_empty();
        ingress_server_set_catalog(self, &empty);
    }
    ingress_daemon_limits_t client_limits = {
        s_connection_limit(),
        S_CONNECTION_MEMORY,
        S_CONNECTION_TIMEOUT_S,
        (unsigned)proto_config_int(config, "ingress.max_connections_per_ip"),
        (uint64_t)proto_config_int(config, "ingress.read_timeout_ms"),
        self->tls};
    ingress_daemon_handlers_t client_handlers = {ingress_http_access, ingress_http_completed, NULL,
                                                 self};
    self->client = ingress_daemon_new(loop, "client", proto_config_str(config, "ingress.listen"),
                                      &client_limits, &client_handlers, error, error_size);
    if (!self->client)
        goto failed;
    proto_loop_set_turn(loop, s_turn, self);
    log_info(NULL, "client API listening on %s://%s:%d", self->tls ? "https" : "http",
             ingress_daemon_host(self->client), ingress_daemon_port(self->client));
    return self;

failed:
    ingress_server_destroy(&self);
    return NULL;
}

void ingress_server_destroy(ingress_server_t **self_p)
{
    assert(self_p);
    ingress_server_t *self = *self_p;
    if (!self)
        return;
    proto_loop_set_turn(self->loop, NULL, NULL);
    //  MHD must get every suspended connection back before it stops; its
    //  completion callbacks then run for each, while our sockets still work.
    for (ingress_request_t *r = self->live; r; r = r->live_next)
        ingress_request_resume(r);
    ingress_daemon_destroy(&self->client);
    proto_tls_destroy(&self->tls);
    //  What the pipeline still holds (abandoned requests) goes now.
    ingress_request_t *r;
    while ((r = zhashx_first(self->requests)))
        ingress_server_forget(r);
    proto_watch_destroy(&self->watch);
    proto_catalog_destroy(&self->catalog);
    if (self->lease_timer)
        proto_loop_cancel_timer(self->loop, self->lease_timer);
    if (self->leases && self->billing_count) {
        //  Give back what we hold, so billing need not wait for the expiry.
        zlistx_t *returns = zlistx_new();
        ingress_lease_sweep(self->leases, UINT64_MAX, returns);
        ingress_admit_send_returns(self, returns);
        zlistx_destroy(&returns);
    }
    ingress_lease_destroy(&self->leases);
    ingress_models_destroy(&self->models);
    for (int i = 0; i < self->billing_count; i++) {
        proto_outbox_destroy(&self->billing[i].outbox);
        proto_loop_remove_socket(self->loop, self->billing[i].socket);
        zsock_destroy(&self->billing[i].socket);
    }
    for (int i = 0; i < self->dispatch_count; i++) {
        if (self->dispatch[i].monitor) {
            proto_loop_remove_socket(self->loop, zactor_sock(self->dispatch[i].monitor));
            zactor_destroy(&self->dispatch[i].monitor);
        }
        proto_loop_remove_socket(self->loop, self->dispatch[i].socket);
        zsock_destroy(&self->dispatch[i].socket);
    }
    //  A partly built server may have a socket outside the counted ranges.
    if (self->billing_count < INGRESS_MAX_BILLING && self->billing[self->billing_count].socket)
        zsock_destroy(&self->billing[self->billing_count].socket);
    if (self->dispatch_count < INGRESS_MAX_DISPATCH && self->dispatch[self->dispatch_count].socket)
        zsock_destroy(&self->dispatch[self->dispatch_count].socket);
    ingress_queue_destroy(&self->waiting);
    ingress_queue_destroy(&self->running);
    ingress_queue_destroy(&self->held);
    if (self->resend_timer)
        proto_loop_cancel_timer(self->loop, self->resend_timer);
    zhashx_destroy(&self->requests);
    zhashx_destroy(&self->counters);
    zhashx_destroy(&self->histograms);
    free(self);
    *self_p = NULL;
}

void ingress_server_set_catalog(ingress_server_t *self, proto_catalog_t **catalog_p)
{
    //  Requests hold ids, never pointers into a catalog: the old one can go.
    proto_catalog_destroy(&self->catalog);
    self->catalog = *catalog_p;
    *catalog_p = NULL;
    ingress_models_reset(self->models);
    proto_metric_set(self->key_cache, (double)proto_catalog_key_count(self->catalog));
    log_debug(NULL, "catalog loaded: %zu keys", proto_catalog_key_count(self->catalog));
}

static size_t s_settles_pending(ingress_server_t *self)
{
    size_t pending = 0;
    for (int i = 0; i < self->billing_count; i++)
        pending += proto_outbox_pending(self->billing[i].outbox);
    return pending;
}

void ingress_server_check_drained(ingress_server_t *self)
{
    if (!self->draining || !self->drained_fn || self->live_count || zhashx_size(self->requests) ||
        s_settles_pending(self))
        return;
    ingress_server_drained_fn *fn = self->drained_fn;
    self->drained_fn = NULL;
    log_info(NULL, "drained");
    fn(self->drained_arg);
}

void ingress_server_drain(ingress_server_t *self, ingress_server_drained_fn *fn, void *arg)
{
    self->draining = true;
    self->drained_fn = fn;
    self->drained_arg = arg;
    ingress_daemon_quiesce(self->client);
    log_info(NULL, "no longer accepting connections; %zu requests in flight", self->live_count);
    ingress_server_check_drained(self);
}

int ingress_server_port(ingress_server_t *self)
{
    return ingress_daemon_port(self->client);
}

char *ingress_server_status(ingress_server_t *self)
{
    char *text = NULL;
    if (asprintf(&text,
                 "{\"in_flight\":%zu,\"pipeline\":%zu,\"connections\":%u,"
                 "\"settles_pending\":%zu,\"keys\":%zu}",
                 self->live_count, zhashx_size(self->requests),
                 ingress_daemon_connections(self->client), s_settles_pending(self),
                 proto_catalog_key_count(self->catalog)) < 0)
        return NULL;
    return text;
}

//  --------------------------------------------------------------------------
//  proto_service glue

void *ingress_server_service_start(proto_service_t *service)
{
    char error[512];
    ingress_server_t *self = ingress_server_new(
        proto_service_loop(service), proto_service_config(service), proto_service_metrics(service),
        proto_service_trace(service), true, error, sizeof error);
    if (!self) {
        log_error(NULL, "cannot start: %s", error);
        return NULL;
    }
    self->service = service;
    if (self->tls)
        proto_service_on_reload(service, proto_tls_reload_hook, self->tls);
    return self;
}

static void s_service_drained(void *arg)
{
    proto_service_drained(arg);
}

void ingress_server_service_drain(void *state)
{
    ingress_server_t *self = state;
    ingress_server_drain(self, s_service_drained, self->service);
}

void ingress_server_service_stop(void **state_p)
{
    ingress_server_destroy((ingress_server_t **)state_p);
}

char *ingress_server_service_status(void *state)
{
    return ingress_server_status(state);
}

//  --------------------------------------------------------------------------
//  Self test: the whole request flow in one process. Billing, router and
//  dispatch are ROUTER sockets in the same loop; clients are plain sockets
//  in the same loop too, so every step is driven by messages, never sleeps.

#include <sys/socket.h>
#include <sys/time.h>

#define S_TEST_CLIENTS 220

typedef struct _s_test_t s_test_t;

typedef struct {
    s_test_t *test;   //  owner
    int fd;           //  socket, -1 once closed
    char data[16384]; //  what came back
    size_t size;      //  bytes in data
    bool ended;       //  the server closed the connection
} s_client_t;

typedef enum { S_DONE_WHOLE, S_STREAM_DONE, S_STREAM_HOLD } s_test_mode_t;

struct _s_test_t {
    proto_loop_t *loop;                       //  the loop
    ingress_server_t *server;                 //  under test
    int port;                                 //  client API port
    zsock_t *billing;                         //  fake billing (ROUTER)
    zsock_t *dispatch;                        //  fake dispatch (ROUTER)
    int admit_status;                         //  what billing answers
    bool billing_silent;                      //  billing answers nothing
    int dispatch_status;                      //  what dispatch answers, 200 = normally
    const char *dispatch_code;                //  its error code when not 200
    s_test_mode_t mode;                       //  what dispatch does
    int admits, dispatches, cancels, settles; //  messages seen
    char dispatch_body[512];                  //  last DISPATCH body
    bool dispatch_ok;                         //  last DISPATCH carried what it should
    char dispatch_model[64];                  //  last DISPATCH's model
    char dispatch_meta[64];                   //  last DISPATCH's meta, "" when none
    bool dispatch_stream;                     //  last DISPATCH's stream flag
    int dispatch_protocol;                    //  last DISPATCH's client protocol
    s_client_t clients[S_TEST_CLIENTS];       //  clients in use
    int client_count;                         //  how many
    bool (*until)(s_test_t *);                //  the loop stops once this holds
    bool drained;                             //  drain callback ran
    proto_config_t *config;                   //  the server's configuration
    proto_metrics_t *metrics;                 //  its metrics registry
    proto_api_key_t key;                      //  what "tg-test" authenticates as
};

static bool s_test_all_ended(s_test_t *test)
{
    for (int i = 0; i < test->client_count; i++)
        if (!test->clients[i].ended)
            return false;
    return true;
}

static bool s_test_all_streaming(s_test_t *test)
{
    for (int i = 0; i < test->client_count; i++)
        if (!strstr(test->clients[i].data, "data: first"))
            return false;
    return true;
}

static bool s_test_all_cancelled(s_test_t *test)
{
    return test->cancels == test->client_count;
}

static void s_test_check(s_test_t *test)
{
    if (test->until && test->until(test))
        proto_loop_stop(test->loop);
}

static void s_test_client_ready(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    s_client_t *client = arg;
    ssize_t got = read(fd, client->data + client->size, sizeof client->data - 1 - client->size);
    if (got > 0) {
        client->size += (size_t)got;
        client->data[client->size] = '\0';
    } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        client->ended = true;
        proto_loop_remove_fd(loop, fd);
    }
    s_test_check(client->test);
}

static s_client_t *s_test_send(s_test_t *test, const char *request)
{
    PROTO_CHECK(test->client_count < S_TEST_CLIENTS);
    s_client_t *client = &test->clients[test->client_count++];
    *client = (s_client_t){.test = test};
    client->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)test->port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    PROTO_CHECK(connect(client->fd, (struct sockaddr *)&to, sizeof to) == 0);
    PROTO_CHECK(write(client->fd, request, strlen(request)) == (ssize_t)strlen(request));
    proto_loop_add_fd(test->loop, client->fd, EPOLLIN, s_test_client_ready, client);
    return client;
}

static void s_test_reset(s_test_t *test)
{
    for (int i = 0; i < test->client_count; i++) {
        if (!test->clients[i].ended)
            proto_loop_remove_fd(test->loop, test->clients[i].fd);
        close(test->clients[i].fd);
    }
    test->client_count = 0;
    test->admits = test->dispatches = test->cancels = test->settles = 0;
}

static void s_test_timeout(proto_loop_t *loop, int id, void *arg)
{
    fprintf(stderr, "ingress_server_test: step timed out\n");
    PROTO_CHECK(false);
}

//  Some conditions change inside the server, out of the test's sight (a
//  COMMIT it reads from billing): look at them again every few ms too.
static void s_test_recheck(proto_loop_t *loop, int id, void *arg)
{
    s_test_check(arg);
}

static void s_test_run(s_test_t *test, bool (*until)(s_test_t *))
{
    test->until = until;
    if (until(test))
        return;
    int guard = proto_loop_add_timer(test->loop, 10000, false, s_test_timeout, test);
    int recheck = proto_loop_add_timer(test->loop, 5, true, s_test_recheck, test);
    proto_loop_run(test->loop);
    proto_loop_cancel_timer(test->loop, recheck);
    proto_loop_cancel_timer(test->loop, guard);
}

//  One client, one request, until the server closes the connection.
static s_client_t *s_test_request(s_test_t *test, const char *request)
{
    s_test_reset(test);
    s_client_t *client = s_test_send(test, request);
    s_test_run(test, s_test_all_ended);
    return client;
}

static char *s_test_chat(const char *extra_headers, const char *body, char *out, size_t size)
{
    snprintf(out, size,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Authorization: Bearer tg-test\r\nContent-Type: application/json\r\n%s"
             "Content-Length: %zu\r\n\r\n%s",
             extra_headers, strlen(body), body);
    return out;
}

static void s_test_billing_message(proto_msg_t **msg_p, void *arg)
{
    s_test_t *test = arg;
    proto_msg_t *msg = *msg_p;
    zsock_t *socket = test->billing;
    if (proto_msg_type(msg) == PROTO_MSG_ADMIT) {
        test->admits++;
        PROTO_CHECK(proto_msg_key_id(msg) == 7 && proto_msg_account_id(msg) == 3);
        PROTO_CHECK(strlen(proto_msg_trace(msg)) == 55 && proto_msg_deadline(msg) > 0);
        if (!test->billing_silent) {
            proto_msg_t *reply = proto_msg_reply(msg, PROTO_MSG_ADMIT_REPLY);
            proto_msg_set_status(reply, (uint64_t)test->admit_status);
            proto_msg_set_reserve_micros(reply, 1234);
            if (test->admit_status == 429) {
                proto_msg_set_error_code(reply, "rate_limited");
                proto_msg_set_error_message(reply, "Too many requests");
                proto_msg_set_retry_after_ms(reply, 1500);
            }
            proto_msg_send(&reply, socket);
        }
    } else if (proto_msg_type(msg) == PROTO_MSG_SETTLE) {
        test->settles++;
        PROTO_CHECK(proto_msg_tokens_out(msg) == 0 && proto_msg_reserve_micros(msg) == 1234);
        proto_msg_t *reply = proto_msg_reply(msg, PROTO_MSG_COMMIT);
        proto_msg_send(&reply, socket);
    }
}

static void s_test_billing(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    PROTO_CHECK(proto_batch_recv(socket, s_test_billing_message, arg) == 0);
    s_test_check(arg);
}

static void s_test_dispatch(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    s_test_t *test = arg;
    proto_msg_t *msg = NULL;
    PROTO_CHECK(proto_msg_recv(&msg, socket) == 0);
    if (proto_msg_type(msg) == PROTO_MSG_CANCEL) {
        test->cancels++;
        proto_msg_destroy(&msg);
        s_test_check(test);
        return;
    }
    PROTO_CHECK(proto_msg_type(msg) == PROTO_MSG_DISPATCH);
    test->dispatches++;
    zframe_t *body = proto_msg_body(msg);
    test->dispatch_ok = !proto_msg_has(msg, PROTO_FIELD_candidates) &&
                        proto_msg_reserve_micros(msg) == 1234 && body &&
                        proto_msg_account_id(msg) == 3 && proto_msg_deadline(msg) > 0;
    snprintf(test->dispatch_body, sizeof test->dispatch_body, "%.*s",
             body ? (int)zframe_size(body) : 0, body ? (char *)zframe_data(body) : "");
    snprintf(test->dispatch_model, sizeof test->dispatch_model, "%s", proto_msg_model(msg));
    snprintf(test->dispatch_meta, sizeof test->dispatch_meta, "%s",
             proto_msg_has(msg, PROTO_FIELD_meta) ? proto_msg_meta(msg) : "");
    test->dispatch_stream = proto_msg_stream(msg);
    test->dispatch_protocol = (int)proto_msg_client_protocol(msg);
    if (test->dispatch_status != 200) {
        //  Dispatch found no candidate: its own error, settled by itself.
        proto_msg_t *done = proto_msg_reply(msg, PROTO_MSG_DONE);
        proto_msg_set_status(done, (uint64_t)test->dispatch_status);
        proto_msg_set_error_code(done, test->dispatch_code ? test->dispatch_code : "no_provider");
        proto_msg_set_error_message(done, "No provider is available for model 'm'.");
        proto_msg_send(&done, socket);
    } else if (test->mode == S_DONE_WHOLE) {
        proto_msg_t *done = proto_msg_reply(msg, PROTO_MSG_DONE);
        proto_msg_set_status(done, 200);
        proto_msg_set_latency_us(done, 1000);
        proto_msg_set_body_bytes(done, "{\"answer\":42}", 13);
        proto_msg_send(&done, socket);
    } else {
        proto_msg_t *chunk = proto_msg_reply(msg, PROTO_MSG_CHUNK);
        proto_msg_set_sequence(chunk, 0);
        proto_msg_set_status(chunk, 200);
        proto_msg_set_content_type(chunk, "text/event-stream");
        proto_msg_set_ttfb_us(chunk, 500);
        proto_msg_set_body_bytes(chunk, "data: first\n\n", 13);
        proto_msg_send(&chunk, socket);
        if (test->mode == S_STREAM_DONE) {
            chunk = proto_msg_reply(msg, PROTO_MSG_CHUNK);
            proto_msg_set_sequence(chunk, 1);
            proto_msg_set_body_bytes(chunk, "data: second\n\n", 14);
            proto_msg_send(&chunk, socket);
            proto_msg_t *done = proto_msg_reply(msg, PROTO_MSG_DONE);
            proto_msg_set_status(done, 200);
            proto_msg_set_body_bytes(done, "data: [DONE]\n\n", 14);
            proto_msg_send(&done, socket);
        }
    }
    proto_msg_destroy(&msg);
}

static void s_test_drained(void *arg)
{
    ((s_test_t *)arg)->drained = true;
}

static double s_test_cpu_seconds(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

static void s_test_stop(proto_loop_t *loop, int id, void *arg)
{
    proto_loop_stop(loop);
}

static bool s_test_settled(s_test_t *test)
{
    return test->settles == 1 && s_test_all_ended(test) && s_settles_pending(test->server) == 0;
}

static const char s_test_chat_body[] =
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

//  The server with fake billing and dispatch, and a key "tg-test" (7, account 3).
static void s_test_setup(s_test_t *test)
{
    zsys_init();
    memset(test, 0, sizeof *test); //  no temporary: the clients take 3.5 MB
    test->admit_status = 200;
    test->dispatch_status = 200;
    test->loop = proto_loop_new();
    test->billing = zsock_new_router("inproc://ingress-test-billing");
    test->dispatch = zsock_new_router("inproc://ingress-test-dispatch");
    proto_loop_add_socket(test->loop, test->billing, s_test_billing, test);
    proto_loop_add_socket(test->loop, test->dispatch, s_test_dispatch, test);
    test->config = proto_config_new();
    const char *settings[][2] = {
        {"ingress.listen", "127.0.0.1:0"},
        {"billing.endpoints", "inproc://ingress-test-billing"},
        {"dispatch.endpoints", "inproc://ingress-test-dispatch"},
        {"ingress.max_body_bytes", "2048"},
        {"ingress.internal_timeout_ms", "50"},
    };
    char error[256];
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        PROTO_CHECK(proto_config_set(test->config, settings[i][0], settings[i][1], "test", error,
                                     sizeof error) == 0);
    test->metrics = proto_metrics_new();
    //  inproc:// peers carry no security; the socket limits still apply.
    PROTO_CHECK(proto_socket_init_with("none", "", "ingress", -1, error, sizeof error) == 0);
    test->server = ingress_server_new(test->loop, test->config, test->metrics, NULL, false, error,
                                      sizeof error);
    PROTO_CHECK(test->server);
    test->port = ingress_server_port(test->server);
    PROTO_CHECK(test->port > 0);
    test->key = (proto_api_key_t){.id = 7, .account_id = 3, .status = "active"};
    test->server->test_key = &test->key;
}

static void s_test_teardown(s_test_t *test)
{
    ingress_server_destroy(&test->server);
    proto_socket_shutdown();
    PROTO_CHECK(test->server == NULL);
    proto_loop_remove_socket(test->loop, test->billing);
    proto_loop_remove_socket(test->loop, test->dispatch);
    zsock_destroy(&test->billing);
    zsock_destroy(&test->dispatch);
    proto_metrics_destroy(&test->metrics);
    proto_config_destroy(&test->config);
    proto_loop_destroy(&test->loop);
}

//  Answers that need nobody else.
static void s_test_local_answers(s_test_t *test)
{
    char request[4096];
    s_client_t *client =
        s_test_request(test, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                             "x-request-id: my-id.1\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(strstr(client->data, "x-request-id: my-id.1."));
    PROTO_CHECK(strstr(client->data, "{\"status\":\"ok\"}"));
    //  Answers decided from the headers keep the connection alive.
    client = s_test_request(test, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                                  "GET /v1/models HTTP/1.1\r\nHost: t\r\n"
                                  "Connection: close\r\n\r\n");
    char *second_answer = strstr(client->data, "HTTP/1.1 401");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0 && second_answer);
    PROTO_CHECK(!memmem(client->data, (size_t)(second_answer - client->data), "close", 5));
    client = s_test_request(test, "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 404", 12) == 0);
    PROTO_CHECK(strstr(client->data, "\"code\":\"not_found\"") &&
                strstr(client->data, "x-request-id"));
    client = s_test_request(
        test, "GET /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 405", 12) == 0);
    PROTO_CHECK(strstr(client->data, "Allow: POST"));
    client = s_test_request(test,
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                            "Content-Length: 2\r\n\r\n{}");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 401", 12) == 0);
    PROTO_CHECK(strstr(client->data, "Missing API key") && strstr(client->data, "invalid_api_key"));
    client = s_test_request(test, "GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                  "x-api-key: wrong\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 401", 12) == 0);
    PROTO_CHECK(strstr(client->data, "Invalid API key."));
    client = s_test_request(test,
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                            "Authorization: Bearer tg-test\r\nContent-Length: 65536\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 413", 12) == 0);
    client = s_test_request(test, s_test_chat("", "{\"model\":", request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 400", 12) == 0 && strstr(client->data, "JSON"));
    client = s_test_request(test, s_test_chat("", "{\"model\":\"m\"}", request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 400", 12) == 0);
    PROTO_CHECK(strstr(client->data, "'messages'") &&
                strstr(client->data, "x-tollgate-overhead-ms"));
    client = s_test_request(test, "GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                  "Authorization: Bearer tg-test\r\n\r\n");
    PROTO_CHECK(strstr(client->data, "{\"object\":\"list\",\"data\":[]}"));
    client = s_test_request(test, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    PROTO_CHECK(strstr(client->data, "tollgate_ingress_requests_total{route=\"models\""));
    PROTO_CHECK(test->admits == 0);
}

//  A whole answer: ADMIT, then DISPATCH (dispatch routes), then DONE.
static void s_test_whole_answer(s_test_t *test)
{
    char request[4096];
    s_client_t *client =
        s_test_request(test, s_test_chat("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e"
                                         "4736-00f067aa0ba902b7-01\r\n",
                                         s_test_chat_body, request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(strstr(client->data, "{\"answer\":42}") && strstr(client->data, "x-request-id: "));
    PROTO_CHECK(strstr(client->data, "x-tollgate-overhead-ms: "));
    PROTO_CHECK(test->admits == 1 && test->dispatches == 1 && test->dispatch_ok);
    PROTO_CHECK(strcmp(test->dispatch_body, s_test_chat_body) == 0);
    PROTO_CHECK(test->dispatch_protocol == PROTO_PROTOCOL_OPENAI && !*test->dispatch_meta);
}

//  Gemini: model and stream from the path, the JSON array asked for
//  without alt=sse; the key in x-goog-api-key. Anthropic count_tokens.
static void s_test_protocols(s_test_t *test)
{
    char request[4096];
    const char *gemini = "{\"contents\":[{\"parts\":[{\"text\":\"hi\"}]}]}";
    snprintf(request, sizeof request,
             "POST /v1beta/models/gm-1:streamGenerateContent HTTP/1.1\r\nHost: t\r\n"
             "Connection: close\r\nx-goog-api-key: tg-test\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(gemini), gemini);
    s_client_t *client = s_test_request(test, request);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(test->dispatch_protocol == PROTO_PROTOCOL_GEMINI && test->dispatch_stream);
    PROTO_CHECK(strcmp(test->dispatch_model, "gm-1") == 0);
    PROTO_CHECK(strcmp(test->dispatch_meta, "{\"json_array\":true}") == 0);
    const char *count = "{\"model\":\"c-1\",\"messages\":[]}";
    snprintf(request, sizeof request,
             "POST /v1/messages/count_tokens HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "x-api-key: tg-test\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(count), count);
    client = s_test_request(test, request);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(test->dispatch_protocol == PROTO_PROTOCOL_ANTHROPIC && !test->dispatch_stream);
    PROTO_CHECK(strcmp(test->dispatch_meta, "{\"count_tokens\":true}") == 0);
    //  Errors on a Gemini path are in Gemini's shape.
    client = s_test_request(test, "POST /v1beta/models/gm-1:generateContent HTTP/1.1\r\n"
                                  "Host: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 401", 12) == 0);
    PROTO_CHECK(strstr(client->data, "\"status\":\"UNAUTHENTICATED\""));
    test->admits = test->dispatches = 0;
}

//  A stream: CHUNKs through the buffer, DONE ends it.
static void s_test_stream(s_test_t *test)
{
    char request[4096];
    test->mode = S_STREAM_DONE;
    s_client_t *client = s_test_request(test, s_test_chat("",
                                                          "{\"model\":\"m\",\"messages\":[],"
                                                          "\"stream\":true}",
                                                          request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(strstr(client->data, "text/event-stream"));
    char *first = strstr(client->data, "data: first");
    char *second = strstr(client->data, "data: second");
    char *last = strstr(client->data, "data: [DONE]");
    PROTO_CHECK(first && second && last && first < second && second < last);
}

//  Refusals by the other programs, and their silence.
static void s_test_refusals(s_test_t *test)
{
    char request[4096];
    //  Billing says no: its status and words, no SETTLE.
    test->admit_status = 429;
    s_client_t *client =
        s_test_request(test, s_test_chat("", s_test_chat_body, request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 429", 12) == 0);
    PROTO_CHECK(strstr(client->data, "Retry-After: 2\r\n") && strstr(client->data, "rate_limited"));
    PROTO_CHECK(test->dispatches == 0 && test->settles == 0);

    //  Dispatch finds no provider after billing admitted: its 503 reaches
    //  the client, and ingress settles nothing (dispatch settles what it took).
    test->admit_status = 200;
    test->dispatch_status = 503;
    s_test_reset(test);
    client = s_test_request(test, s_test_chat("", s_test_chat_body, request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 503", 12) == 0);
    PROTO_CHECK(strstr(client->data, "No provider is available for model 'm'."));
    PROTO_CHECK(test->dispatches == 1 && test->settles == 0);

    //  Every dispatch is draining: the request waits for one (at most the
    //  internal timeout), then is answered 503 and settled here, since no
    //  dispatch took it.
    test->dispatch_code = "draining";
    s_test_reset(test);
    client = s_test_send(test, s_test_chat("", s_test_chat_body, request, sizeof request));
    s_test_run(test, s_test_settled);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 503", 12) == 0 && test->dispatches >= 2);
    test->dispatch_code = NULL;

    //  Billing silent: internal timeout.
    test->dispatch_status = 200;
    test->billing_silent = true;
    client = s_test_request(test, s_test_chat("", s_test_chat_body, request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 503", 12) == 0);
    PROTO_CHECK(strstr(client->data, "internal_timeout"));
    test->billing_silent = false;
}

//  Two hundred idle streams cost no CPU; hanging up cancels each.
static void s_test_idle_streams(s_test_t *test, bool verbose)
{
    char request[4096];
    test->mode = S_STREAM_HOLD;
    s_test_reset(test);
    for (int i = 0; i < 200; i++)
        s_test_send(test, s_test_chat("", "{\"model\":\"m\",\"messages\":[],\"stream\":true}",
                                      request, sizeof request));
    s_test_run(test, s_test_all_streaming);
    PROTO_CHECK(test->dispatches == 200);
    double cpu = s_test_cpu_seconds();
    test->until = NULL;
    proto_loop_add_timer(test->loop, 1000, false, s_test_stop, NULL);
    proto_loop_run(test->loop);
    cpu = s_test_cpu_seconds() - cpu;
    if (verbose)
        printf("(200 idle streams: %.1f ms CPU in 1 s) ", cpu * 1000);
    PROTO_CHECK(cpu < 0.2);
    for (int i = 0; i < test->client_count; i++) {
        proto_loop_remove_fd(test->loop, test->clients[i].fd);
        shutdown(test->clients[i].fd, SHUT_RDWR);
        test->clients[i].ended = true;
    }
    s_test_run(test, s_test_all_cancelled);
    PROTO_CHECK(test->cancels == 200);
    s_test_reset(test);
}

void ingress_server_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_server: ");
    s_test_t test;
    s_test_setup(&test);
    //  In this order: each step leaves the fakes set as the next expects.
    s_test_local_answers(&test);
    s_test_whole_answer(&test);
    s_test_protocols(&test);
    s_test_stream(&test);
    s_test_refusals(&test);
    s_test_idle_streams(&test, verbose);
    //  Drain: nothing in flight, so it is over at once.
    ingress_server_drain(test.server, s_test_drained, &test);
    PROTO_CHECK(test.drained);
    s_test_teardown(&test);
    if (verbose)
        printf("OK\n");
}
