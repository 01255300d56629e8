#include "health_server.h"
#include "proto_check.h"
#include "health_complete.h"
#include "health_probe.h"
#include "health_state.h"
#include "proto_db.h"
#include "proto_batch.h"
#include "proto_log.h"
#include "proto_socket.h"
#include "proto_msg.h"
#include "proto_watch.h"
#include "proto_map.h"
#include "proto_reach.h"

#include <assert.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#define S_REPUBLISH_MS 5000 //  all entries again, for late subscribers
#define S_SNAPSHOT_MS 10000 //  provider_health rows
#define S_RECONNECT_MS 2000 //  database connection retry
#define S_THROTTLE_MS 250   //  one HEALTH per entry at most this often, unless its level moves

typedef struct {
    proto_service_t *service;       //  the process skeleton
    proto_config_t *config;         //  configuration
    zsock_t *outcomes;              //  SUB to every dispatch.events endpoint
    zsock_t *publisher;             //  PUB on health.events.bind
    health_state_t *state;          //  folded outcomes and probes
    proto_watch_t *watch;           //  keeps catalog fresh (secrets opened)
    proto_catalog_t *catalog;       //  current configuration
    health_probe_t *probe;          //  active probes
    health_complete_t *complete;    //  completion probes' daily budget
    zhashx_t *on_demand;            //  "KEY:MODEL" of completion probes an operator asked for
    zhashx_t *costs;                //  "KEY:MODEL" -> int64_t: what a queued probe was charged
    zhashx_t *turns;                //  provider id -> uint64_t: its proxies' next turn
    uint64_t probe_seq;             //  numbers completion probes' request ids
    PGconn *db;                     //  writes and LISTEN tollgate_health; NULL while down
    int db_fd;                      //  its socket in the loop, -1 when none
    zhashx_t *seen;                 //  key ids probed at least once (marker values)
    zhashx_t *published;            //  entry -> s_published_t: last HEALTH sent
    char *mappings;                 //  model_mappings text last written (instance 0)
    int64_t index;                  //  health.instance_index
    int64_t count;                  //  health.instance_count
    int republish_timer;            //  periodic republish
    int probe_timer;                //  periodic probes
    int complete_timer;             //  periodic completion probes, 0 = off
    int snapshot_timer;             //  periodic provider_health rows
    int reconnect_timer;            //  database retry, 0 when none
    proto_metric_t *heard;          //  outcomes received
    proto_metric_t *probes;         //  probes finished
    proto_metric_t *probe_failures; //  of them, failed
} s_health_t;

//  The first proxy a probe of provider tries: its proxies in turn (round
//  robin over this instance's probes), as dispatch takes them over its calls.
static size_t s_proxy_first(s_health_t *self, const proto_provider_t *provider)
{
    if (!provider->proxies.count)
        return 0;
    char name[24];
    snprintf(name, sizeof name, "%llu", (unsigned long long)provider->id);
    uint64_t *turn = zhashx_lookup(self->turns, name);
    if (!turn) {
        turn = calloc(1, sizeof *turn);
        assert(turn);
        zhashx_insert(self->turns, name, turn);
    }
    return (size_t)((*turn)++ % provider->proxies.count);
}

static void s_free_item(void **item)
{
    free(*item);
    *item = NULL;
}

//  When an entry's HEALTH last went out, and with which level.
typedef struct {
    uint64_t at_ms; //  monotonic time sent
    int level;      //  health_level_t sent
} s_published_t;

static void s_publish(s_health_t *self, const health_entry_t *entry);

//  Outcomes arrive once per request; routers need health changes, not
//  every sample. An entry is published when its level moves, else at most
//  every S_THROTTLE_MS (the periodic republish covers the rest), which
//  keeps one message per request off every router.
static void s_publish_throttled(s_health_t *self, const health_entry_t *entry)
{
    char name[192];
    snprintf(name, sizeof name, "%llu:%llu:%s", (unsigned long long)entry->provider_id,
             (unsigned long long)entry->provider_key_id, entry->upstream_model);
    uint64_t now = proto_loop_now_ms();
    s_published_t *last = zhashx_lookup(self->published, name);
    if (last && last->level == (int)entry->level && now - last->at_ms < S_THROTTLE_MS)
        return;
    if (!last) {
        last = calloc(1, sizeof *last);
        assert(last);
        zhashx_insert(self->published, name, last);
    }
    last->at_ms = now;
    last->level = (int)entry->level;
    s_publish(self, entry);
}

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

static void s_outcome(proto_msg_t **msg_p, void *arg)
{
    s_health_t *self = arg;
    proto_msg_t *outcome = *msg_p;
    if (proto_msg_type(outcome) == PROTO_MSG_OUTCOME) {
        int status = (int)proto_msg_status(outcome);
        //  A cancelled attempt or a client error says nothing about health.
        bool counts =
            status != 499 && !(status >= 400 && status < 500 && status != 401 && status != 403 &&
                               status != 404 && status != 408 && status != 429);
        if (counts) {
            const health_entry_t *entry = health_state_record(
                self->state, proto_msg_provider_id(outcome), proto_msg_provider_key_id(outcome),
                proto_msg_upstream_model(outcome), status >= 200 && status < 300,
                proto_msg_latency_us(outcome), proto_msg_ttfb_us(outcome), status,
                proto_msg_has(outcome, PROTO_FIELD_error_code) ? proto_msg_error_code(outcome)
                                                               : NULL);
            s_publish_throttled(self, entry);
        }
        proto_metric_add(self->heard, 1);
    }
}

static void s_outcome_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    if (proto_batch_recv(socket, s_outcome, arg) == -2)
        log_warn(NULL, "dropped a malformed outcome");
}

static void s_republish(proto_loop_t *loop, int id, void *arg)
{
    s_health_t *self = arg;
    for (size_t i = 0; i < health_state_count(self->state); i++)
        s_publish(self, health_state_at(self->state, i));
}

//  --------------------------------------------------------------------------
//  Database: provider_models, provider_model_fetches, model_mappings,
//  provider_health. Written with blocking calls: tollgate-health is not on
//  any client's path, and each write is one short statement or transaction.

static void s_db_readable(proto_loop_t *loop, int fd, uint32_t events, void *arg);

static void s_db_close(s_health_t *self)
{
    if (self->db_fd >= 0)
        proto_loop_remove_fd(proto_service_loop(self->service), self->db_fd);
    self->db_fd = -1;
    if (self->db)
        PQfinish(self->db);
    self->db = NULL;
}

static void s_db_reconnect_due(proto_loop_t *loop, int id, void *arg);

static void s_db_lost(s_health_t *self)
{
    s_db_close(self);
    if (!self->reconnect_timer)
        self->reconnect_timer = proto_loop_add_timer(
            proto_service_loop(self->service), S_RECONNECT_MS, false, s_db_reconnect_due, self);
}

static int s_db_open(s_health_t *self)
{
    char error[512];
    self->db =
        proto_db_connect_once(proto_config_str(self->config, "database_url"), error, sizeof error);
    if (!self->db || proto_db_exec(self->db, "LISTEN tollgate_health", error, sizeof error) != 0) {
        log_warn(NULL, "health database: %s", error);
        s_db_close(self);
        return -1;
    }
    self->db_fd = PQsocket(self->db);
    proto_loop_add_fd(proto_service_loop(self->service), self->db_fd, EPOLLIN, s_db_readable, self);
    return 0;
}

static void s_db_reconnect_due(proto_loop_t *loop, int id, void *arg)
{
    s_health_t *self = arg;
    self->reconnect_timer = 0;
    if (s_db_open(self) != 0)
        s_db_lost(self);
}

//  Runs one parameterised statement. Returns 0 or -1 (logged).
static int s_db_run(s_health_t *self, const char *sql, int count, const char *const *values)
{
    if (!self->db)
        return -1;
    PGresult *result = PQexecParams(self->db, sql, count, NULL, values, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(result);
    int rc = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK ? 0 : -1;
    if (rc != 0) {
        char error[256];
        proto_db_error(self->db, error, sizeof error);
        log_warn(NULL, "health database: %s", error);
    }
    PQclear(result);
    if (rc != 0 && PQstatus(self->db) != CONNECTION_OK)
        s_db_lost(self);
    return rc;
}

//  The provider's list as the catalog has it, as a sorted JSON array text.
static char *s_known_list(s_health_t *self, uint64_t provider_id)
{
    json_t *array = json_array();
    for (size_t i = 0; self->catalog && i < proto_catalog_provider_model_count(self->catalog);
         i++) {
        const proto_provider_model_t *entry = proto_catalog_provider_model_at(self->catalog, i);
        if (entry->provider_id == provider_id)
            json_array_append_new(array, json_string(entry->name));
    }
    char *text = json_dumps(array, JSON_COMPACT);
    json_decref(array);
    return text;
}

static int s_compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

//  A fetched list as a sorted, de-duplicated JSON array text.
static char *s_fetched_list(zlistx_t *models)
{
    size_t count = zlistx_size(models);
    const char **names = calloc(count + 1, sizeof *names);
    assert(names);
    size_t i = 0;
    for (const char *name = zlistx_first(models); name; name = zlistx_next(models))
        names[i++] = name;
    qsort(names, count, sizeof *names, s_compare_names);
    json_t *array = json_array();
    for (i = 0; i < count; i++)
        if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
            json_array_append_new(array, json_string(names[i]));
    free(names);
    char *text = json_dumps(array, JSON_COMPACT);
    json_decref(array);
    return text;
}

//  Stores a provider's fetched list when it differs from what is stored.
//  The catalog's copy is byte-compared (both sorted), so an unchanged list
//  writes nothing and wakes nobody.
static void s_store_list(s_health_t *self, uint64_t provider_id, zlistx_t *models)
{
    char *fetched = s_fetched_list(models);
    char *known = s_known_list(self, provider_id);
    if (fetched && known && strcmp(fetched, known) != 0) {
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)provider_id);
        const char *values[2] = {id, fetched};
        //  One statement, so one transaction and one notification.
        if (s_db_run(self,
                     "WITH wanted AS (SELECT json_array_elements_text($2::json) AS model), "
                     "gone AS (DELETE FROM provider_models WHERE provider_id = $1::bigint "
                     "AND model NOT IN (SELECT model FROM wanted)) "
                     "INSERT INTO provider_models (provider_id, model) "
                     "SELECT $1::bigint, model FROM wanted ON CONFLICT DO NOTHING",
                     2, values) == 0)
            log_info(NULL, "provider %llu: model list changed (%zu models)",
                     (unsigned long long)provider_id, zlistx_size(models));
    }
    free(fetched);
    free(known);
}

static void s_store_fetch(s_health_t *self, const health_probe_result_t *result, bool ok,
                          const char *error)
{
    char provider[24], key[24], count[24];
    snprintf(provider, sizeof provider, "%llu", (unsigned long long)result->provider_id);
    snprintf(key, sizeof key, "%llu", (unsigned long long)result->provider_key_id);
    snprintf(count, sizeof count, "%zu", result->models ? zlistx_size(result->models) : 0);
    const char *values[5] = {provider, ok ? "t" : "f", count, key, error ? error : ""};
    s_db_run(self,
             "INSERT INTO provider_model_fetches AS f (provider_id, ok, model_count, "
             "provider_key_id, error) VALUES ($1::bigint, $2::boolean, $3::int, $4::bigint, $5) "
             "ON CONFLICT (provider_id) DO UPDATE SET fetched_at = now(), ok = excluded.ok, "
             "model_count = excluded.model_count, provider_key_id = excluded.provider_key_id, "
             "error = excluded.error",
             5, values);
}

//  Instance 0 keeps model_mappings equal to what the routers resolve.
static void s_store_mappings(s_health_t *self)
{
    if (self->index != 0 || !self->catalog || !self->db)
        return;
    proto_map_t *map =
        proto_map_build(self->catalog, proto_config_bool(self->config, "router.zero_config"));
    json_t *pairs = proto_map_json(map);
    proto_map_destroy(&map);
    char *text = json_dumps(pairs, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(pairs);
    if (!text || (self->mappings && strcmp(text, self->mappings) == 0)) {
        free(text);
        return;
    }
    const char *values[1] = {text};
    if (s_db_run(self,
                 "WITH wanted AS (SELECT * FROM json_to_recordset($1::json) AS x(model_id bigint, "
                 "provider_id bigint, upstream_model text, source text, rule_id bigint, "
                 "priority int, weight int, active boolean)), "
                 "gone AS (DELETE FROM model_mappings m WHERE NOT EXISTS (SELECT 1 FROM wanted w "
                 "WHERE w.model_id = m.model_id AND w.provider_id = m.provider_id AND "
                 "w.upstream_model = m.upstream_model)) "
                 "INSERT INTO model_mappings (model_id, provider_id, upstream_model, source, "
                 "rule_id, priority, weight, active) SELECT model_id, provider_id, "
                 "upstream_model, source, nullif(rule_id, 0), priority, weight, active FROM wanted "
                 "ON CONFLICT (model_id, provider_id, upstream_model) DO UPDATE SET "
                 "source = excluded.source, rule_id = excluded.rule_id, priority = "
                 "excluded.priority, weight = excluded.weight, active = excluded.active, "
                 "resolved_at = now()",
                 1, values) == 0) {
        free(self->mappings);
        self->mappings = text;
        return;
    }
    free(text);
}

static void s_snapshot(proto_loop_t *loop, int id, void *arg)
{
    s_health_t *self = arg;
    if (!self->db || health_state_count(self->state) == 0)
        return;
    json_t *rows = json_array();
    for (size_t i = 0; i < health_state_count(self->state); i++) {
        const health_entry_t *entry = health_state_at(self->state, i);
        json_array_append_new(
            rows, json_pack("{s:I, s:I, s:s, s:s, s:i, s:I, s:I, s:I, s:i, s:s}", "provider_id",
                            (json_int_t)entry->provider_id, "provider_key_id",
                            (json_int_t)entry->provider_key_id, "upstream_model",
                            entry->upstream_model, "state", health_level_name(entry->level),
                            "success_ppm", (int)entry->success_ppm, "latency_us",
                            (json_int_t)entry->latency_us, "ttfb_us", (json_int_t)entry->ttfb_us,
                            "attempts", (json_int_t)entry->attempts, "last_status",
                            entry->last_status, "last_error", entry->last_error));
    }
    char *text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    const char *values[1] = {text};
    s_db_run(self,
             "INSERT INTO provider_health AS h (provider_id, provider_key_id, upstream_model, "
             "state, success_ppm, latency_us, ttfb_us, attempts, last_status, last_error) "
             "SELECT * FROM json_to_recordset($1::json) AS x(provider_id bigint, provider_key_id "
             "bigint, upstream_model text, state text, success_ppm int, latency_us bigint, "
             "ttfb_us bigint, attempts bigint, last_status int, last_error text) "
             "ON CONFLICT (provider_id, provider_key_id, upstream_model) DO UPDATE SET "
             "state = excluded.state, success_ppm = excluded.success_ppm, latency_us = "
             "excluded.latency_us, ttfb_us = excluded.ttfb_us, attempts = excluded.attempts, "
             "last_status = excluded.last_status, last_error = excluded.last_error, "
             "updated_at = now()",
             1, values);
    free(text);
}

//  --------------------------------------------------------------------------
//  Probing

//  This instance probes a key when key id % count == index: every instance
//  computes the same split from its own configuration, so no key is probed
//  twice and none is missed while the instances agree on `count`.
static bool s_mine(s_health_t *self, uint64_t key_id)
{
    return (int64_t)(key_id % (uint64_t)self->count) == self->index;
}

static void s_probe_key(s_health_t *self, const proto_provider_key_t *key)
{
    const proto_provider_t *provider = proto_catalog_provider(self->catalog, key->provider_id);
    if (!provider || !provider->active || !key->active || !s_mine(self, key->id))
        return;
    health_probe_target_t target = {.provider_id = provider->id,
                                    .provider_key_id = key->id,
                                    .protocol = provider->protocol,
                                    .base_url = provider->base_url,
                                    .secret = key->secret,
                                    .proxies = (const char *const *)provider->proxies.names,
                                    .proxy_count = provider->proxies.count,
                                    .proxy_first = s_proxy_first(self, provider)};
    health_probe_queue(self->probe, &target);
}

//  Probes every key of ours (of one provider when provider_id is not 0).
static void s_probe_all(s_health_t *self, uint64_t provider_id)
{
    for (size_t i = 0; self->catalog && i < proto_catalog_provider_key_count(self->catalog); i++) {
        const proto_provider_key_t *key = proto_catalog_provider_key_at(self->catalog, i);
        if (!provider_id || key->provider_id == provider_id)
            s_probe_key(self, key);
    }
}

static void s_probe_due(proto_loop_t *loop, int id, void *arg)
{
    s_probe_all(arg, 0);
}

//  What a completion probe of (provider, model) is counted at: as the
//  dearest logical model that resolves to the pair (at least 1), for the
//  output the probe's protocol allows.
static int64_t s_probe_cost(proto_catalog_t *catalog, proto_map_t *map,
                            const proto_provider_t *provider, const char *model)
{
    uint64_t provider_id = provider->id;
    int protocol = proto_reach_protocol(catalog, provider, model);
    int64_t cost = 1;
    for (size_t i = 0; i < proto_catalog_model_count(catalog); i++) {
        const proto_model_t *logical = proto_catalog_model_at(catalog, i);
        size_t count = 0;
        const proto_map_pair_t *pairs = proto_map_pairs(map, logical->id, &count);
        for (size_t p = 0; p < count; p++)
            if (pairs[p].provider_id == provider_id &&
                strcmp(pairs[p].upstream_model, model) == 0 &&
                health_complete_cost(logical, protocol) > cost)
                cost = health_complete_cost(logical, protocol);
    }
    return cost;
}

//  Completion probes of (key, model) pairs: every pair a logical model
//  resolves to (of one provider, of one model when given: its upstream name
//  or the logical name), keys of ours only. A model no logical model maps to
//  is probed when asked for by name at one provider. Scheduled probes stop at
//  the day's budget; on-demand ones (forced) are counted only. A probe is
//  charged once it is queued (one already queued or running costs nothing
//  more). An account's own provider (bring your own key) is probed only on
//  demand: its calls are paid by the account, not by the operator's budget.
static void s_complete_all(s_health_t *self, uint64_t provider_id, const char *model, bool forced)
{
    if (!self->catalog || !self->probe)
        return;
    proto_map_t *map =
        proto_map_build(self->catalog, proto_config_bool(self->config, "router.zero_config"));
    zlistx_t *pairs = zlistx_new();
    zlistx_set_destructor(pairs, (zlistx_destructor_fn *)zstr_free);
    zhashx_t *seen = zhashx_new();
    static int marker = 1;
    for (size_t i = 0; i < proto_catalog_model_count(self->catalog); i++) {
        const proto_model_t *logical = proto_catalog_model_at(self->catalog, i);
        size_t count = 0;
        const proto_map_pair_t *resolved = proto_map_pairs(map, logical->id, &count);
        for (size_t p = 0; logical->active && p < count; p++) {
            if (!resolved[p].active || (provider_id && resolved[p].provider_id != provider_id) ||
                (model && strcmp(resolved[p].upstream_model, model) != 0 &&
                 strcmp(logical->name, model) != 0))
                continue;
            char *name = zsys_sprintf("%llu\t%s", (unsigned long long)resolved[p].provider_id,
                                      resolved[p].upstream_model);
            if (zhashx_lookup(seen, name)) {
                zstr_free(&name);
                continue;
            }
            zhashx_insert(seen, name, &marker);
            zlistx_add_end(pairs, name);
        }
    }
    if (!zlistx_size(pairs) && forced && provider_id && model && *model)
        zlistx_add_end(pairs, zsys_sprintf("%llu\t%s", (unsigned long long)provider_id, model));
    zhashx_destroy(&seen);
    int64_t day = (int64_t)(time(NULL) / 86400);
    size_t queued = 0, over = 0;
    for (char *name = zlistx_first(pairs); name; name = zlistx_next(pairs)) {
        char *tab = strchr(name, '\t');
        const char *upstream = tab + 1;
        const proto_provider_t *provider =
            proto_catalog_provider(self->catalog, strtoull(name, NULL, 10));
        if (!provider || !provider->active || proto_provider_blocks(provider, upstream) ||
            (provider->account_id && !forced))
            continue;
        int64_t cost = s_probe_cost(self->catalog, map, provider, upstream);
        for (size_t k = 0; k < proto_catalog_provider_key_count(self->catalog); k++) {
            const proto_provider_key_t *key = proto_catalog_provider_key_at(self->catalog, k);
            if (key->provider_id != provider->id || !key->active || !s_mine(self, key->id))
                continue;
            if (!health_complete_fits(self->complete, cost, day, forced)) {
                over++;
                continue;
            }
            health_probe_target_t target;
            char *body = NULL;
            if (health_complete_target(self->catalog, provider, key, upstream,
                                       s_proxy_first(self, provider), &target, &body) != 0)
                continue;
            char *url = (char *)target.url;
            if (health_probe_queue(self->probe, &target)) {
                queued++;
                health_complete_charge(self->complete, cost, day);
                char *entry = zsys_sprintf("%llu:%s", (unsigned long long)key->id, upstream);
                int64_t *charged = malloc(sizeof *charged);
                assert(charged);
                *charged = cost;
                zhashx_update(self->costs, entry, charged);
                if (forced)
                    zhashx_insert(self->on_demand, entry, &marker);
                zstr_free(&entry);
            }
            free(url);
            free(body);
        }
    }
    if (over)
        log_warn(NULL,
                 "completion probes: %zu not sent, today's health.probe_budget_micros (%lld) "
                 "is spent",
                 over, (long long)health_complete_spent(self->complete, day));
    log_debug(NULL, "completion probes: %zu queued", queued);
    zlistx_destroy(&pairs);
    proto_map_destroy(&map);
}

static void s_complete_due(proto_loop_t *loop, int id, void *arg)
{
    s_complete_all(arg, 0, NULL, false);
}

//  A completion probe's answer counts like a request's: into the pair's
//  health, and as an OUTCOME to every router (whose breakers take a
//  failure as they take a request's, and a success only to close a
//  half-open breaker), and into provider_probes for the operator.
static void s_complete_done(s_health_t *self, const health_probe_result_t *result)
{
    bool ok = result->status >= 200 && result->status < 300;
    const char *code = result->status                          ? NULL
                       : !result->error                        ? "connect_error"
                       : strcmp(result->error, "timeout") == 0 ? "timeout"
                                                               : "connect_error";
    int status = result->status ? result->status : code && strcmp(code, "timeout") == 0 ? 504 : 502;
    char error[96] = "";
    if (!ok)
        snprintf(error, sizeof error, "%s",
                 result->error    ? result->error
                 : result->status ? "upstream_status"
                                  : "failed");
    proto_metric_add(self->probes, 1);
    if (!ok) {
        proto_metric_add(self->probe_failures, 1);
        log_info(NULL, "completion probe provider=%llu key=%llu model=%s failed: status %d %s",
                 (unsigned long long)result->provider_id,
                 (unsigned long long)result->provider_key_id, result->upstream_model,
                 result->status, error);
    }
    const health_entry_t *entry = health_state_record(
        self->state, result->provider_id, result->provider_key_id, result->upstream_model, ok,
        result->latency_us, result->ttfb_us, result->status, ok ? NULL : error);
    s_publish(self, entry);
    char rid[40];
    snprintf(rid, sizeof rid, "probe-%llu-%llu", (unsigned long long)result->provider_key_id,
             (unsigned long long)++self->probe_seq);
    proto_msg_t *outcome = proto_msg_new(PROTO_MSG_OUTCOME);
    proto_msg_set_request_id(outcome, rid);
    proto_msg_set_provider_id(outcome, result->provider_id);
    proto_msg_set_provider_key_id(outcome, result->provider_key_id);
    proto_msg_set_upstream_model(outcome, result->upstream_model);
    proto_msg_set_status(outcome, (uint64_t)status);
    proto_msg_set_latency_us(outcome, result->latency_us);
    if (code)
        proto_msg_set_error_code(outcome, code);
    proto_msg_send(&outcome, self->publisher);
    char name[200];
    snprintf(name, sizeof name, "%llu:%s", (unsigned long long)result->provider_key_id,
             result->upstream_model);
    bool on_demand = zhashx_lookup(self->on_demand, name) != NULL;
    zhashx_delete(self->on_demand, name);
    const int64_t *charged = zhashx_lookup(self->costs, name);
    char ids[2][24], numbers[3][24];
    snprintf(numbers[2], sizeof numbers[2], "%lld", charged ? (long long)*charged : 0LL);
    zhashx_delete(self->costs, name);
    snprintf(ids[0], sizeof ids[0], "%llu", (unsigned long long)result->provider_id);
    snprintf(ids[1], sizeof ids[1], "%llu", (unsigned long long)result->provider_key_id);
    snprintf(numbers[0], sizeof numbers[0], "%d", result->status);
    snprintf(numbers[1], sizeof numbers[1], "%llu", (unsigned long long)result->latency_us);
    const char *values[9] = {ids[0], ids[1],     result->upstream_model, ok ? "t" : "f", numbers[0],
                             error,  numbers[1], on_demand ? "t" : "f",  numbers[2]};
    s_db_run(self,
             "INSERT INTO provider_probes (provider_id, provider_key_id, upstream_model, ok, "
             "status, error, latency_us, on_demand, cost_micros) VALUES ($1::bigint, $2::bigint, "
             "$3, $4::boolean, $5::int, $6, $7::bigint, $8::boolean, $9::bigint) "
             "ON CONFLICT (provider_key_id, upstream_model) DO UPDATE SET probed_at = now(), "
             "ok = excluded.ok, status = excluded.status, error = excluded.error, "
             "latency_us = excluded.latency_us, on_demand = excluded.on_demand, "
             "cost_micros = excluded.cost_micros",
             9, values);
}

static void s_probe_done(const health_probe_result_t *result, void *arg)
{
    s_health_t *self = arg;
    if (result->upstream_model) {
        s_complete_done(self, result);
        return;
    }
    bool ok = result->status >= 200 && result->status < 300 && result->models;
    char error[64] = "";
    if (!ok)
        snprintf(error, sizeof error, "%s",
                 result->error    ? result->error
                 : result->status ? "upstream_status"
                                  : "failed");
    proto_metric_add(self->probes, 1);
    if (!ok) {
        proto_metric_add(self->probe_failures, 1);
        log_info(NULL, "probe provider=%llu key=%llu failed: status %d %s",
                 (unsigned long long)result->provider_id,
                 (unsigned long long)result->provider_key_id, result->status, error);
    }
    //  The probe is the key's own health, under the empty model name.
    const health_entry_t *entry =
        health_state_record(self->state, result->provider_id, result->provider_key_id, "", ok,
                            result->latency_us, result->ttfb_us, result->status, ok ? NULL : error);
    s_publish(self, entry);
    s_store_fetch(self, result, ok, ok ? NULL : error);
    if (ok)
        s_store_list(self, result->provider_id, result->models);
}

//  Notifications on tollgate_health: "fetch" probes every key of ours now,
//  "fetch:ID" those of provider ID (an operator asked for fresh lists).
static void s_db_readable(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    s_health_t *self = arg;
    if (!PQconsumeInput(self->db)) {
        log_warn(NULL, "health database connection lost");
        s_db_lost(self);
        return;
    }
    PGnotify *notice;
    while ((notice = PQnotifies(self->db))) {
        const char *payload = notice->extra;
        if (strcmp(payload, "fetch") == 0 || strcmp(payload, "") == 0)
            s_probe_all(self, 0);
        else if (strncmp(payload, "fetch:", 6) == 0 && strtoull(payload + 6, NULL, 10) > 0)
            s_probe_all(self, strtoull(payload + 6, NULL, 10));
        else if (strncmp(payload, "probe:", 6) == 0 && strtoull(payload + 6, NULL, 10) > 0) {
            //  "probe:ID" or "probe:ID:MODEL": completion probes an operator asked for.
            const char *model = strchr(payload + 6, ':');
            s_complete_all(self, strtoull(payload + 6, NULL, 10), model ? model + 1 : NULL, true);
        } else
            log_warn(NULL, "ignored tollgate_health notification");
        PQfreemem(notice);
    }
}

static void s_catalog_loaded(proto_catalog_t **catalog_p, void *arg)
{
    s_health_t *self = arg;
    proto_catalog_destroy(&self->catalog);
    self->catalog = *catalog_p;
    *catalog_p = NULL;
    //  Keys never probed (new ones, or all at start) are probed at once.
    static int marker = 1;
    for (size_t i = 0; i < proto_catalog_provider_key_count(self->catalog); i++) {
        const proto_provider_key_t *key = proto_catalog_provider_key_at(self->catalog, i);
        char name[24];
        snprintf(name, sizeof name, "%llu", (unsigned long long)key->id);
        if (!zhashx_lookup(self->seen, name) && self->probe) {
            zhashx_insert(self->seen, name, &marker);
            s_probe_key(self, key);
        }
    }
    s_store_mappings(self);
}

static void s_stop(void **state_p)
{
    s_health_t *self = *state_p;
    if (!self)
        return;
    proto_loop_t *loop = proto_service_loop(self->service);
    int timers[] = {self->republish_timer, self->probe_timer, self->snapshot_timer,
                    self->reconnect_timer, self->complete_timer};
    for (size_t i = 0; i < 5; i++)
        if (timers[i])
            proto_loop_cancel_timer(loop, timers[i]);
    if (self->outcomes)
        proto_loop_remove_socket(loop, self->outcomes);
    zsock_destroy(&self->outcomes);
    zsock_destroy(&self->publisher);
    health_probe_destroy(&self->probe);
    proto_watch_destroy(&self->watch);
    proto_catalog_destroy(&self->catalog);
    s_db_close(self);
    health_state_destroy(&self->state);
    zhashx_destroy(&self->seen);
    zhashx_destroy(&self->on_demand);
    zhashx_destroy(&self->costs);
    zhashx_destroy(&self->turns);
    health_complete_destroy(&self->complete);
    zhashx_destroy(&self->published);
    free(self->mappings);
    free(self);
    *state_p = NULL;
}

static void *s_start(proto_service_t *service)
{
    s_health_t *self = calloc(1, sizeof *self);
    assert(self);
    self->service = service;
    self->db_fd = -1;
    self->state = health_state_new();
    self->seen = zhashx_new();
    self->on_demand = zhashx_new();
    self->costs = zhashx_new();
    zhashx_set_destructor(self->costs, s_free_item);
    self->turns = zhashx_new();
    zhashx_set_destructor(self->turns, s_free_item);
    self->published = zhashx_new();
    zhashx_set_destructor(self->published, s_free_item);
    proto_config_t *config = proto_service_config(service);
    self->config = config;
    proto_loop_t *loop = proto_service_loop(service);
    proto_metrics_t *metrics = proto_service_metrics(service);
    self->heard = proto_metrics_counter(metrics, "tollgate_health_outcomes_total",
                                        "Attempt outcomes folded into health.", NULL);
    self->probes = proto_metrics_counter(metrics, "tollgate_health_probes_total",
                                         "Active probes finished.", NULL);
    self->probe_failures = proto_metrics_counter(metrics, "tollgate_health_probe_failures_total",
                                                 "Active probes that failed.", NULL);
    self->complete = health_complete_new(proto_config_int(config, "health.probe_budget_micros"));
    self->index = proto_config_int(config, "health.instance_index");
    self->count = proto_config_int(config, "health.instance_count");
    if (self->index >= self->count) {
        log_error(NULL, "health.instance_index %lld must be below health.instance_count %lld",
                  (long long)self->index, (long long)self->count);
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    const char *bind = proto_config_str(config, "health.events.bind");
    self->publisher = proto_socket_new(ZMQ_PUB);
    if (!self->publisher || proto_socket_bind(self->publisher, bind) < 0) {
        log_error(NULL, "cannot bind %s: %s", bind, zmq_strerror(zmq_errno()));
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    self->probe = health_probe_new(
        loop, (uint64_t)proto_config_int(config, "health.probe_timeout_ms"),
        (size_t)proto_config_int(config, "health.probe_concurrency"), s_probe_done, self);
    if (s_db_open(self) != 0)
        s_db_lost(self); //  keep going: probes and HEALTH do not need it
    char error[1024];
    //  Probes need the keys' secrets: this catalog opens them.
    self->watch = proto_watch_new(loop, config, true, s_catalog_loaded, self, error, sizeof error);
    if (!self->watch || !self->probe) {
        log_error(NULL, "%s", self->probe ? error : "libcurl multi handle");
        void *state = self;
        s_stop(&state);
        return NULL;
    }
    self->outcomes = proto_socket_new(ZMQ_SUB);
    zsock_set_subscribe(self->outcomes, "");
    proto_socket_connect_all(self->outcomes, config, "dispatch.events");
    proto_loop_add_socket_edge(loop, self->outcomes, s_outcome_ready, self);
    self->republish_timer = proto_loop_add_timer(loop, S_REPUBLISH_MS, true, s_republish, self);
    self->snapshot_timer = proto_loop_add_timer(loop, S_SNAPSHOT_MS, true, s_snapshot, self);
    self->probe_timer =
        proto_loop_add_timer(loop, (uint64_t)proto_config_int(config, "health.probe_interval_ms"),
                             true, s_probe_due, self);
    uint64_t complete_ms =
        (uint64_t)proto_config_int(config, "health.completion_probe_interval_ms");
    if (complete_ms)
        self->complete_timer = proto_loop_add_timer(loop, complete_ms, true, s_complete_due, self);
    log_info(NULL, "health ready: probing keys with id %% %lld == %lld", (long long)self->count,
             (long long)self->index);
    return self;
}

//  Health state is soft (rebuilt from outcomes and probes), so there is
//  nothing to hand on when asked to stop; running probes are abandoned.
static void s_drain(void *state)
{
    s_health_t *self = state;
    proto_service_drained(self->service);
}

static char *s_status(void *state)
{
    s_health_t *self = state;
    char *text = NULL;
    if (asprintf(&text, "{\"entries\":%zu,\"probes_pending\":%zu,\"database\":%s}",
                 health_state_count(self->state), health_probe_pending(self->probe),
                 self->db ? "true" : "false") < 0)
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

//  --------------------------------------------------------------------------
//  Self test: the server in this process with an injected catalog, as
//  Malamute tests its server: a PUB plays dispatch's outcomes, a SUB hears
//  the HEALTH messages, a libmicrohttpd daemon on a thread of its own is the
//  provider the active probes ask for models (one key good, one refused).
//  No PostgreSQL: what health writes there is skipped while it is away.

#include "proto_peer.h"

#include <microhttpd.h>

#define S_TEST_WAIT_MS 8000 //  over S_REPUBLISH_MS: a late subscriber's wait

static enum MHD_Result s_test_provider(void *arg, struct MHD_Connection *connection,
                                       const char *url, const char *method, const char *version,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **request_p)
{
    const char *authorization =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
    bool good = authorization && strcmp(authorization, "Bearer sk-good") == 0;
    const char *text = good ? "{\"object\":\"list\",\"data\":[{\"id\":\"a\",\"object\":\"model\"},"
                              "{\"id\":\"b\",\"object\":\"model\"}]}"
                            : "{\"error\":{\"message\":\"bad key\"}}";
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(response, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(connection, good ? 200 : 401, response);
    MHD_destroy_response(response);
    return rc;
}

//  Waits for a HEALTH about (key, model) at `level` (-1: any); other HEALTH
//  messages are dropped. Returns true when it came.
static bool s_test_heard(proto_peer_t *events, uint64_t key_id, const char *model, int level,
                         uint64_t timeout_ms)
{
    uint64_t deadline = proto_loop_now_ms() + timeout_ms;
    while (proto_loop_now_ms() < deadline) {
        proto_msg_t *health =
            proto_peer_wait(events, PROTO_MSG_HEALTH, NULL, deadline - proto_loop_now_ms());
        if (!health)
            return false;
        bool match = proto_msg_provider_key_id(health) == key_id &&
                     strcmp(proto_msg_upstream_model(health), model) == 0 &&
                     (level < 0 || (int)proto_msg_state(health) == level);
        proto_msg_destroy(&health);
        if (match)
            return true;
    }
    return false;
}

static void s_test_outcomes(proto_peer_t *outcomes, const char *model, int status, int count)
{
    for (int i = 0; i < count; i++) {
        proto_msg_t *outcome = proto_msg_new(PROTO_MSG_OUTCOME);
        proto_msg_set_request_id(outcome, "h-1");
        proto_msg_set_provider_id(outcome, 1);
        proto_msg_set_provider_key_id(outcome, 11);
        proto_msg_set_upstream_model(outcome, model);
        proto_msg_set_status(outcome, (uint64_t)status);
        proto_msg_set_latency_us(outcome, 1000);
        PROTO_CHECK(proto_peer_send(outcomes, &outcome) == 0);
    }
}

void health_server_test(bool verbose)
{
    if (verbose)
        printf(" * health_server: ");
    struct MHD_Daemon *provider =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                         s_test_provider, NULL, MHD_OPTION_END);
    PROTO_CHECK(provider);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(provider, MHD_DAEMON_INFO_BIND_PORT);
    PROTO_CHECK(info && info->port);
    //  The provider is reachable only through its proxies (its own name does
    //  not resolve; the test provider answers as an HTTP proxy too), the
    //  first of them dead. Provider 2 belongs to an account.
    char catalog[2048];
    snprintf(catalog, sizeof catalog,
             "{\"providers\":[{\"id\":1,\"name\":\"p\",\"protocol\":\"openai\","
             "\"base_url\":\"http://provider.invalid\",\"proxies\":[\"http://127.0.0.1:1\","
             "\"http://127.0.0.1:%d\"]},{\"id\":2,\"name\":\"own\",\"protocol\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%d\",\"account_id\":5}],"
             "\"provider_keys\":[{\"id\":11,\"provider_id\":1,\"secret\":\"sk-good\"},"
             "{\"id\":12,\"provider_id\":1,\"secret\":\"sk-bad\"},"
             "{\"id\":21,\"provider_id\":2,\"secret\":\"sk-good\"}],"
             "\"models\":[{\"id\":1,\"name\":\"m\",\"price_in_micros\":10000000}],"
             "\"routes\":[{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"up\"},"
             "{\"id\":2,\"model_id\":1,\"provider_id\":2,\"upstream_model\":\"up\"}]}",
             (int)info->port, (int)info->port);
    char error[512];
    const char *settings[] = {"health.events.bind", "inproc://health-test-events",
                              "dispatch.events.endpoints", "inproc://health-test-outcomes", NULL};
    proto_service_t *service =
        proto_peer_service_new("health", catalog, settings, error, sizeof error);
    PROTO_CHECK(service);
    proto_loop_t *loop = proto_service_loop(service);
    proto_peer_t *outcomes = proto_peer_new(loop, ZMQ_PUB, "inproc://health-test-outcomes", true);
    PROTO_CHECK(outcomes);
    void *health = health_server_def.start(service);
    PROTO_CHECK(health);
    proto_peer_t *events = proto_peer_new(loop, ZMQ_SUB, "inproc://health-test-events", false);
    PROTO_CHECK(events);

    //  The probes at start: the good key is up (its own health, model ""),
    //  the refused one down. The first went through the dead proxy, then
    //  the next one; the second started at the next one (its turn).
    PROTO_CHECK(s_test_heard(events, 11, "", HEALTH_UP, S_TEST_WAIT_MS));
    PROTO_CHECK(s_test_heard(events, 12, "", HEALTH_DOWN, S_TEST_WAIT_MS));

    //  Outcomes from dispatch: successes make a model up, then a run of
    //  5xx takes it down. A PUB's first messages can be lost while the
    //  subscription travels: send until heard.
    bool up = false;
    for (int round = 0; round < 50 && !up; round++) {
        s_test_outcomes(outcomes, "a", 200, 1);
        up = s_test_heard(events, 11, "a", HEALTH_UP, 100);
    }
    PROTO_CHECK(up);
    s_test_outcomes(outcomes, "a", 503, 8);
    PROTO_CHECK(s_test_heard(events, 11, "a", HEALTH_DOWN, S_TEST_WAIT_MS));
    //  A client's own error (400) or a cancel (499) says nothing about the
    //  model: no entry appears for it, and garbage is dropped.
    s_test_outcomes(outcomes, "c", 400, 3);
    s_test_outcomes(outcomes, "c", 499, 3);
    zstr_send(proto_peer_socket(outcomes), "garbage");
    s_test_outcomes(outcomes, "d", 200, 1);
    PROTO_CHECK(s_test_heard(events, 11, "d", HEALTH_UP, S_TEST_WAIT_MS));
    PROTO_CHECK(!s_test_heard(events, 11, "c", -1, 200));

    //  Completion probes: scheduled ones charge the budget once queued, so
    //  a second round while the first is still queued charges nothing; the
    //  account's own provider is left out. On demand it is probed. Each is
    //  counted at 12 input tokens of 10 units a million: 120.
    s_health_t *self = health;
    int64_t day = (int64_t)(time(NULL) / 86400);
    int64_t spent = health_complete_spent(self->complete, day);
    size_t pending = health_probe_pending(self->probe);
    s_complete_all(self, 0, NULL, false);
    PROTO_CHECK(health_probe_pending(self->probe) == pending + 2); //  keys 11 and 12, not 21
    PROTO_CHECK(health_complete_spent(self->complete, day) == spent + 2 * 120);
    s_complete_all(self, 0, NULL, false);
    PROTO_CHECK(health_probe_pending(self->probe) == pending + 2);
    PROTO_CHECK(health_complete_spent(self->complete, day) == spent + 2 * 120);
    s_complete_all(self, 2, NULL, true);
    PROTO_CHECK(health_probe_pending(self->probe) == pending + 3);
    PROTO_CHECK(health_complete_spent(self->complete, day) == spent + 3 * 120);

    proto_peer_destroy(&events);
    health_server_def.stop(&health);
    PROTO_CHECK(!health);
    proto_peer_destroy(&outcomes);
    proto_peer_service_destroy(&service);
    MHD_stop_daemon(provider);
    if (verbose)
        printf("OK\n");
}
