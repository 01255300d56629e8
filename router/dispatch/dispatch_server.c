#include "dispatch_server.h"
#include "dispatch_held.h"
#include "dispatch_reach.h"
#include "dispatch_request.h"
#include "dispatch_route.h"
#include "dispatch_settle.h"
#include "dispatch_taken.h"
#include "proto_sched.h"
#include "proto_batch.h"
#include "proto_catalog.h"
#include "proto_curl.h"
#include "proto_error.h"
#include "proto_log.h"
#include "proto_msg.h"
#include "proto_socket.h"
#include "proto_watch.h"
#include "router_server.h"

#include <assert.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  ROUTER drops (never blocks) at its high-water mark, and a dropped CHUNK
//  would corrupt a client's stream, so the mark is high.
#define S_ROUTER_SNDHWM 1000000
//  A draining instance keeps reading (and handing DISPATCHes back) until
//  none came for S_DRAIN_QUIET_MS, or S_DRAIN_READ_MS passed: what a DEALER
//  sends until it sees the connection close is read, not lost.
#define S_DRAIN_QUIET_MS 200
#define S_DRAIN_READ_MS 1000
#define S_DRAIN_TICK_MS 50
//  Finished requests are remembered this long (and their answers while they
//  fit): a DISPATCH sent again after a blip is answered, not run twice.
//  Ingress sends again within its dispatch grace (ingress.dispatch_grace_ms
//  after the connection dropped, the DONE lost with it): ids stay for
//  S_TAKEN_TTL_MS or twice the grace, whichever is longer. Answers are only
//  for the DONEs a blip lost, sent again once ingress is reconnected
//  (20-500 ms, at most the grace), so they go after twice the grace (a
//  re-send later still finds the id: an error, never a second call); and
//  8 MiB is the last 4 s of answers at 1,000 requests/s of 2 KiB each. An
//  answer goes as soon as ingress says its DONE arrived (dispatch_taken),
//  so under load the room holds only what a blip may have lost: full, it
//  was ~14 MiB of dispatch's RSS in bench/run.sh.
#define S_TAKEN_TTL_MS 30000
#define S_TAKEN_BYTES (8u * 1024u * 1024u)
#define S_TAKEN_IDS 500000
//  What expired is forgotten at least this often, also while no request
//  comes: an idle instance gives the memory of its last busy 30 s back.
#define S_TAKEN_EXPIRE_MS 1000
#define S_OUTCOME_DELAY_MS 10 //  the longest an outcome waits for its batch

struct _dispatch_server_t {
    proto_service_t *service;   //  the program skeleton
    proto_loop_t *loop;         //  its loop
    proto_config_t *config;     //  its configuration
    proto_metrics_t *metrics;   //  its metrics registry
    proto_trace_t *tracer;      //  its span sender (NULL in a test service)
    zsock_t *router;            //  DISPATCH/CANCEL in, CHUNK/DONE out
    zsock_t *events;            //  PUB of OUTCOMEs
    proto_watch_t *watch;       //  keeps the catalog fresh
    dispatch_held_t *held;      //  DISPATCHes for a key our catalog lacks, waiting
    dispatch_request_env_t env; //  what the requests borrow: route, settle, catalog, ...
    zhashx_t *requests;         //  request id -> dispatch_request_t* in flight
    dispatch_request_t *unsent; //  requests with stream bytes for their next CHUNK
    bool draining;              //  SIGTERM seen
    uint64_t drain_started_ms;  //  when SIGTERM came
    uint64_t last_dispatch_ms;  //  when the last DISPATCH came
    int drain_timer;            //  re-checks the drain while quiet, 0 = none
    int expire_timer;           //  forgets expired finished requests
    proto_metric_t *in_flight;  //  gauge of requests in flight
    proto_sched_t *sched;       //  SCHED_BATCH under load; NULL when dispatch.sched_batch is off
};

//  The requests in flight changed: the gauge, and the threads' policy.
static void s_in_flight(dispatch_server_t *self)
{
    size_t count = zhashx_size(self->requests);
    proto_metric_set(self->in_flight, (double)count);
    if (self->sched)
        proto_sched_load(self->sched, count, proto_loop_now_ms());
}

static void s_check_drained(dispatch_server_t *self)
{
    uint64_t now = proto_loop_now_ms();
    bool quiet = now - self->last_dispatch_ms >= S_DRAIN_QUIET_MS ||
                 now - self->drain_started_ms >= S_DRAIN_READ_MS;
    if (self->draining && quiet && zhashx_size(self->requests) == 0 &&
        dispatch_settle_pending(self->env.settle) == 0)
        proto_service_drained(self->service);
}

static void s_drain_tick(proto_loop_t *loop, int id, void *arg)
{
    s_check_drained(arg);
}

static void s_expire_tick(proto_loop_t *loop, int id, void *arg)
{
    dispatch_server_t *self = arg;
    dispatch_taken_expire(self->env.taken, proto_loop_now_ms());
}

//  --------------------------------------------------------------------------
//  Only accounts and keys of the catalog (dispatch_held says why; an unknown
//  key waits there while our catalog reloads).

static void s_on_dispatch(dispatch_server_t *self, proto_msg_t **msg_p);

static bool s_known(const proto_msg_t *msg, void *arg)
{
    dispatch_server_t *self = arg;
    const proto_api_key_t *key = proto_catalog_key(self->env.catalog, proto_msg_key_id(msg));
    return key && key->account_id == proto_msg_account_id(msg) &&
           proto_catalog_account(self->env.catalog, key->account_id);
}

static void s_refuse_unknown(dispatch_server_t *self, proto_msg_t **msg_p)
{
    proto_msg_t *msg = *msg_p;
    log_warn(proto_msg_request_id(msg),
             "DISPATCH refused: key %llu of account %llu is not in the catalog",
             (unsigned long long)proto_msg_key_id(msg),
             (unsigned long long)proto_msg_account_id(msg));
    proto_msg_t *done = proto_msg_reply(msg, PROTO_MSG_DONE);
    proto_msg_set_status(done, 403);
    proto_msg_set_error_code(done, "unknown_key");
    proto_msg_set_error_message(done, "The API key or its account is not known.");
    proto_msg_send(&done, self->router);
    proto_msg_destroy(msg_p);
}

//  A held DISPATCH's wait is over: served now, or refused.
static void s_held_release(proto_msg_t **msg_p, bool known, void *arg)
{
    if (known)
        s_on_dispatch(arg, msg_p);
    else
        s_refuse_unknown(arg, msg_p);
}

static void s_hold_unknown(dispatch_server_t *self, proto_msg_t **msg_p)
{
    int rc = dispatch_held_add(self->held, msg_p);
    if (rc < 0)
        s_refuse_unknown(self, msg_p);
    else if (rc == 1)
        proto_watch_reload(self->watch);
}

//  A DISPATCH for a request finished here: its answer again, or an error
//  when the answer was not kept. Never a second upstream call.
static void s_answer_again(dispatch_server_t *self, proto_msg_t *msg, proto_msg_t **done_p)
{
    const char *rid = proto_msg_request_id(msg);
    proto_msg_t *done = *done_p;
    *done_p = NULL;
    if (done) {
        log_info(rid, "DISPATCH again for a finished request: its DONE again");
        proto_msg_set_routing_id(done, proto_msg_routing_id(msg));
    } else {
        log_warn(rid, "DISPATCH again for a finished request whose answer is gone");
        done = proto_msg_reply(msg, PROTO_MSG_DONE);
        char *body = proto_error_body((int)proto_msg_client_protocol(msg), 502, "answer_lost",
                                      "The request was served, but its answer was lost between "
                                      "gateway programs.");
        proto_msg_set_status(done, 502);
        proto_msg_set_error_code(done, "answer_lost");
        proto_msg_set_content_type(done, "application/json");
        proto_msg_set_body_bytes(done, body, strlen(body));
        free(body);
    }
    if (proto_msg_send(&done, self->router) != 0)
        log_warn(rid, "DONE could not be sent to ingress");
}

static void s_on_dispatch(dispatch_server_t *self, proto_msg_t **msg_p)
{
    proto_msg_t *msg = *msg_p;
    const char *rid = proto_msg_request_id(msg);
    if (!*rid) {
        log_warn(NULL, "DISPATCH without a request id dropped");
        proto_msg_destroy(msg_p);
        return;
    }
    self->last_dispatch_ms = proto_loop_now_ms();
    //  The answers ingress has received need not wait to be sent again.
    if (proto_msg_link(msg))
        dispatch_taken_delivered(self->env.taken, proto_msg_link(msg),
                                 proto_msg_link_sequence(msg));
    //  Taken once, never run twice (also while draining).
    dispatch_request_t *running = zhashx_lookup(self->requests, rid);
    //  Ingress numbers its sends of a request: the first (attempt 1) was
    //  taken nowhere, so only a request sent before is looked up (one
    //  that does not say is always looked up).
    proto_msg_t *done = NULL;
    bool finished = !running && proto_msg_attempt(msg) != 1 &&
                    dispatch_taken_find(self->env.taken, rid, proto_loop_now_ms(), &done);
    if (running)
        dispatch_request_again(running, msg);
    else if (finished)
        s_answer_again(self, msg, &done);
    if (running || finished) {
        proto_msg_destroy(msg_p);
        return;
    }
    if (self->draining) {
        //  Handed back, not taken: no SETTLE here (ingress sends the
        //  request to another instance, or settles it itself).
        log_info(rid, "answering 503 draining: handed back to ingress");
        proto_msg_t *done = proto_msg_reply(msg, PROTO_MSG_DONE);
        proto_msg_set_status(done, 503);
        proto_msg_set_error_code(done, "draining");
        proto_msg_set_error_message(done, "This dispatch instance is shutting down.");
        if (proto_msg_send(&done, self->router) != 0)
            log_warn(rid, "DONE could not be sent to ingress");
        proto_msg_destroy(msg_p);
        return;
    }
    if (!s_known(msg, self)) {
        s_hold_unknown(self, msg_p);
        return;
    }
    //  Sent again after this process died with it under way (ingress got none
    //  of its replies): the provisional record the journal gave back waits
    //  for this run's own records, which replace it.
    if (dispatch_settle_rerun(self->env.settle, rid))
        log_info(rid, "sent again after a restart: the replayed provisional record waits");
    dispatch_request_t *request = dispatch_request_new(&self->env, msg_p);
    zhashx_insert(self->requests, dispatch_request_id(request), request);
    s_in_flight(self);
    dispatch_request_start(request);
}

static void s_on_cancel(dispatch_server_t *self, proto_msg_t *msg)
{
    const char *rid = proto_msg_request_id(msg);
    dispatch_request_t *request = zhashx_lookup(self->requests, rid);
    if (!request) {
        log_debug(rid, "CANCEL for a request not in flight");
        return;
    }
    dispatch_request_cancel(request, msg);
}

static void s_ingress_message(proto_msg_t **msg_p, void *arg)
{
    dispatch_server_t *self = arg;
    proto_msg_t *msg = *msg_p;
    switch (proto_msg_type(msg)) {
    case PROTO_MSG_DISPATCH:
        s_on_dispatch(self, &msg);
        break;
    case PROTO_MSG_CANCEL:
        s_on_cancel(self, msg);
        break;
    default:
        log_warn(proto_msg_request_id(msg), "dispatch: unexpected %s dropped",
                 proto_msg_type_name(proto_msg_type(msg)));
    }
    *msg_p = msg; //  s_on_dispatch may have taken it (NULL then)
}

static void s_router_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    if (proto_batch_recv(socket, s_ingress_message, arg) == -2)
        log_warn(NULL, "dispatch: dropped a malformed message");
}

//  An outbox that empties may end a drain.
static void s_on_commit(void *arg)
{
    s_check_drained(arg);
}

static void s_catalog_swap(proto_catalog_t **catalog_p, void *arg)
{
    dispatch_server_t *self = arg;
    //  Requests hold candidate ids, never catalog pointers across turns,
    //  so the old snapshot can go at once (once the route's pairs, which
    //  borrow it, are rebuilt on the new one).
    dispatch_route_set_catalog(self->env.route, *catalog_p);
    proto_catalog_destroy(&self->env.catalog);
    self->env.catalog = *catalog_p;
    *catalog_p = NULL;
    if (self->held)
        dispatch_held_check(self->held);
}

//  --------------------------------------------------------------------------
//  Server

static void s_request_free(void **item)
{
    dispatch_request_destroy((dispatch_request_t **)item);
}

//  A request ended: forgetting it destroys it, and the last one may end a
//  drain.
static void s_request_end(const char *request_id, void *arg)
{
    dispatch_server_t *self = arg;
    zhashx_delete(self->requests, request_id);
    s_in_flight(self);
    s_check_drained(self);
}

static zsock_t *s_bind(int type, proto_config_t *config, const char *key)
{
    const char *endpoint = proto_config_str(config, key);
    zsock_t *socket = proto_socket_new(type);
    if (!socket)
        return NULL;
    if (type == ZMQ_ROUTER)
        zsock_set_sndhwm(socket, S_ROUTER_SNDHWM);
    if (proto_socket_bind(socket, endpoint) < 0) {
        log_error(NULL, "cannot bind %s %s: %s", key, endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&socket);
    }
    return socket;
}

//  Queue depths for /metrics, read when scraped.
static void s_collect(proto_metrics_t *metrics, void *arg)
{
    dispatch_server_t *self = arg;
    proto_metric_set(proto_metrics_gauge(metrics, "tollgate_dispatch_outbox",
                                         "SETTLEs kept until billing's COMMIT.", NULL),
                     (double)dispatch_settle_pending(self->env.settle));
    proto_metric_set(proto_metrics_gauge(metrics, "tollgate_dispatch_done_waiting",
                                         "DONEs waiting for the settlement journal's sync.", NULL),
                     (double)dispatch_settle_waiting(self->env.settle));
    proto_metric_set(proto_metrics_gauge(metrics, "tollgate_dispatch_taken_requests",
                                         "Finished requests remembered against a second run.",
                                         NULL),
                     (double)dispatch_taken_size(self->env.taken));
    proto_metric_set(proto_metrics_gauge(metrics, "tollgate_dispatch_taken_answer_bytes",
                                         "Bytes of their answers kept to be sent again.", NULL),
                     (double)dispatch_taken_bytes(self->env.taken));
}

//  After each round of libcurl's reads: one CHUNK per stream for all it read.
static void s_send_unsent(void *arg)
{
    dispatch_server_t *self = arg;
    dispatch_request_send_unsent(&self->unsent);
}

dispatch_server_t *dispatch_server_new(proto_service_t *service)
{
    dispatch_server_t *self = calloc(1, sizeof *self);
    assert(self);
    self->service = service;
    self->loop = proto_service_loop(service);
    self->config = proto_service_config(service);
    self->metrics = proto_service_metrics(service);
    self->tracer = proto_service_trace(service);
    self->env.loop = self->loop;
    self->env.metrics = self->metrics;
    self->env.tracer = self->tracer;
    self->env.on_end = s_request_end;
    self->env.arg = self;
    self->env.decision = malloc(sizeof *self->env.decision);
    assert(self->env.decision);
    self->env.connect_timeout_ms =
        (uint64_t)proto_config_int(self->config, "dispatch.connect_timeout_ms");
    self->env.first_byte_timeout_ms =
        (uint64_t)proto_config_int(self->config, "dispatch.first_byte_timeout_ms");
    self->env.idle_timeout_ms =
        (uint64_t)proto_config_int(self->config, "dispatch.idle_timeout_ms");
    self->env.total_timeout_ms =
        (uint64_t)proto_config_int(self->config, "dispatch.total_timeout_ms");
    self->requests = zhashx_new();
    zhashx_set_destructor(self->requests, s_request_free);
    self->held = dispatch_held_new(self->loop, s_known, s_held_release, self);
    self->in_flight = proto_metrics_gauge(self->metrics, "tollgate_dispatch_in_flight",
                                          "Requests being dispatched", NULL);
    if (proto_config_bool(self->config, "dispatch.sched_batch"))
        self->sched = proto_sched_new(self->metrics, "dispatch");
    self->env.failovers = proto_metrics_counter(self->metrics, "tollgate_dispatch_failovers_total",
                                                "Attempts replaced by the next candidate", NULL);
    self->env.no_route = proto_metrics_counter(self->metrics, "tollgate_dispatch_no_route_total",
                                               "Requests no candidate could take", NULL);
    router_breaker_config_t breaker = router_server_breaker_config(self->config);
    self->env.route = dispatch_route_new(self->config, proto_service_instance(service));
    self->env.reach = dispatch_reach_new(&breaker);

    char error[512];
    self->watch =
        proto_watch_new(self->loop, self->config, true, s_catalog_swap, self, error, sizeof error);
    if (!self->watch) {
        log_error(NULL, "cannot load the configuration catalog: %s", error);
        goto fail;
    }
    self->env.multi = proto_curl_new(self->loop);
    self->env.unsent = &self->unsent;
    if (self->env.multi)
        proto_curl_after_action(self->env.multi, s_send_unsent, self);
    self->router = s_bind(ZMQ_ROUTER, self->config, "dispatch.bind");
    self->events = s_bind(ZMQ_PUB, self->config, "dispatch.events.bind");
    if (!self->env.multi || !self->router || !self->events)
        goto fail;
    self->env.router = self->router;
    //  Routers and health fold outcomes in batches. This dispatch applies
    //  its own outcomes to its breakers at once; the others hear of them
    //  at most S_OUTCOME_DELAY_MS later, which bounds how often an outcome
    //  wakes the router and health (each wake-up costs them ~30 µs of CPU:
    //  at 1 ms they spent 8 µs per request each at 4,000 requests/s).
    self->env.outcomes =
        proto_batch_new(self->loop, self->events, 256, PROTO_BATCH_BYTES_MAX, S_OUTCOME_DELAY_MS);
    if (dispatch_route_listen(self->env.route, self->loop, self->env.outcomes) != 0)
        goto fail;
    self->env.settle =
        dispatch_settle_new(self->loop, self->config, self->router, s_on_commit, self);
    if (!self->env.settle)
        goto fail;
    self->env.nonce = randombytes_random();
    uint64_t grace_ms = (uint64_t)proto_config_int(self->config, "ingress.dispatch_grace_ms");
    self->env.taken =
        dispatch_taken_new(2 * grace_ms > S_TAKEN_TTL_MS ? 2 * grace_ms : S_TAKEN_TTL_MS,
                           2 * grace_ms, S_TAKEN_BYTES, S_TAKEN_IDS);
    self->expire_timer =
        proto_loop_add_timer(self->loop, S_TAKEN_EXPIRE_MS, true, s_expire_tick, self);
    proto_service_on_collect(service, s_collect, self);
    proto_loop_add_socket(self->loop, self->router, s_router_ready, self);
    log_info(NULL, "dispatch on %s, outcomes on %s, %d billing endpoint(s)",
             proto_config_str(self->config, "dispatch.bind"),
             proto_config_str(self->config, "dispatch.events.bind"),
             dispatch_settle_endpoints(self->env.settle));
    return self;
fail:
    dispatch_server_destroy(&self);
    return NULL;
}

void dispatch_server_destroy(dispatch_server_t **self_p)
{
    assert(self_p);
    dispatch_server_t *self = *self_p;
    if (!self)
        return;
    if (self->drain_timer)
        proto_loop_cancel_timer(self->loop, self->drain_timer);
    if (self->expire_timer)
        proto_loop_cancel_timer(self->loop, self->expire_timer);
    dispatch_held_destroy(&self->held);
    proto_sched_destroy(&self->sched);
    //  Requests first: their calls must leave the multi handle before it goes.
    zhashx_destroy(&self->requests);
    //  Then the DONEs that waited for the journal, while the ROUTER is open.
    dispatch_settle_destroy(&self->env.settle);
    if (self->router)
        proto_loop_remove_socket(self->loop, self->router);
    dispatch_taken_destroy(&self->env.taken);
    proto_batch_destroy(&self->env.outcomes);
    proto_curl_destroy(&self->env.multi);
    proto_watch_destroy(&self->watch);
    //  The route's pairs borrow the catalog: the route goes first.
    dispatch_route_destroy(&self->env.route);
    proto_catalog_destroy(&self->env.catalog);
    dispatch_reach_destroy(&self->env.reach);
    zsock_destroy(&self->router);
    zsock_destroy(&self->events);
    free(self->env.decision);
    free(self);
    *self_p = NULL;
}

void dispatch_server_drain(dispatch_server_t *self)
{
    self->draining = true;
    self->drain_started_ms = proto_loop_now_ms();
    if (!self->drain_timer)
        self->drain_timer =
            proto_loop_add_timer(self->loop, S_DRAIN_TICK_MS, true, s_drain_tick, self);
    log_info(NULL, "draining: %zu request(s) in flight, %zu settlement(s) unacknowledged",
             zhashx_size(self->requests), dispatch_settle_pending(self->env.settle));
    s_check_drained(self);
}

char *dispatch_server_status(dispatch_server_t *self)
{
    char *text = NULL;
    if (asprintf(&text,
                 "{\"in_flight\":%zu,\"upstream_transfers\":%zu,\"settle_pending\":%zu,"
                 "\"table_version\":%llu,\"table_router\":\"%s\",\"tables\":%llu}",
                 zhashx_size(self->requests), proto_curl_running(self->env.multi),
                 dispatch_settle_pending(self->env.settle),
                 (unsigned long long)dispatch_route_table_version(self->env.route),
                 dispatch_route_table_router(self->env.route),
                 (unsigned long long)dispatch_route_tables_merged(self->env.route)) < 0)
        return NULL;
    return text;
}
