#include "router_server.h"
#include "proto_batch.h"
#include "proto_log.h"
#include "proto_msg.h"
#include "proto_observe.h"
#include "proto_watch.h"
#include "router_select.h"
#include "router_store.h"

#include <assert.h>
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define S_SWEEP_MS 5000           //  expiry sweeps
#define S_FLIGHTS_MAX 200000      //  decisions remembered for their OUTCOME
#define S_STATS_MAX_AGE_MS 600000 //  health older than this is not used
//  A draining router keeps answering until no ROUTE came for
//  S_DRAIN_QUIET_MS, or S_DRAIN_READ_MS passed: ingress' DEALER sends here
//  until it sees the connection close, and what is unread at exit is lost
//  (ingress re-sends a ROUTE after 250 ms, but each loss costs that).
#define S_DRAIN_QUIET_MS 200
#define S_DRAIN_READ_MS 1000
#define S_DRAIN_TICK_MS 50

//  What this router decided for a request, until its first success.
typedef struct {
    char session[ROUTER_SESSION_MAX + 1]; //  sticky session, "" when none
    uint64_t key_id;                      //  client api key
    uint64_t started_ms;                  //  for the sweep
} s_flight_t;

typedef struct {
    proto_service_t *service;       //  the process skeleton
    zsock_t *frontend;              //  ROUTER on router.bind
    zsock_t *outcomes;              //  SUB to every dispatch.events endpoint
    zsock_t *health;                //  SUB to every health.events endpoint
    proto_watch_t *watch;           //  keeps catalog fresh
    proto_catalog_t *catalog;       //  current configuration
    router_map_t *map;              //  pairs resolved from catalog
    router_breaker_t *breaker;      //  circuit breakers
    router_sticky_t *sticky;        //  session bindings, key preferences
    router_stats_t *stats;          //  health per candidate
    router_limit_t *limit;          //  per-key rate and concurrency shares
    router_store_t *store;          //  durable disables, admin fan-out
    zhashx_t *flights;              //  request id -> s_flight_t (owned)
    router_rng_t rng;               //  spreads ties
    bool zero_config;               //  router.zero_config
    bool persist_disable;           //  router.persist_disable
    uint64_t flight_max_ms;         //  longest a request may take (dispatch.total_timeout_ms)
    int sweep_timer;                //  periodic expiry
    int drain_timer;                //  checks the drain, 0 = not draining
    uint64_t drain_started_ms;      //  when SIGTERM came
    uint64_t last_route_ms;         //  when the last ROUTE came
    proto_metric_t *decisions;      //  ROUTE answered with candidates
    proto_metric_t *no_route;       //  ROUTE answered without
    proto_metric_t *last_resort;    //  decisions that went to an open breaker
    proto_metric_t *sticky_hits;    //  decisions led by a binding
    proto_metric_t *outcome_count;  //  outcomes seen
    proto_metric_t *breaker_opened; //  breakers opened (or disabled)
} s_router_t;

static uint64_t s_now(void)
{
    return proto_loop_now_ms();
}

static uint64_t s_wall_ms(void)
{
    return proto_loop_wall_us() / 1000;
}

static void s_flight_free(void **item)
{
    free(*item);
    *item = NULL;
}

static void s_catalog_loaded(proto_catalog_t **catalog_p, void *arg)
{
    s_router_t *self = arg;
    //  The map borrows the catalog: it goes first.
    router_map_destroy(&self->map);
    proto_catalog_destroy(&self->catalog);
    self->catalog = *catalog_p;
    *catalog_p = NULL;
    self->map = router_map_build(self->catalog, self->zero_config);
    //  A key our breakers disabled that an operator re-enabled comes back.
    for (size_t i = 0; i < proto_catalog_provider_key_count(self->catalog); i++) {
        const proto_provider_key_t *key = proto_catalog_provider_key_at(self->catalog, i);
        if (router_breaker_sync_key(self->breaker, key->id, key->active))
            log_info(NULL, "breaker: provider key %llu re-enabled by an operator",
                     (unsigned long long)key->id);
    }
    log_debug(NULL, "catalog loaded: %zu models, %zu routes, %zu rules, %zu listed models",
              proto_catalog_model_count(self->catalog), proto_catalog_route_count(self->catalog),
              proto_catalog_rule_count(self->catalog),
              proto_catalog_provider_model_count(self->catalog));
}

static router_context_t s_context(s_router_t *self)
{
    return (router_context_t){.catalog = self->catalog,
                              .map = self->map,
                              .breaker = self->breaker,
                              .sticky = self->sticky,
                              .stats = self->stats,
                              .limit = self->limit,
                              .rng = &self->rng,
                              .stats_max_age_ms = S_STATS_MAX_AGE_MS};
}

//  Remembers a decision so its OUTCOME can teach bindings and preferences
//  even when dispatch does not echo session and key in the OUTCOME.
static void s_remember(s_router_t *self, const char *rid, const char *session, uint64_t key_id)
{
    if (!*rid || zhashx_size(self->flights) >= S_FLIGHTS_MAX || zhashx_lookup(self->flights, rid))
        return;
    s_flight_t *flight = calloc(1, sizeof *flight);
    assert(flight);
    if (session && strlen(session) <= ROUTER_SESSION_MAX)
        snprintf(flight->session, sizeof flight->session, "%s", session);
    flight->key_id = key_id;
    flight->started_ms = s_now();
    zhashx_insert(self->flights, rid, flight);
}

static void s_answer_route(s_router_t *self, proto_msg_t *request)
{
    const char *rid = proto_msg_request_id(request);
    uint64_t started_us = proto_loop_now_us();
    router_context_t context = s_context(self);
    router_request_t query = {.request_id = rid,
                              .model = proto_msg_model(request),
                              .key_id = proto_msg_key_id(request),
                              .session = proto_msg_session(request),
                              .capabilities = proto_msg_capabilities(request),
                              .now_ms = s_now()};
    router_decision_t *decision = malloc(sizeof *decision);
    assert(decision);
    router_select_decide(&context, &query, decision, NULL);
    proto_msg_t *reply = proto_msg_reply(request, PROTO_MSG_ROUTE_REPLY);
    proto_msg_set_status(reply, (uint64_t)decision->status);
    if (decision->status == 200) {
        proto_msg_set_candidates(reply, decision->candidates, decision->count);
        proto_metric_add(self->decisions, 1);
        if (decision->sticky)
            proto_metric_add(self->sticky_hits, 1);
        if (decision->last_resort) {
            proto_metric_add(self->last_resort, 1);
            log_info(rid, "model %s: every candidate is open; last resort provider=%llu key=%llu",
                     query.model, (unsigned long long)decision->candidates[0].provider_id,
                     (unsigned long long)decision->candidates[0].provider_key_id);
        }
        s_remember(self, rid, query.session, query.key_id);
    } else {
        proto_msg_set_error_code(reply, decision->error_code);
        proto_msg_set_error_message(reply, decision->error_message);
        if (decision->retry_after_ms)
            proto_msg_set_retry_after_ms(reply, decision->retry_after_ms);
        proto_metric_add(self->no_route, 1);
        log_info(rid, "no route for model %s: %d %s", query.model, decision->status,
                 decision->error_code);
    }
    proto_observe_decision(rid, proto_msg_trace(request), decision->status, decision->candidates,
                           decision->status == 200 ? decision->count : 0, started_us);
    free(decision);
    proto_msg_send(&reply, self->frontend);
}

//  Sends `type` with status and JSON meta (consumed) in answer to request.
static void s_reply_json(s_router_t *self, proto_msg_t *request, proto_msg_type_t type, int status,
                         json_t *meta)
{
    proto_msg_t *reply = proto_msg_reply(request, type);
    proto_msg_set_status(reply, (uint64_t)status);
    char *text = json_dumps(meta, JSON_COMPACT);
    json_decref(meta);
    if (text && strlen(text) < PROTO_MSG_STR_MAX)
        proto_msg_set_meta(reply, text);
    else {
        //  Lists longer than a message field is allowed to be are cut.
        proto_msg_set_status(reply, 413);
        proto_msg_set_error_code(reply, "too_large");
        proto_msg_set_error_message(reply, "The answer is too large; narrow the question.");
    }
    free(text);
    proto_msg_send(&reply, self->frontend);
}

static void s_answer_explain(s_router_t *self, proto_msg_t *request)
{
    router_context_t context = s_context(self);
    router_request_t query = {.model = proto_msg_model(request),
                              .key_id = proto_msg_key_id(request),
                              .session = proto_msg_session(request),
                              .capabilities = proto_msg_capabilities(request),
                              .now_ms = s_now(),
                              .dry_run = true};
    router_decision_t *decision = malloc(sizeof *decision);
    assert(decision);
    json_t *explain = json_object();
    router_select_decide(&context, &query, decision, explain);
    int status = decision->status;
    free(decision);
    s_reply_json(self, request, PROTO_MSG_EXPLAIN_REPLY, status, explain);
}

//  The JSON text of an admin command every router applies.
static char *s_command_text(const char *op, proto_msg_t *request)
{
    json_t *command = json_pack("{s:s}", "op", op);
    if (proto_msg_has(request, PROTO_FIELD_session))
        json_object_set_new(command, "session", json_string(proto_msg_session(request)));
    if (proto_msg_has(request, PROTO_FIELD_provider_key_id))
        json_object_set_new(command, "provider_key_id",
                            json_integer((json_int_t)proto_msg_provider_key_id(request)));
    if (proto_msg_has(request, PROTO_FIELD_provider_id))
        json_object_set_new(command, "provider_id",
                            json_integer((json_int_t)proto_msg_provider_id(request)));
    if (proto_msg_has(request, PROTO_FIELD_upstream_model))
        json_object_set_new(command, "upstream_model",
                            json_string(proto_msg_upstream_model(request)));
    char *text = json_dumps(command, JSON_COMPACT);
    json_decref(command);
    return text;
}

//  Applies an admin command (from a request or a peer's notification).
//  Returns how many entries it changed; -1 when the command is malformed.
static int s_apply(s_router_t *self, const char *text)
{
    json_t *command = json_loads(text, 0, NULL);
    const char *op = json_string_value(json_object_get(command, "op"));
    int changed = -1;
    if (op && strcmp(op, "unbind") == 0 && json_is_string(json_object_get(command, "session")))
        changed = router_sticky_drop(self->sticky,
                                     json_string_value(json_object_get(command, "session")));
    else if (op && strcmp(op, "reset") == 0) {
        json_t *key = json_object_get(command, "provider_key_id");
        json_t *provider = json_object_get(command, "provider_id");
        json_t *model = json_object_get(command, "upstream_model");
        changed = 0;
        if (json_is_integer(key))
            changed += router_breaker_enable_key(self->breaker, (uint64_t)json_integer_value(key));
        if (json_is_integer(provider) && json_is_string(model))
            changed += router_breaker_reset_model(
                self->breaker, (uint64_t)json_integer_value(provider), json_string_value(model));
    }
    json_decref(command);
    return changed;
}

//  Our write of a key disable is committed: a catalog loaded from now on
//  that shows the key active means an operator re-enabled it.
static void s_persisted(uint64_t provider_key_id, void *arg)
{
    s_router_t *self = arg;
    router_breaker_key_persisted(self->breaker, provider_key_id);
}

//  A peer router (or this one) asked every router to apply a command.
static void s_notified(const char *payload, void *arg)
{
    s_router_t *self = arg;
    if (s_apply(self, payload) < 0)
        log_warn(NULL, "ignored a malformed tollgate_routing notification");
}

static void s_answer_admin(s_router_t *self, proto_msg_t *request)
{
    proto_msg_type_t type = proto_msg_type(request);
    uint64_t now = s_now(), wall = s_wall_ms();
    if (type == PROTO_MSG_BREAKERS) {
        s_reply_json(self, request, PROTO_MSG_BREAKERS_REPLY, 200,
                     json_pack("{s:o}", "breakers", router_breaker_list(self->breaker, now, wall)));
        return;
    }
    if (type == PROTO_MSG_STICKY) {
        const char *session = proto_msg_session(request);
        s_reply_json(
            self, request, PROTO_MSG_STICKY_REPLY, 200,
            json_pack("{s:o}", "bindings", router_sticky_list(self->sticky, session, now, wall)));
        return;
    }
    //  BREAKER_RESET and STICKY_DELETE: apply here at once, then tell every
    //  router (this one too: applying twice is harmless).
    bool reset = type == PROTO_MSG_BREAKER_RESET;
    if (reset && !proto_msg_has(request, PROTO_FIELD_provider_key_id) &&
        !(proto_msg_has(request, PROTO_FIELD_provider_id) &&
          proto_msg_has(request, PROTO_FIELD_upstream_model))) {
        s_reply_json(
            self, request, PROTO_MSG_BREAKERS_REPLY, 400,
            json_pack("{s:s}", "error", "give provider_key_id, or provider_id and upstream_model"));
        return;
    }
    char *text = s_command_text(reset ? "reset" : "unbind", request);
    int changed = s_apply(self, text);
    router_store_broadcast(self->store, text);
    free(text);
    log_info(proto_msg_request_id(request), "admin %s: %d changed here, sent to every router",
             reset ? "breaker reset" : "sticky delete", changed);
    s_reply_json(self, request, reset ? PROTO_MSG_BREAKERS_REPLY : PROTO_MSG_STICKY_REPLY, 200,
                 json_pack(reset ? "{s:i, s:b}" : "{s:i, s:b}", reset ? "reset" : "deleted",
                           changed, "broadcast", router_store_ready(self->store)));
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
    switch (proto_msg_type(request)) {
    case PROTO_MSG_ROUTE:
        self->last_route_ms = s_now();
        s_answer_route(self, request);
        break;
    case PROTO_MSG_EXPLAIN:
        s_answer_explain(self, request);
        break;
    case PROTO_MSG_BREAKERS:
    case PROTO_MSG_BREAKER_RESET:
    case PROTO_MSG_STICKY:
    case PROTO_MSG_STICKY_DELETE:
        s_answer_admin(self, request);
        break;
    default:
        log_warn(proto_msg_request_id(request), "ignored %s",
                 proto_msg_type_name(proto_msg_type(request)));
    }
    proto_msg_destroy(&request);
}

//  True for outcomes that say something about the upstream (not the client).
static bool s_upstream_failure(int status)
{
    return status == 401 || status == 403 || status == 404 || status == 408 || status == 429 ||
           status >= 500 || status < 200;
}

static void s_outcome(s_router_t *self, proto_msg_t *outcome)
{
    const char *rid = proto_msg_request_id(outcome);
    uint64_t provider_id = proto_msg_provider_id(outcome);
    uint64_t key_id = proto_msg_provider_key_id(outcome);
    const char *model = proto_msg_upstream_model(outcome);
    int status = (int)proto_msg_status(outcome);
    const char *code =
        proto_msg_has(outcome, PROTO_FIELD_error_code) ? proto_msg_error_code(outcome) : NULL;
    uint64_t now = s_now();
    router_breaker_event_t event =
        router_breaker_record(self->breaker, provider_id, key_id, model, status, code,
                              proto_msg_retry_after_ms(outcome), now);
    if (event == ROUTER_BREAKER_KEY_DISABLED) {
        proto_metric_add(self->breaker_opened, 1);
        log_warn(rid, "breaker: provider key %llu disabled after upstream %d",
                 (unsigned long long)key_id, status);
        if (self->persist_disable) {
            char reason[128];
            snprintf(reason, sizeof reason, "upstream answered %d (router %s)", status,
                     proto_service_instance(self->service));
            router_store_disable_key(self->store, key_id, reason, s_wall_ms());
        }
    } else if (event == ROUTER_BREAKER_OPENED) {
        proto_metric_add(self->breaker_opened, 1);
        router_breaker_verdict_t verdict =
            router_breaker_check(self->breaker, provider_id, key_id, model, now, false);
        log_info(rid, "breaker: %s open (%s) for provider=%llu key=%llu model=%s, %llu ms",
                 verdict.key_layer ? "key" : "model", verdict.reason,
                 (unsigned long long)provider_id, (unsigned long long)key_id, model,
                 (unsigned long long)(verdict.until_ms > now ? verdict.until_ms - now : 0));
    } else if (event == ROUTER_BREAKER_CLOSED_NOW)
        log_info(rid, "breaker: closed for provider=%llu key=%llu model=%s",
                 (unsigned long long)provider_id, (unsigned long long)key_id, model);

    router_limit_finish(self->limit, rid);

    //  Bindings and preferences: from the OUTCOME's own fields when dispatch
    //  sends them (every router learns), else from our own decision.
    s_flight_t *flight = *rid ? zhashx_lookup(self->flights, rid) : NULL;
    const char *session = proto_msg_has(outcome, PROTO_FIELD_session) ? proto_msg_session(outcome)
                          : flight                                    ? flight->session
                                                                      : "";
    uint64_t client_key = proto_msg_has(outcome, PROTO_FIELD_key_id) ? proto_msg_key_id(outcome)
                          : flight                                   ? flight->key_id
                                                                     : 0;
    if (status >= 200 && status < 300) {
        if (*session)
            router_sticky_bind(self->sticky, session, provider_id, key_id, model, now);
        if (client_key)
            router_sticky_prefer(self->sticky, client_key, provider_id, model, now);
        if (flight)
            zhashx_delete(self->flights, rid);
    } else if (s_upstream_failure(status) && *session)
        router_sticky_drop_failed(self->sticky, session, provider_id, key_id, model);
}

static void s_outcome_message(proto_msg_t **msg_p, void *arg)
{
    s_router_t *self = arg;
    if (proto_msg_type(*msg_p) == PROTO_MSG_OUTCOME) {
        proto_metric_add(self->outcome_count, 1);
        s_outcome(self, *msg_p);
    }
}

static void s_outcome_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    if (proto_batch_recv(socket, s_outcome_message, arg) == -2)
        log_warn(NULL, "dropped a malformed outcome");
}

static void s_health_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    s_router_t *self = arg;
    proto_msg_t *report = NULL;
    int rc = proto_msg_recv(&report, socket);
    if (rc == -2)
        log_warn(NULL, "dropped a malformed health report");
    if (rc == 0 && proto_msg_type(report) == PROTO_MSG_HEALTH) {
        router_stat_t stat = {.state = (int)proto_msg_state(report),
                              .success_ppm = (uint32_t)proto_msg_success_ppm(report),
                              .latency_us = proto_msg_latency_us(report),
                              .ttfb_us = proto_msg_ttfb_us(report),
                              .updated_ms = s_now()};
        if (stat.success_ppm > 1000000)
            stat.success_ppm = 1000000;
        router_stats_update(self->stats, proto_msg_provider_id(report),
                            proto_msg_provider_key_id(report), proto_msg_upstream_model(report),
                            &stat);
    }
    proto_msg_destroy(&report);
}

static void s_sweep(proto_loop_t *loop, int id, void *arg)
{
    s_router_t *self = arg;
    uint64_t now = s_now();
    router_sticky_sweep(self->sticky, now);
    router_limit_sweep(self->limit, now, self->flight_max_ms);
    zlistx_t *old = zlistx_new();
    zlistx_set_duplicator(old, (zlistx_duplicator_fn *)strdup);
    zlistx_set_destructor(old, (zlistx_destructor_fn *)zstr_free);
    for (s_flight_t *flight = zhashx_first(self->flights); flight;
         flight = zhashx_next(self->flights))
        if (flight->started_ms + self->flight_max_ms <= now)
            zlistx_add_end(old, (void *)zhashx_cursor(self->flights));
    for (const char *rid = zlistx_first(old); rid; rid = zlistx_next(old))
        zhashx_delete(self->flights, rid);
    zlistx_destroy(&old);
}

static void s_stop(void **state_p)
{
    s_router_t *self = *state_p;
    if (!self)
        return;
    proto_loop_t *loop = proto_service_loop(self->service);
    if (self->sweep_timer)
        proto_loop_cancel_timer(loop, self->sweep_timer);
    if (self->drain_timer)
        proto_loop_cancel_timer(loop, self->drain_timer);
    zsock_t *sockets[] = {self->frontend, self->outcomes, self->health};
    for (size_t i = 0; i < 3; i++)
        if (sockets[i])
            proto_loop_remove_socket(loop, sockets[i]);
    zsock_destroy(&self->frontend);
    zsock_destroy(&self->outcomes);
    zsock_destroy(&self->health);
    router_store_destroy(&self->store);
    proto_watch_destroy(&self->watch);
    router_map_destroy(&self->map);
    proto_catalog_destroy(&self->catalog);
    router_breaker_destroy(&self->breaker);
    router_sticky_destroy(&self->sticky);
    router_stats_destroy(&self->stats);
    router_limit_destroy(&self->limit);
    zhashx_destroy(&self->flights);
    free(self);
    *state_p = NULL;
}

static router_breaker_config_t s_breaker_config(proto_config_t *config)
{
    router_breaker_config_t breaker = {
        .threshold = (uint32_t)proto_config_int(config, "router.breaker_threshold"),
        .cooldown_network_ms = (uint64_t)proto_config_int(config, "router.cooldown_network_ms"),
        .cooldown_429_ms = (uint64_t)proto_config_int(config, "router.cooldown_429_ms"),
        .cooldown_5xx_ms = (uint64_t)proto_config_int(config, "router.cooldown_5xx_ms"),
        .cooldown_5xx_max_ms = (uint64_t)proto_config_int(config, "router.cooldown_5xx_max_ms"),
        .cooldown_404_ms = (uint64_t)proto_config_int(config, "router.cooldown_404_ms"),
        .trial_timeout_ms = (uint64_t)proto_config_int(config, "router.trial_timeout_ms"),
    };
    return breaker;
}

//  Connects a SUB socket to every endpoint of a component.
static zsock_t *s_subscriber(proto_config_t *config, const char *component)
{
    zsock_t *socket = zsock_new(ZMQ_SUB);
    zsock_set_subscribe(socket, "");
    const char *endpoints[64];
    int count = proto_config_endpoints(config, component, endpoints, 64);
    for (int i = 0; i < count; i++)
        zsock_connect(socket, "%s", endpoints[i]);
    return socket;
}

//  Breaker states for /metrics, read when scraped.
static void s_collect(proto_metrics_t *metrics, void *arg)
{
    s_router_t *self = arg;
    json_t *list = router_breaker_list(self->breaker, s_now(), s_wall_ms());
    proto_observe_breakers(metrics, list, self->catalog);
    json_decref(list);
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
    self->last_resort =
        proto_metrics_counter(metrics, "tollgate_router_last_resort_total",
                              "Decisions sent to an open breaker as last resort.", NULL);
    self->sticky_hits = proto_metrics_counter(metrics, "tollgate_router_sticky_total",
                                              "Decisions led by a session binding.", NULL);
    self->outcome_count = proto_metrics_counter(metrics, "tollgate_router_outcomes_total",
                                                "Attempt outcomes heard from dispatch.", NULL);
    self->breaker_opened = proto_metrics_counter(metrics, "tollgate_router_breaker_opened_total",
                                                 "Breakers opened or keys disabled.", NULL);
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    router_rng_seed(&self->rng, seed);
    self->zero_config = proto_config_bool(config, "router.zero_config");
    self->persist_disable = proto_config_bool(config, "router.persist_disable");
    self->flight_max_ms = (uint64_t)proto_config_int(config, "dispatch.total_timeout_ms") + 60000;
    router_breaker_config_t breaker = s_breaker_config(config);
    self->breaker = router_breaker_new(&breaker);
    proto_service_on_collect(service, s_collect, self);
    self->sticky = router_sticky_new((uint64_t)proto_config_int(config, "router.sticky_ttl_ms"),
                                     (uint64_t)proto_config_int(config, "router.preference_ttl_ms"),
                                     (size_t)proto_config_int(config, "router.sticky_max"));
    self->stats = router_stats_new();
    int instances = (int)proto_config_int(config, "router.instances");
    if (instances == 0) {
        const char *endpoints[64];
        instances = proto_config_endpoints(config, "router", endpoints, 64);
    }
    self->limit = router_limit_new(instances > 0 ? (uint32_t)instances : 1);
    self->flights = zhashx_new();
    zhashx_set_destructor(self->flights, s_flight_free);

    char error[1024];
    self->watch = proto_watch_new(loop, config, false, s_catalog_loaded, self, error, sizeof error);
    if (!self->watch) {
        log_error(NULL, "%s", error);
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    self->store = router_store_new(loop, proto_config_str(config, "database_url"), s_notified,
                                   s_persisted, self);
    const char *bind = proto_config_str(config, "router.bind");
    self->frontend = zsock_new(ZMQ_ROUTER);
    if (zsock_bind(self->frontend, "%s", bind) < 0) {
        log_error(NULL, "cannot bind %s: %s", bind, zmq_strerror(zmq_errno()));
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    self->outcomes = s_subscriber(config, "dispatch.events");
    self->health = s_subscriber(config, "health.events");
    proto_loop_add_socket(loop, self->frontend, s_frontend_ready, self);
    proto_loop_add_socket(loop, self->outcomes, s_outcome_ready, self);
    proto_loop_add_socket(loop, self->health, s_health_ready, self);
    self->sweep_timer = proto_loop_add_timer(loop, S_SWEEP_MS, true, s_sweep, self);
    log_info(NULL, "router ready on %s: %d instance(s) share key limits, zero-config %s", bind,
             instances, self->zero_config ? "on" : "off");
    return self;
}

static void s_drain_tick(proto_loop_t *loop, int id, void *arg)
{
    s_router_t *self = arg;
    uint64_t now = s_now();
    if (now - self->last_route_ms >= S_DRAIN_QUIET_MS ||
        now - self->drain_started_ms >= S_DRAIN_READ_MS)
        proto_service_drained(self->service);
}

//  The router holds no request state that matters: every ROUTE is answered
//  at once, and breakers and bindings are soft state the other routers
//  hold too. Draining only keeps answering while ROUTEs still come.
static void s_drain(void *state)
{
    s_router_t *self = state;
    self->drain_started_ms = s_now();
    if (!self->drain_timer)
        self->drain_timer = proto_loop_add_timer(proto_service_loop(self->service), S_DRAIN_TICK_MS,
                                                 true, s_drain_tick, self);
}

static char *s_status(void *state)
{
    s_router_t *self = state;
    json_t *breakers = router_breaker_list(self->breaker, s_now(), s_wall_ms());
    char *text = NULL;
    if (asprintf(&text,
                 "{\"models\":%zu,\"routes\":%zu,\"rules\":%zu,\"breakers\":%zu,"
                 "\"bindings\":%zu,\"store\":%s,\"store_pending\":%zu}",
                 proto_catalog_model_count(self->catalog), proto_catalog_route_count(self->catalog),
                 proto_catalog_rule_count(self->catalog), json_array_size(breakers),
                 router_sticky_count(self->sticky),
                 router_store_ready(self->store) ? "true" : "false",
                 router_store_pending(self->store)) < 0)
        text = NULL;
    json_decref(breakers);
    return text;
}

const proto_service_def_t router_server_def = {
    .name = "router",
    .start = s_start,
    .drain = s_drain,
    .stop = s_stop,
    .status = s_status,
};
