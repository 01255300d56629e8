#include "router_server.h"
#include "proto_log.h"
#include "proto_msg.h"
#include "proto_watch.h"
#include "router_select.h"

#include <assert.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    proto_service_t *service;    //  the process skeleton
    zsock_t *frontend;           //  ROUTER on router.bind
    zsock_t *outcomes;           //  SUB to every dispatch.events endpoint
    proto_watch_t *watch;        //  keeps catalog fresh
    proto_catalog_t *catalog;    //  current configuration
    router_rng_t rng;            //  spreads equal-priority candidates
    proto_metric_t *decisions;   //  ROUTE answered with candidates
    proto_metric_t *no_route;    //  ROUTE answered without
    proto_metric_t *outcome_count; //  outcomes seen
} s_router_t;

static void s_catalog_loaded(proto_catalog_t **catalog_p, void *arg)
{
    s_router_t *self = arg;
    proto_catalog_destroy(&self->catalog);
    self->catalog = *catalog_p;
    *catalog_p = NULL;
    log_debug(NULL, "catalog loaded: %zu models, %zu routes",
              proto_catalog_model_count(self->catalog), proto_catalog_route_count(self->catalog));
}

static void s_answer_route(s_router_t *self, proto_msg_t *request)
{
    proto_msg_t *reply = proto_msg_reply(request, PROTO_MSG_ROUTE_REPLY);
    proto_candidate_t candidates[PROTO_MSG_CANDIDATES_MAX];
    const char *model = proto_msg_model(request);
    int count = router_select(self->catalog, model, &self->rng, candidates,
                              PROTO_MSG_CANDIDATES_MAX);
    char message[512];
    if (count > 0) {
        proto_msg_set_status(reply, 200);
        proto_msg_set_candidates(reply, candidates, (size_t)count);
        proto_metric_add(self->decisions, 1);
    } else if (count == 0) {
        snprintf(message, sizeof message, "No provider is available for model '%s'.", model);
        proto_msg_set_status(reply, 503);
        proto_msg_set_error_code(reply, "no_provider");
        proto_msg_set_error_message(reply, message);
        proto_metric_add(self->no_route, 1);
        log_info(proto_msg_request_id(request), "no route for model %s", model);
    } else {
        snprintf(message, sizeof message,
                 "The model '%s' does not exist or you do not have access to it.", model);
        proto_msg_set_status(reply, 404);
        proto_msg_set_error_code(reply, "model_not_found");
        proto_msg_set_error_message(reply, message);
        proto_metric_add(self->no_route, 1);
    }
    proto_msg_send(&reply, self->frontend);
}

static void s_frontend_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    s_router_t *self = arg;
    proto_msg_t *request = NULL;
    int rc = proto_msg_recv(&request, socket);
    if (rc == -2)
        log_warn(NULL, "dropped a malformed message");
    if (rc != 0)
        return;
    if (proto_msg_type(request) == PROTO_MSG_ROUTE)
        s_answer_route(self, request);
    else
        log_warn(proto_msg_request_id(request), "ignored %s",
                 proto_msg_type_name(proto_msg_type(request)));
    proto_msg_destroy(&request);
}

static void s_outcome_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    s_router_t *self = arg;
    proto_msg_t *outcome = NULL;
    int rc = proto_msg_recv(&outcome, socket);
    if (rc == -2)
        log_warn(NULL, "dropped a malformed outcome");
    if (rc == 0 && proto_msg_type(outcome) == PROTO_MSG_OUTCOME)
        proto_metric_add(self->outcome_count, 1);
    proto_msg_destroy(&outcome);
}

static void s_stop(void **state_p)
{
    s_router_t *self = *state_p;
    if (!self)
        return;
    proto_loop_t *loop = proto_service_loop(self->service);
    if (self->frontend)
        proto_loop_remove_socket(loop, self->frontend);
    if (self->outcomes)
        proto_loop_remove_socket(loop, self->outcomes);
    zsock_destroy(&self->frontend);
    zsock_destroy(&self->outcomes);
    proto_watch_destroy(&self->watch);
    proto_catalog_destroy(&self->catalog);
    free(self);
    *state_p = NULL;
}

static void *s_start(proto_service_t *service)
{
    s_router_t *self = calloc(1, sizeof *self);
    assert(self);
    self->service = service;
    proto_config_t *config = proto_service_config(service);
    proto_loop_t *loop = proto_service_loop(service);
    proto_metrics_t *metrics = proto_service_metrics(service);
    self->decisions = proto_metrics_counter(metrics, "tollgate_router_decisions_total",
                                            "Route decisions with candidates.", NULL);
    self->no_route = proto_metrics_counter(metrics, "tollgate_router_no_route_total",
                                           "Route requests without a usable candidate.", NULL);
    self->outcome_count = proto_metrics_counter(metrics, "tollgate_router_outcomes_total",
                                                "Attempt outcomes heard from dispatch.", NULL);
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    router_rng_seed(&self->rng, seed);

    char error[1024];
    self->watch = proto_watch_new(loop, config, false, s_catalog_loaded, self, error, sizeof error);
    if (!self->watch) {
        log_error(NULL, "%s", error);
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    const char *bind = proto_config_str(config, "router.bind");
    self->frontend = zsock_new(ZMQ_ROUTER);
    if (zsock_bind(self->frontend, "%s", bind) < 0) {
        log_error(NULL, "cannot bind %s: %s", bind, zmq_strerror(zmq_errno()));
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    self->outcomes = zsock_new(ZMQ_SUB);
    zsock_set_subscribe(self->outcomes, "");
    const char *endpoints[64];
    int count = proto_config_endpoints(config, "dispatch.events", endpoints, 64);
    for (int i = 0; i < count; i++)
        zsock_connect(self->outcomes, "%s", endpoints[i]);
    proto_loop_add_socket(loop, self->frontend, s_frontend_ready, self);
    proto_loop_add_socket(loop, self->outcomes, s_outcome_ready, self);
    return self;
}

//  The router holds no request state: every ROUTE is answered at once, so
//  draining is immediate.
static void s_drain(void *state)
{
    s_router_t *self = state;
    proto_service_drained(self->service);
}

static char *s_status(void *state)
{
    s_router_t *self = state;
    char *text = NULL;
    if (asprintf(&text, "{\"models\":%zu,\"routes\":%zu}",
                 proto_catalog_model_count(self->catalog),
                 proto_catalog_route_count(self->catalog))
        < 0)
        return NULL;
    return text;
}

const proto_service_def_t router_server_def = {
    .name = "router",
    .start = s_start,
    .drain = s_drain,
    .stop = s_stop,
    .status = s_status,
};
