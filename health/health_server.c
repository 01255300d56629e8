#include "health_server.h"
#include "health_state.h"
#include "proto_log.h"
#include "proto_msg.h"

#include <assert.h>
#include <stdlib.h>

#define S_REPUBLISH_MS 5000

typedef struct {
    proto_service_t *service;  //  the process skeleton
    zsock_t *outcomes;         //  SUB to every dispatch.events endpoint
    zsock_t *publisher;        //  PUB on health.events.bind
    health_state_t *state;     //  folded outcomes
    int timer;                 //  periodic republish
    proto_metric_t *heard;     //  outcomes received
} s_health_t;

static void s_publish(s_health_t *self, const health_entry_t *entry)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_HEALTH);
    proto_msg_set_provider_id(msg, entry->provider_id);
    proto_msg_set_provider_key_id(msg, entry->provider_key_id);
    proto_msg_set_upstream_model(msg, entry->upstream_model);
    proto_msg_set_state(msg, entry->level);
    proto_msg_set_success_ppm(msg, entry->success_ppm);
    proto_msg_set_latency_us(msg, entry->latency_us);
    proto_msg_set_ttfb_us(msg, entry->ttfb_us);
    proto_msg_send(&msg, self->publisher);
}

static void s_outcome_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    s_health_t *self = arg;
    proto_msg_t *outcome = NULL;
    int rc = proto_msg_recv(&outcome, socket);
    if (rc == -2)
        log_warn(NULL, "dropped a malformed outcome");
    if (rc == 0 && proto_msg_type(outcome) == PROTO_MSG_OUTCOME) {
        uint64_t status = proto_msg_status(outcome);
        const health_entry_t *entry = health_state_record(
            self->state, proto_msg_provider_id(outcome), proto_msg_provider_key_id(outcome),
            proto_msg_upstream_model(outcome), status >= 200 && status < 300,
            proto_msg_latency_us(outcome), proto_msg_ttfb_us(outcome));
        proto_metric_add(self->heard, 1);
        s_publish(self, entry);
    }
    proto_msg_destroy(&outcome);
}

static void s_republish(proto_loop_t *loop, int id, void *arg)
{
    s_health_t *self = arg;
    for (size_t i = 0; i < health_state_count(self->state); i++)
        s_publish(self, health_state_at(self->state, i));
}

static void s_stop(void **state_p)
{
    s_health_t *self = *state_p;
    if (!self)
        return;
    proto_loop_t *loop = proto_service_loop(self->service);
    if (self->timer)
        proto_loop_cancel_timer(loop, self->timer);
    if (self->outcomes)
        proto_loop_remove_socket(loop, self->outcomes);
    zsock_destroy(&self->outcomes);
    zsock_destroy(&self->publisher);
    health_state_destroy(&self->state);
    free(self);
    *state_p = NULL;
}

static void *s_start(proto_service_t *service)
{
    s_health_t *self = calloc(1, sizeof *self);
    assert(self);
    self->service = service;
    self->state = health_state_new();
    proto_config_t *config = proto_service_config(service);
    proto_loop_t *loop = proto_service_loop(service);
    self->heard = proto_metrics_counter(proto_service_metrics(service),
                                        "tollgate_health_outcomes_total",
                                        "Attempt outcomes folded into health.", NULL);
    const char *bind = proto_config_str(config, "health.events.bind");
    self->publisher = zsock_new(ZMQ_PUB);
    if (zsock_bind(self->publisher, "%s", bind) < 0) {
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
    proto_loop_add_socket(loop, self->outcomes, s_outcome_ready, self);
    self->timer = proto_loop_add_timer(loop, S_REPUBLISH_MS, true, s_republish, self);
    return self;
}

//  Health state is soft (rebuilt from outcomes), so there is nothing to hand
//  on when asked to stop.
static void s_drain(void *state)
{
    s_health_t *self = state;
    proto_service_drained(self->service);
}

static char *s_status(void *state)
{
    s_health_t *self = state;
    char *text = NULL;
    if (asprintf(&text, "{\"entries\":%zu}", health_state_count(self->state)) < 0)
        return NULL;
    return text;
}

const proto_service_def_t health_server_def = {
    .name = "health",
    .start = s_start,
    .drain = s_drain,
    .stop = s_stop,
    .status = s_status,
};
