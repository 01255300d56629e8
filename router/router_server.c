#include "router_server.h"
#include "proto_check.h"
#include "proto_batch.h"
#include "proto_log.h"
#include "proto_socket.h"
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
#define S_STATS_MAX_AGE_MS 600000 //  health older than this is not used
#define S_TABLE_TICK_MS 20        //  a changed table goes out within this
#define S_DISPATCH_TTL_MS 5000    //  a dispatch silent this long gets no share
#define S_DISPATCH_MAX 1024       //  dispatch instances remembered

//  A dispatch instance, as its DEMAND reports show it.
typedef struct {
    json_t *demand;    //  {"KEY_ID": decisions in the last period}
    uint64_t heard_ms; //  when the last report came
} s_dispatcher_t;

typedef struct {
    proto_service_t *service;       //  the process skeleton
    zsock_t *frontend;              //  ROUTER on router.bind: admin questions
    zsock_t *table;                 //  XPUB on router.table.bind: routing tables
    zsock_t *outcomes;              //  SUB to every dispatch.events endpoint
    zsock_t *health;                //  SUB to every health.events endpoint
    proto_watch_t *watch;           //  keeps catalog fresh
    proto_catalog_t *catalog;       //  current configuration
    proto_map_t *map;               //  pairs resolved from catalog
    router_breaker_t *breaker;      //  circuit breakers
    router_sticky_t *sticky;        //  session bindings, key preferences
    router_stats_t *stats;          //  health per candidate
    router_store_t *store;          //  durable disables, admin fan-out
    zhashx_t *dispatchers;          //  instance -> s_dispatcher_t (owned)
    uint64_t table_version;         //  of the last table sent
    uint64_t resets;                //  operator breaker resets applied here
    bool table_dirty;               //  something changed since it went
    uint64_t table_sent_ms;         //  when it went
    uint64_t table_interval_ms;     //  router.table_interval_ms: a table at least this often
    int table_timer;                //  sends changed (and periodic) tables
    router_rng_t rng;               //  spreads ties
    bool zero_config;               //  router.zero_config
    bool persist_disable;           //  router.persist_disable
    int sweep_timer;                //  periodic expiry
    proto_metric_t *tables;         //  routing tables published
    proto_metric_t *outcome_count;  //  outcomes seen
    proto_metric_t *breaker_opened; //  breakers opened (or disabled)
    router_decision_t *decision;    //  scratch of each explain (~10 KiB; one thread)
} s_router_t;

static uint64_t s_now(void)
{
    return proto_loop_now_ms();
}

static uint64_t s_wall_ms(void)
{
    return proto_loop_wall_us() / 1000;
}

static void s_dispatcher_free(void **item)
{
    s_dispatcher_t *dispatcher = *item;
    if (dispatcher)
        json_decref(dispatcher->demand);
    free(dispatcher);
    *item = NULL;
}

static void s_catalog_loaded(proto_catalog_t **catalog_p, void *arg)
{
    s_router_t *self = arg;
    //  The map borrows the catalog: it goes first.
    proto_map_destroy(&self->map);
    proto_catalog_destroy(&self->catalog);
    self->catalog = *catalog_p;
    *catalog_p = NULL;
    self->map = proto_map_build(self->catalog, self->zero_config);
    //  A key our breakers disabled that an operator re-enabled comes back.
    for (size_t i = 0; i < proto_catalog_provider_key_count(self->catalog); i++) {
        const proto_provider_key_t *key = proto_catalog_provider_key_at(self->catalog, i);
        if (router_breaker_sync_key(self->breaker, key->id, key->active))
            log_info(NULL, "breaker: provider key %llu re-enabled by an operator",
                     (unsigned long long)key->id);
    }
    self->table_dirty = true;
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
                              .limit = NULL, //  explain: shares are each dispatch's own
                              .rng = &self->rng,
                              .stats_max_age_ms = S_STATS_MAX_AGE_MS};
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
                              .account_id = proto_msg_account_id(request),
                              .session = proto_msg_session(request),
                              .capabilities = proto_msg_capabilities(request),
                              .now_ms = s_now(),
                              .dry_run = true};
    json_t *explain = json_object();
    router_select_decide(&context, &query, self->decision, explain);
    int status = self->decision->status;
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
        changed = 0; //  sessions are placed by hashing (router_select): nothing is stored
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
        self->resets++; //  every dispatch closes its own copy at once
        self->table_dirty = true;
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
        //  Sessions are placed by rendezvous hashing in every dispatch
        //  (router_select): no binding is stored anywhere to list. Where a
        //  session goes shows in EXPLAIN with the session (first candidate).
        s_reply_json(self, request, PROTO_MSG_STICKY_REPLY, 200,
                     json_pack("{s:[], s:s}", "bindings", "placement", "rendezvous"));
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

    if (event != ROUTER_BREAKER_NONE)
        self->table_dirty = true;
    //  Per-key model preferences show in explanations; dispatch learns its own.
    uint64_t client_key =
        proto_msg_has(outcome, PROTO_FIELD_key_id) ? proto_msg_key_id(outcome) : 0;
    if (status >= 200 && status < 300 && client_key)
        router_sticky_prefer(self->sticky, client_key, provider_id, model, now);
}

//  A dispatch's demand per limited key: the basis of its share.
static void s_demand(s_router_t *self, proto_msg_t *report)
{
    const char *instance = proto_msg_instance(report);
    zframe_t *body = proto_msg_body(report);
    json_t *demand =
        body ? json_loadb((const char *)zframe_data(body), zframe_size(body), 0, NULL) : NULL;
    if (!json_is_object(demand)) {
        json_decref(demand);
        log_debug(NULL, "DEMAND from %s without a JSON object dropped", instance);
        return;
    }
    s_dispatcher_t *dispatcher = zhashx_lookup(self->dispatchers, instance);
    if (!dispatcher) {
        if (zhashx_size(self->dispatchers) >= S_DISPATCH_MAX) {
            json_decref(demand);
            return;
        }
        dispatcher = calloc(1, sizeof *dispatcher);
        assert(dispatcher);
        zhashx_insert(self->dispatchers, instance, dispatcher);
        self->table_dirty = true; //  a new instance changes everyone's share
    }
    json_decref(dispatcher->demand);
    dispatcher->demand = demand;
    dispatcher->heard_ms = s_now();
}

static void s_outcome_message(proto_msg_t **msg_p, void *arg)
{
    s_router_t *self = arg;
    if (proto_msg_type(*msg_p) == PROTO_MSG_OUTCOME) {
        proto_metric_add(self->outcome_count, 1);
        s_outcome(self, *msg_p);
    } else if (proto_msg_type(*msg_p) == PROTO_MSG_DEMAND)
        s_demand(self, *msg_p);
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
        self->table_dirty = true;
    } else if (rc == 0 && proto_msg_type(report) == PROTO_MSG_OUTCOME) {
        //  A completion probe (docs/routing.md section 6): a failure counts
        //  as a request's does; a success only closes a breaker that is
        //  half-open (its cooldown is over), never one still cooling down.
        int status = (int)proto_msg_status(report);
        router_breaker_verdict_t verdict = router_breaker_check(
            self->breaker, proto_msg_provider_id(report), proto_msg_provider_key_id(report),
            proto_msg_upstream_model(report), s_now(), false);
        if (!(status >= 200 && status < 300 && verdict.state == ROUTER_BREAKER_OPEN) &&
            !(status >= 200 && status < 300 && verdict.state == ROUTER_BREAKER_DISABLED))
            s_outcome(self, report);
    }
    proto_msg_destroy(&report);
}

static void s_sweep(proto_loop_t *loop, int id, void *arg)
{
    s_router_t *self = arg;
    uint64_t now = s_now();
    router_sticky_sweep(self->sticky, now);
    zlistx_t *silent = zlistx_new();
    for (s_dispatcher_t *dispatcher = zhashx_first(self->dispatchers); dispatcher;
         dispatcher = zhashx_next(self->dispatchers))
        if (dispatcher->heard_ms + S_DISPATCH_TTL_MS < now)
            zlistx_add_end(silent, (void *)zhashx_cursor(self->dispatchers));
    for (const char *name = zlistx_first(silent); name; name = zlistx_next(silent))
        zhashx_delete(self->dispatchers, name);
    if (zlistx_size(silent))
        self->table_dirty = true;
    zlistx_destroy(&silent);
}

//  --------------------------------------------------------------------------
//  The routing table every dispatch decides from

//  Each live dispatch's share of every limited provider key, in proportion
//  to what it asked for (plus one, so an idle instance can start): the
//  shares add up to the key's limit, so the limit holds cluster-wide.
static json_t *s_shares(s_router_t *self)
{
    json_t *shares = json_object();
    uint64_t now = s_now();
    size_t live = 0;
    for (s_dispatcher_t *d = zhashx_first(self->dispatchers); d; d = zhashx_next(self->dispatchers))
        live += d->heard_ms + S_DISPATCH_TTL_MS >= now;
    if (!live || !self->catalog)
        return shares;
    for (size_t k = 0; k < proto_catalog_provider_key_count(self->catalog); k++) {
        const proto_provider_key_t *key = proto_catalog_provider_key_at(self->catalog, k);
        if (key->max_rps <= 0 && key->max_concurrent <= 0)
            continue;
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)key->id);
        double total = 0;
        for (s_dispatcher_t *d = zhashx_first(self->dispatchers); d;
             d = zhashx_next(self->dispatchers))
            if (d->heard_ms + S_DISPATCH_TTL_MS >= now)
                total += (double)json_integer_value(json_object_get(d->demand, id)) + 1.0;
        for (s_dispatcher_t *d = zhashx_first(self->dispatchers); d;
             d = zhashx_next(self->dispatchers)) {
            if (d->heard_ms + S_DISPATCH_TTL_MS < now)
                continue;
            double part =
                ((double)json_integer_value(json_object_get(d->demand, id)) + 1.0) / total;
            const char *instance = zhashx_cursor(self->dispatchers);
            json_t *mine = json_object_get(shares, instance);
            if (!mine) {
                mine = json_object();
                json_object_set_new(shares, instance, mine);
            }
            json_object_set_new(
                mine, id,
                json_pack("[f, f]", key->max_rps > 0 ? part * (double)key->max_rps : -1.0,
                          key->max_concurrent > 0 ? part * (double)key->max_concurrent : -1.0));
        }
    }
    return shares;
}

static void s_publish(s_router_t *self)
{
    uint64_t now = s_now();
    json_t *table = json_pack(
        "{s:s, s:I, s:I, s:I, s:o, s:o, s:o}", "router", proto_service_instance(self->service),
        "version", (json_int_t)(self->table_version + 1), "wall_ms", (json_int_t)s_wall_ms(),
        "resets", (json_int_t)self->resets, "breakers",
        router_breaker_list(self->breaker, now, s_wall_ms()), "stats",
        router_stats_list(self->stats, now, S_STATS_MAX_AGE_MS), "shares", s_shares(self));
    char *text = json_dumps(table, JSON_COMPACT);
    json_decref(table);
    if (!text)
        return;
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_ROUTING_TABLE);
    proto_msg_set_version(msg, ++self->table_version);
    proto_msg_set_instance(msg, proto_service_instance(self->service));
    proto_msg_set_body_bytes(msg, text, strlen(text));
    free(text);
    proto_msg_send(&msg, self->table);
    proto_metric_add(self->tables, 1);
    self->table_dirty = false;
    self->table_sent_ms = now;
}

static void s_table_tick(proto_loop_t *loop, int id, void *arg)
{
    s_router_t *self = arg;
    if (self->table_dirty || s_now() - self->table_sent_ms >= self->table_interval_ms)
        s_publish(self);
}

//  A subscription arriving on the XPUB is a dispatch (re)connecting: it gets
//  the whole table at once instead of waiting for the next change.
static void s_table_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    s_router_t *self = arg;
    zframe_t *frame = zframe_recv(socket);
    bool subscribe = frame && zframe_size(frame) >= 1 && zframe_data(frame)[0] == 1;
    zframe_destroy(&frame);
    if (subscribe)
        s_publish(self);
}

static void s_stop(void **state_p)
{
    s_router_t *self = *state_p;
    if (!self)
        return;
    proto_loop_t *loop = proto_service_loop(self->service);
    if (self->sweep_timer)
        proto_loop_cancel_timer(loop, self->sweep_timer);
    if (self->table_timer)
        proto_loop_cancel_timer(loop, self->table_timer);
    zsock_t *sockets[] = {self->frontend, self->outcomes, self->health, self->table};
    for (size_t i = 0; i < 4; i++)
        if (sockets[i])
            proto_loop_remove_socket(loop, sockets[i]);
    zsock_destroy(&self->frontend);
    zsock_destroy(&self->table);
    zsock_destroy(&self->outcomes);
    zsock_destroy(&self->health);
    router_store_destroy(&self->store);
    proto_watch_destroy(&self->watch);
    proto_map_destroy(&self->map);
    proto_catalog_destroy(&self->catalog);
    router_breaker_destroy(&self->breaker);
    router_sticky_destroy(&self->sticky);
    router_stats_destroy(&self->stats);
    zhashx_destroy(&self->dispatchers);
    free(self->decision);
    free(self);
    *state_p = NULL;
}

router_breaker_config_t router_server_breaker_config(proto_config_t *config)
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
    zsock_t *socket = proto_socket_new(ZMQ_SUB);
    zsock_set_subscribe(socket, "");
    proto_socket_connect_all(socket, config, component);
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
    self->decision = malloc(sizeof *self->decision);
    assert(self->decision);
    self->service = service;
    proto_config_t *config = proto_service_config(service);
    proto_loop_t *loop = proto_service_loop(service);
    proto_metrics_t *metrics = proto_service_metrics(service);
    self->tables = proto_metrics_counter(metrics, "tollgate_router_tables_total",
                                         "Routing tables published to dispatch.", NULL);
    self->outcome_count = proto_metrics_counter(metrics, "tollgate_router_outcomes_total",
                                                "Attempt outcomes heard from dispatch.", NULL);
    self->breaker_opened = proto_metrics_counter(metrics, "tollgate_router_breaker_opened_total",
                                                 "Breakers opened or keys disabled.", NULL);
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    router_rng_seed(&self->rng, seed);
    self->zero_config = proto_config_bool(config, "router.zero_config");
    self->persist_disable = proto_config_bool(config, "router.persist_disable");
    self->table_interval_ms = (uint64_t)proto_config_int(config, "router.table_interval_ms");
    router_breaker_config_t breaker = router_server_breaker_config(config);
    self->breaker = router_breaker_new(&breaker);
    proto_service_on_collect(service, s_collect, self);
    //  Only per-key model preferences (sessions are hashed, not bound).
    self->sticky = router_sticky_new(
        1000, (uint64_t)proto_config_int(config, "router.preference_ttl_ms"), 100000);
    self->stats = router_stats_new();
    self->dispatchers = zhashx_new();
    zhashx_set_destructor(self->dispatchers, s_dispatcher_free);

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
    self->frontend = proto_socket_new(ZMQ_ROUTER);
    if (!self->frontend || proto_socket_bind(self->frontend, bind) < 0) {
        log_error(NULL, "cannot bind %s: %s", bind, zmq_strerror(zmq_errno()));
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    const char *table_bind = proto_config_str(config, "router.table.bind");
    self->table = proto_socket_new(ZMQ_XPUB);
    if (self->table) {
        zsock_set_xpub_verbose(self->table, 1); //  every (re)subscription, not only the first
        zsock_set_sndhwm(self->table, 1000);
    }
    if (!self->table || proto_socket_bind(self->table, table_bind) < 0) {
        log_error(NULL, "cannot bind router.table.bind %s: %s", table_bind,
                  zmq_strerror(zmq_errno()));
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    self->outcomes = s_subscriber(config, "dispatch.events");
    self->health = s_subscriber(config, "health.events");
    proto_loop_add_socket(loop, self->table, s_table_ready, self);
    self->table_timer = proto_loop_add_timer(loop, S_TABLE_TICK_MS, true, s_table_tick, self);
    proto_loop_add_socket_edge(loop, self->frontend, s_frontend_ready, self);
    proto_loop_add_socket_edge(loop, self->outcomes, s_outcome_ready, self);
    proto_loop_add_socket_edge(loop, self->health, s_health_ready, self);
    self->sweep_timer = proto_loop_add_timer(loop, S_SWEEP_MS, true, s_sweep, self);
    log_info(NULL, "router ready on %s, routing tables on %s, zero-config %s", bind, table_bind,
             self->zero_config ? "on" : "off");
    return self;
}

//  The router holds no request state: dispatch decides from the last table
//  it has, and breakers and stats are soft state the other routers hold
//  too. A draining router sends a last table and goes.
static void s_drain(void *state)
{
    s_router_t *self = state;
    s_publish(self);
    proto_service_drained(self->service);
}

static char *s_status(void *state)
{
    s_router_t *self = state;
    json_t *breakers = router_breaker_list(self->breaker, s_now(), s_wall_ms());
    char *text = NULL;
    if (asprintf(&text,
                 "{\"models\":%zu,\"routes\":%zu,\"rules\":%zu,\"breakers\":%zu,"
                 "\"table_version\":%llu,\"dispatchers\":%zu,\"store\":%s,"
                 "\"store_pending\":%zu}",
                 proto_catalog_model_count(self->catalog), proto_catalog_route_count(self->catalog),
                 proto_catalog_rule_count(self->catalog), json_array_size(breakers),
                 (unsigned long long)self->table_version, zhashx_size(self->dispatchers),
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

//  --------------------------------------------------------------------------
//  Self test: the server in this process with an injected catalog, driven
//  through a DEALER (the admin API's questions), a PUB (dispatch's
//  outcomes) and a SUB (the routing tables), as Malamute tests its server.
//  No PostgreSQL: router_store stays unready, so a reset is applied here
//  and reported as not broadcast.

#include "proto_peer.h"

#define S_TEST_WAIT_MS 5000

static const char s_test_catalog[] =
    "{\"accounts\":[{\"id\":1,\"name\":\"a\"}],\"keys\":[{\"id\":10,\"account_id\":1,"
    "\"hash\":\"h10\"}],"
    "\"providers\":[{\"id\":1,\"name\":\"first\",\"protocol\":\"openai\",\"priority\":10},"
    "{\"id\":2,\"name\":\"second\",\"protocol\":\"openai\"}],"
    "\"provider_keys\":[{\"id\":11,\"provider_id\":1},{\"id\":21,\"provider_id\":2}],"
    "\"models\":[{\"id\":5,\"name\":\"m\"}],"
    "\"routes\":[{\"id\":1,\"model_id\":5,\"provider_id\":1,\"upstream_model\":\"up1\","
    "\"priority\":10},{\"id\":2,\"model_id\":5,\"provider_id\":2,\"upstream_model\":\"up2\"}]}";

static proto_msg_t *s_test_ask(proto_peer_t *admin, proto_msg_t *question, int answer_type)
{
    char rid[PROTO_MSG_RID_MAX + 1];
    snprintf(rid, sizeof rid, "%s", proto_msg_request_id(question));
    PROTO_CHECK(proto_peer_send(admin, &question) == 0);
    proto_msg_t *reply = proto_peer_wait(admin, answer_type, rid, S_TEST_WAIT_MS);
    PROTO_CHECK(reply);
    return reply;
}

static proto_msg_t *s_test_explain(proto_peer_t *admin, const char *rid, const char *model)
{
    proto_msg_t *explain = proto_msg_new(PROTO_MSG_EXPLAIN);
    proto_msg_set_request_id(explain, rid);
    proto_msg_set_model(explain, model);
    proto_msg_set_key_id(explain, 10);
    proto_msg_set_account_id(explain, 1);
    return s_test_ask(admin, explain, PROTO_MSG_EXPLAIN_REPLY);
}

//  The breakers the router lists, as JSON text (caller frees).
static char *s_test_breakers(proto_peer_t *admin, const char *rid)
{
    proto_msg_t *question = proto_msg_new(PROTO_MSG_BREAKERS);
    proto_msg_set_request_id(question, rid);
    proto_msg_t *reply = s_test_ask(admin, question, PROTO_MSG_BREAKERS_REPLY);
    PROTO_CHECK(proto_msg_status(reply) == 200);
    char *text = strdup(proto_msg_meta(reply));
    proto_msg_destroy(&reply);
    return text;
}

//  The next routing table's body, as JSON (caller decrefs).
static json_t *s_test_table(proto_peer_t *tables)
{
    proto_msg_t *table = proto_peer_wait(tables, PROTO_MSG_ROUTING_TABLE, NULL, S_TEST_WAIT_MS);
    PROTO_CHECK(table && proto_msg_body(table));
    json_t *body = json_loadb((const char *)zframe_data(proto_msg_body(table)),
                              zframe_size(proto_msg_body(table)), 0, NULL);
    PROTO_CHECK(json_is_object(body));
    proto_msg_destroy(&table);
    return body;
}

void router_server_test(bool verbose)
{
    if (verbose)
        printf(" * router_server: ");
    char error[512];
    const char *settings[] = {"router.bind",
                              "inproc://router-test",
                              "router.table.bind",
                              "inproc://router-test-table",
                              "dispatch.events.endpoints",
                              "inproc://router-test-events",
                              "router.breaker_threshold",
                              "3",
                              "router.table_interval_ms",
                              "50",
                              NULL};
    proto_service_t *service =
        proto_peer_service_new("router", s_test_catalog, settings, error, sizeof error);
    PROTO_CHECK(service);
    proto_loop_t *loop = proto_service_loop(service);
    //  Dispatch's outcome publisher is up before the router connects to it.
    proto_peer_t *outcomes = proto_peer_new(loop, ZMQ_PUB, "inproc://router-test-events", true);
    PROTO_CHECK(outcomes);
    void *router = router_server_def.start(service);
    PROTO_CHECK(router);
    proto_peer_t *admin = proto_peer_new(loop, ZMQ_DEALER, "inproc://router-test", false);
    proto_peer_t *tables = proto_peer_new(loop, ZMQ_SUB, "inproc://router-test-table", false);
    PROTO_CHECK(admin && tables);

    //  A subscriber gets the whole table at once: nothing open yet.
    json_t *table = s_test_table(tables);
    PROTO_CHECK(json_is_integer(json_object_get(table, "version")));
    PROTO_CHECK(json_array_size(json_object_get(table, "breakers")) == 0);
    json_decref(table);

    //  EXPLAIN from the injected catalog: both routes, the first provider
    //  (priority 10) ahead; an unknown model is 404.
    proto_msg_t *reply = s_test_explain(admin, "e-1", "m");
    PROTO_CHECK(proto_msg_status(reply) == 200);
    const char *meta = proto_msg_meta(reply);
    PROTO_CHECK(strstr(meta, "up1") && strstr(meta, "up2"));
    PROTO_CHECK(strstr(meta, "up1") < strstr(meta, "up2"));
    proto_msg_destroy(&reply);
    reply = s_test_explain(admin, "e-2", "nosuch");
    PROTO_CHECK(proto_msg_status(reply) == 404);
    proto_msg_destroy(&reply);

    //  Three 503s from dispatch open the model's breaker: it is listed and
    //  goes out in the next table. A PUB's first messages can be lost while
    //  the subscription travels, so the outcomes are sent until it shows.
    char *breakers = NULL;
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 3; i++) {
            proto_msg_t *outcome = proto_msg_new(PROTO_MSG_OUTCOME);
            proto_msg_set_request_id(outcome, "o-1");
            proto_msg_set_provider_id(outcome, 1);
            proto_msg_set_provider_key_id(outcome, 11);
            proto_msg_set_upstream_model(outcome, "up1");
            proto_msg_set_status(outcome, 503);
            PROTO_CHECK(proto_peer_send(outcomes, &outcome) == 0);
        }
        free(breakers);
        breakers = s_test_breakers(admin, "b-1");
        if (strstr(breakers, "up1"))
            break;
        proto_peer_idle(admin, PROTO_MSG_BREAKERS_REPLY, 10);
    }
    PROTO_CHECK(strstr(breakers, "up1") && !strstr(breakers, "up2"));
    free(breakers);
    bool published = false;
    for (int i = 0; i < 20 && !published; i++) {
        table = s_test_table(tables);
        char *text = json_dumps(table, JSON_COMPACT);
        published = strstr(text, "up1") != NULL;
        free(text);
        json_decref(table);
    }
    PROTO_CHECK(published);
    //  A decision now puts the healthy route first.
    reply = s_test_explain(admin, "e-3", "m");
    PROTO_CHECK(proto_msg_status(reply) == 200);
    meta = proto_msg_meta(reply);
    PROTO_CHECK(strstr(meta, "up2"));
    proto_msg_destroy(&reply);

    //  BREAKER_RESET needs a key or a provider and model; with them the
    //  breaker closes here (no database: not broadcast).
    proto_msg_t *reset = proto_msg_new(PROTO_MSG_BREAKER_RESET);
    proto_msg_set_request_id(reset, "r-1");
    reply = s_test_ask(admin, reset, PROTO_MSG_BREAKERS_REPLY);
    PROTO_CHECK(proto_msg_status(reply) == 400);
    proto_msg_destroy(&reply);
    reset = proto_msg_new(PROTO_MSG_BREAKER_RESET);
    proto_msg_set_request_id(reset, "r-2");
    proto_msg_set_provider_id(reset, 1);
    proto_msg_set_upstream_model(reset, "up1");
    reply = s_test_ask(admin, reset, PROTO_MSG_BREAKERS_REPLY);
    PROTO_CHECK(proto_msg_status(reply) == 200);
    PROTO_CHECK(strstr(proto_msg_meta(reply), "\"reset\":1") &&
                strstr(proto_msg_meta(reply), "\"broadcast\":false"));
    proto_msg_destroy(&reply);
    breakers = s_test_breakers(admin, "b-2");
    PROTO_CHECK(!strstr(breakers, "up1"));
    free(breakers);

    //  Garbage on the admin socket is dropped; the next question answered.
    zstr_send(proto_peer_socket(admin), "garbage");
    reply = s_test_explain(admin, "e-4", "m");
    PROTO_CHECK(proto_msg_status(reply) == 200);
    proto_msg_destroy(&reply);

    proto_peer_destroy(&tables);
    proto_peer_destroy(&admin);
    router_server_def.stop(&router);
    PROTO_CHECK(!router);
    proto_peer_destroy(&outcomes);
    proto_peer_service_destroy(&service);
    if (verbose)
        printf("OK\n");
}
