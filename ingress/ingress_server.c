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
#include "ingress_fixture.h"
#include "ingress_http.h"
#include "ingress_lease.h"
#include "ingress_models.h"
#include "ingress_queue.h"
#include "ingress_relay.h"
#include "ingress_request.h"
#include "ingress_server_private.h"
#include "proto_check.h"
#include "proto_crypto.h"
#include "proto_log.h"
#include "proto_socket.h"
#include "proto_msg.h"
#include "proto_outbox.h"
#include "proto_tls.h"
#include "proto_watch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define S_CONNECTION_LIMIT 16384 //  client connections (fds permitting)

#define S_CONNECTION_TIMEOUT_S 120 //  idle keep-alive connections close after this
#define S_SETTLE_RESEND_MS 1000    //  outbox re-send period for SETTLE
#define S_PEER_RCVHWM 100000       //  CHUNKs we queue before dispatch's ROUTER must drop
//  Messages queued towards one peer before its DEALER is full (and a request
//  is answered 503): a client connection has one request at a time, which
//  sends a peer at most a DISPATCH (or ADMIT) and a CANCEL. ZeroMQ's default
//  of 1,000 made the 1,001st of 10,000 requests arriving at once a 503
//  "no dispatch instance is reachable" while dispatch was only busy.
#define S_PEER_SNDHWM (2 * S_CONNECTION_LIMIT)
#define S_LEASE_SWEEP_MS 250     //  expired leases are given back this often
#define S_MODELS_CACHE_MAX 10000 //  model lists kept (one per key and protocol)

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
void ingress_server_hangup(void *arg)
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
        ingress_relay_end(r, "client_closed");
        r->phase = INGRESS_PHASE_ANSWERED;
        ingress_request_answer_error(r, 499, "client_closed", "The client closed the connection");
        break;
    case INGRESS_PHASE_QUERY:
        r->phase = INGRESS_PHASE_ANSWERED;
        ingress_server_forget(r);
        ingress_request_resume(r);
        break;
    case INGRESS_PHASE_STREAMING:
        ingress_relay_end(r, "client_closed");
        r->client_gone = true;
        r->status = 499;
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
    zsock_set_sndhwm(peer->socket, S_PEER_SNDHWM);
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
    if (proto_config_bool(config, "ingress.sched_batch"))
        self->sched = proto_sched_new(metrics, "ingress");
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
        (size_t)proto_config_int(config, "ingress.connection_memory"),
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
    proto_sched_destroy(&self->sched);
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

size_t ingress_server_settles_pending(ingress_server_t *self)
{
    size_t pending = 0;
    for (int i = 0; i < self->billing_count; i++)
        pending += proto_outbox_pending(self->billing[i].outbox);
    return pending;
}

void ingress_server_check_drained(ingress_server_t *self)
{
    if (!self->draining || !self->drained_fn || self->live_count || zhashx_size(self->requests) ||
        ingress_server_settles_pending(self))
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
                 ingress_daemon_connections(self->client), ingress_server_settles_pending(self),
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
//  Self test: the server starts with fake peers (ingress_fixture), says
//  what is in flight, and with nothing in flight a drain is over at once.
//  The request path is tested by its parts: ingress_http, ingress_admit,
//  ingress_relay.

void ingress_server_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_server: ");
    ingress_fixture_t *test = ingress_fixture_new(50);
    PROTO_CHECK(ingress_server_port(test->server) == test->port && test->port > 0);
    ingress_fixture_client_t *client = ingress_fixture_request(
        test, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    char *status = ingress_server_status(test->server);
    PROTO_CHECK(status && strstr(status, "\"in_flight\":0,\"pipeline\":0,"));
    free(status);
    ingress_fixture_reset(test);
    ingress_server_drain(test->server, ingress_fixture_drained, test);
    PROTO_CHECK(test->drained);

    //  Thousands of requests arriving at once queue their DISPATCHes while
    //  dispatch is busy reading: with ZeroMQ's default send mark (1,000,
    //  plus the peer's 1,000) the DEALER was full and the rest were
    //  answered 503 (9,000 of 10,000 streams in bench/run.sh). The fake
    //  dispatch stops reading; 5,000 messages still go.
    proto_loop_remove_socket(test->loop, test->dispatch);
    void *dealer = zsock_resolve(test->server->dispatch[0].socket);
    int sent = 0;
    while (sent < 5000 && zmq_send(dealer, "DISPATCH", 8, ZMQ_DONTWAIT) == 8)
        sent++;
    PROTO_CHECK(sent == 5000);
    ingress_fixture_destroy(&test);
    if (verbose)
        printf("OK\n");
}
