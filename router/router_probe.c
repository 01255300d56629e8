/*  router_probe: drives two real tollgate-router instances and one
    tollgate-health against a real PostgreSQL and an in-process mock upstream.

    Plays dispatch (an XPUB the routers and health subscribe to, publishing
    OUTCOMEs) and the admin API / ingress (a DEALER to each router). Checks
    that the two routers agree on breaker state fed by the same outcomes,
    that a 401 disables a key durably and an operator's re-enable brings it
    back, the last resort, that health fetches the model list and the rules
    resolve against it, that bindings learned by one router show in the
    other, and that sticky deletes and breaker resets reach every router.
    Started by router_test.sh, which makes a throwaway PostgreSQL.

        router_probe DATABASE_URL BIN_DIR

    Every wait is on a message or a polled condition with a deadline that
    only fails the probe; nothing sleeps to synchronise.
*/
#include "mock_upstream.h"
#include "proto_check.h"
#include "proto_socket.h"
#include "proto_crypto.h"
#include "proto_loop.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_WAIT_MS 15000

static int s_failures = 0;

#define CHECK(condition, ...)                                                                      \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #condition);                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            s_failures++;                                                                          \
        }                                                                                          \
    } while (0)

typedef struct {
    PGconn *db;          //  to seed and inspect
    zsock_t *events;     //  XPUB playing dispatch.events
    zsock_t *router[2];  //  DEALER per router
    zsock_t *tables[2];  //  SUB to each router's routing tables
    zsock_t *health;     //  SUB to health.events
    pid_t children[3];   //  router a, router b, health
    int sequence;        //  request ids
    uint64_t p1, p2;     //  providers.id: p1 (priority 10), p2
    uint64_t k1, k2, k3; //  provider_keys.id: k1 and k2 of p1, k3 of p2
} s_probe_t;

static uint64_t s_insert(PGconn *db, const char *sql, int count, const char *const *values)
{
    PGresult *result = PQexecParams(db, sql, count, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(result) != PGRES_TUPLES_OK && PQresultStatus(result) != PGRES_COMMAND_OK) {
        fprintf(stderr, "SQL failed: %s\n%s\n", sql, PQerrorMessage(db));
        exit(1);
    }
    uint64_t id = PQntuples(result) ? strtoull(PQgetvalue(result, 0, 0), NULL, 10) : 0;
    PQclear(result);
    return id;
}

static char *s_scalar(PGconn *db, const char *sql)
{
    PGresult *result = PQexec(db, sql);
    char *value = strdup(PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result)
                             ? PQgetvalue(result, 0, 0)
                             : "");
    PQclear(result);
    return value;
}

static uint64_t s_key(PGconn *db, const char *secret_key, uint64_t provider_id, const char *name,
                      const char *secret)
{
    uint8_t nonce[64], sealed[256];
    size_t sealed_size = strlen(secret) + proto_crypto_overhead();
    PROTO_CHECK(sealed_size <= sizeof sealed);
    PROTO_CHECK(proto_crypto_seal(secret_key, secret, strlen(secret), nonce, sealed) == 0);
    char *nonce_text = NULL, *sealed_text = NULL;
    size_t length;
    unsigned char *escaped = PQescapeByteaConn(db, nonce, proto_crypto_nonce_size(), &length);
    nonce_text = strdup((char *)escaped);
    PQfreemem(escaped);
    escaped = PQescapeByteaConn(db, sealed, sealed_size, &length);
    sealed_text = strdup((char *)escaped);
    PQfreemem(escaped);
    char provider[24];
    snprintf(provider, sizeof provider, "%llu", (unsigned long long)provider_id);
    const char *values[5] = {provider, name, sealed_text, nonce_text, "x"};
    uint64_t id = s_insert(db,
                           "INSERT INTO provider_keys (provider_id, name, secret_sealed, "
                           "secret_nonce, secret_hint) VALUES ($1, $2, $3::bytea, $4::bytea, $5) "
                           "RETURNING id",
                           5, values);
    free(nonce_text);
    free(sealed_text);
    return id;
}

static pid_t s_spawn(const char *binary, char **sets, int set_count)
{
    char *args[64];
    int count = 0;
    args[count++] = (char *)binary;
    for (int i = 0; i < set_count; i++) {
        args[count++] = "--set";
        args[count++] = sets[i];
    }
    args[count] = NULL;
    pid_t child = fork();
    if (child == 0) {
        execv(binary, args);
        _exit(127);
    }
    return child;
}

//  Sends a request to router `which` and waits for its answer. Caller owns it.
static proto_msg_t *s_ask(s_probe_t *probe, int which, proto_msg_t *request)
{
    char rid[40];
    snprintf(rid, sizeof rid, "probe-%d", ++probe->sequence);
    if (!*proto_msg_request_id(request))
        proto_msg_set_request_id(request, rid);
    char wanted[PROTO_MSG_RID_MAX + 1];
    snprintf(wanted, sizeof wanted, "%s", proto_msg_request_id(request));
    proto_msg_send(&request, probe->router[which]);
    zpoller_t *poller = zpoller_new(probe->router[which], NULL);
    uint64_t until = proto_loop_now_ms() + S_WAIT_MS;
    proto_msg_t *reply = NULL;
    while (!reply && proto_loop_now_ms() < until) {
        if (!zpoller_wait(poller, 200))
            continue;
        if (proto_msg_recv(&reply, probe->router[which]) != 0)
            continue;
        if (strcmp(proto_msg_request_id(reply), wanted) != 0)
            proto_msg_destroy(&reply); //  a late answer to an earlier question
    }
    zpoller_destroy(&poller);
    return reply;
}

//  Asks for JSON (EXPLAIN, BREAKERS, STICKY): returns the parsed meta.
static json_t *s_ask_json(s_probe_t *probe, int which, proto_msg_t *request, int *status)
{
    proto_msg_t *reply = s_ask(probe, which, request);
    *status = reply ? (int)proto_msg_status(reply) : 0;
    json_t *meta = reply ? json_loads(proto_msg_meta(reply), 0, NULL) : NULL;
    proto_msg_destroy(&reply);
    return meta;
}

static json_t *s_breakers(s_probe_t *probe, int which)
{
    int status;
    json_t *meta = s_ask_json(probe, which, proto_msg_new(PROTO_MSG_BREAKERS), &status);
    return meta;
}

//  The breaker entry for a key (layer key) or a provider model, or NULL.
static json_t *s_find_breaker(json_t *meta, uint64_t key_id, uint64_t provider_id,
                              const char *model)
{
    json_t *list = json_object_get(meta, "breakers");
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        if (key_id &&
            (uint64_t)json_integer_value(json_object_get(item, "provider_key_id")) == key_id)
            return item;
        if (model &&
            (uint64_t)json_integer_value(json_object_get(item, "provider_id")) == provider_id &&
            json_is_string(json_object_get(item, "upstream_model")) &&
            strcmp(json_string_value(json_object_get(item, "upstream_model")), model) == 0)
            return item;
    }
    return NULL;
}

static void s_outcome(s_probe_t *probe, const char *rid, uint64_t provider_id, uint64_t key_id,
                      const char *model, int status, const char *code, const char *session)
{
    proto_msg_t *outcome = proto_msg_new(PROTO_MSG_OUTCOME);
    proto_msg_set_request_id(outcome, rid);
    proto_msg_set_provider_id(outcome, provider_id);
    proto_msg_set_provider_key_id(outcome, key_id);
    proto_msg_set_upstream_model(outcome, model);
    proto_msg_set_status(outcome, (uint64_t)status);
    proto_msg_set_latency_us(outcome, 1000);
    if (code)
        proto_msg_set_error_code(outcome, code);
    if (session) {
        proto_msg_set_session(outcome, session);
        proto_msg_set_key_id(outcome, 1);
    }
    proto_msg_send(&outcome, probe->events);
}

//  Asks until `condition` holds or the deadline passes. The state lives in
//  other processes, so this re-asks (each ask is a round trip, and the pause
//  between asks only spares the CPU); no fixed wait is ever assumed enough.
#define WAIT_UNTIL(condition)                                                                      \
    ({                                                                                             \
        uint64_t until_ = proto_loop_now_ms() + S_WAIT_MS;                                         \
        bool met_ = false;                                                                         \
        while (!(met_ = (condition)) && proto_loop_now_ms() < until_)                              \
            zclock_sleep(20);                                                                      \
        met_;                                                                                      \
    })

static bool s_breaker_open_in(s_probe_t *probe, int which, uint64_t key_id, uint64_t provider_id,
                              const char *model, const char *state)
{
    json_t *meta = s_breakers(probe, which);
    json_t *entry = s_find_breaker(meta, key_id, provider_id, model);
    bool open =
        entry && (!state || strcmp(json_string_value(json_object_get(entry, "state")), state) == 0);
    json_decref(meta);
    return open;
}

//  The candidates router `which` explains for a model: fills provider and
//  key ids in order, returns how many (-1 when it did not answer 200).
static int s_candidates(s_probe_t *probe, int which, const char *model, uint64_t *providers,
                        uint64_t *keys, int max)
{
    proto_msg_t *request = proto_msg_new(PROTO_MSG_EXPLAIN);
    proto_msg_set_model(request, model);
    int status;
    json_t *meta = s_ask_json(probe, which, request, &status);
    json_t *list = json_object_get(meta, "candidates");
    int count = status == 200 ? (int)json_array_size(list) : -1;
    for (int i = 0; i < count && i < max; i++) {
        json_t *item = json_array_get(list, (size_t)i);
        providers[i] = (uint64_t)json_integer_value(json_object_get(item, "provider_id"));
        keys[i] = (uint64_t)json_integer_value(json_object_get(item, "provider_key_id"));
    }
    json_decref(meta);
    return count;
}

//  The next routing table router `which` publishes (parsed body), or NULL.
static json_t *s_table(s_probe_t *probe, int which)
{
    zpoller_t *poller = zpoller_new(probe->tables[which], NULL);
    uint64_t until = proto_loop_now_ms() + S_WAIT_MS;
    json_t *table = NULL;
    while (!table && proto_loop_now_ms() < until) {
        if (!zpoller_wait(poller, 200))
            continue;
        proto_msg_t *msg = NULL;
        if (proto_msg_recv(&msg, probe->tables[which]) == 0 &&
            proto_msg_type(msg) == PROTO_MSG_ROUTING_TABLE && proto_msg_body(msg))
            table = json_loadb((const char *)zframe_data(proto_msg_body(msg)),
                               zframe_size(proto_msg_body(msg)), 0, NULL);
        proto_msg_destroy(&msg);
    }
    zpoller_destroy(&poller);
    return table;
}

//  A dispatch instance telling the routers how much it wanted a key.
static void s_demand(s_probe_t *probe, const char *instance, const char *body)
{
    proto_msg_t *demand = proto_msg_new(PROTO_MSG_DEMAND);
    proto_msg_set_instance(demand, instance);
    proto_msg_set_body_bytes(demand, body, strlen(body));
    proto_msg_send(&demand, probe->events);
}

//  Whether router `which`'s next table gives `instance` a share of
//  key_id's rps close to `wanted`.
static bool s_share_near(s_probe_t *probe, int which, const char *instance, uint64_t key_id,
                         double wanted)
{
    json_t *table = s_table(probe, which);
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)key_id);
    json_t *share =
        json_object_get(json_object_get(json_object_get(table, "shares"), instance), id);
    double rps = json_number_value(json_array_get(share, 0));
    json_decref(table);
    return share && rps > wanted - 0.05 && rps < wanted + 0.05;
}

static bool s_explain_routes(s_probe_t *probe, int which, const char *model, const char *upstream)
{
    proto_msg_t *request = proto_msg_new(PROTO_MSG_EXPLAIN);
    proto_msg_set_model(request, model);
    int status;
    json_t *meta = s_ask_json(probe, which, request, &status);
    json_t *first = json_array_get(json_object_get(meta, "candidates"), 0);
    bool ok = status == 200 && first &&
              strcmp(json_string_value(json_object_get(first, "upstream_model")), upstream) == 0;
    json_decref(meta);
    return ok;
}

static bool s_sql_equals(s_probe_t *probe, const char *sql, const char *wanted)
{
    char *value = s_scalar(probe->db, sql);
    bool equal = strcmp(value, wanted) == 0;
    free(value);
    return equal;
}

//  Scenario 1: Both routers explain m alike: p1 first (provider priority), p2 last.
static void s_explain_alike(s_probe_t *probe)
{
    uint64_t providers[8], keys[8];
    for (int i = 0; i < 2; i++) {
        int count = s_candidates(probe, i, "m", providers, keys, 8);
        CHECK(count == 3 && providers[0] == probe->p1 && providers[2] == probe->p2,
              "router %d: %d candidates", i, count);
    }
    printf("ok 1 - two routers explain the same order\n");
}

//  Scenario 2: Health fetches the list; the rule resolves against it in both
//  routers; provider_models and model_mappings hold it.
static void s_rules_resolved(s_probe_t *probe)
{
    CHECK(WAIT_UNTIL(s_explain_routes(probe, 0, "family", "gpt-4o-mini")),
          "router 0 never resolved the rule");
    CHECK(WAIT_UNTIL(s_explain_routes(probe, 1, "family", "gpt-4o-mini")),
          "router 1 never resolved the rule");
    CHECK(s_sql_equals(probe, "SELECT count(*) FROM provider_models", "6"),
          "provider_models has not both providers' lists");
    CHECK(WAIT_UNTIL(s_sql_equals(probe,
                                  "SELECT string_agg(upstream_model || '/' || source, ',' ORDER BY "
                                  "provider_id) FROM model_mappings mm JOIN models m ON m.id = "
                                  "mm.model_id WHERE m.name = 'family'",
                                  "gpt-4o-mini/rule,gpt-4o-mini/rule")),
          "model_mappings does not hold the resolved rule");
    {
        proto_msg_t *request = proto_msg_new(PROTO_MSG_EXPLAIN);
        proto_msg_set_model(request, "family");
        int status;
        json_t *meta = s_ask_json(probe, 0, request, &status);
        const char *mode = json_string_value(json_object_get(meta, "mode"));
        CHECK(mode && strcmp(mode, "cost") == 0, "mode %s", mode ? mode : "?");
        CHECK(json_array_size(json_object_get(meta, "excluded")) == 2,
              "haiku excluded by rule on both providers");
        json_decref(meta);
    }
    printf("ok 2 - health fetched the model lists; rules resolved in both routers\n");
}

//  Scenario 3: HEALTH from the probes reaches subscribers: key k1 is up.
static void s_health_heard(s_probe_t *probe)
{
    uint64_t until;
    zpoller_t *poller;
    bool heard = false;
    until = proto_loop_now_ms() + S_WAIT_MS;
    poller = zpoller_new(probe->health, NULL);
    while (!heard && proto_loop_now_ms() < until)
        if (zpoller_wait(poller, 200)) {
            proto_msg_t *msg = NULL;
            if (proto_msg_recv(&msg, probe->health) == 0 && proto_msg_type(msg) == PROTO_MSG_HEALTH)
                heard = proto_msg_provider_key_id(msg) == probe->k1 && proto_msg_state(msg) == 1 &&
                        strcmp(proto_msg_upstream_model(msg), "") == 0;
            proto_msg_destroy(&msg);
        }
    zpoller_destroy(&poller);
    CHECK(heard, "no HEALTH up for k1");
    printf("ok 3 - probes publish key health\n");
}

//  Scenario 4: Two 5xx (threshold 2) open (p1, gpt-4o) in both routers alike.
static void s_breaker_opens(s_probe_t *probe)
{
    uint64_t providers[8], keys[8];
    s_outcome(probe, "o-1", probe->p1, probe->k1, "gpt-4o", 500, "upstream_status", NULL);
    s_outcome(probe, "o-2", probe->p1, probe->k2, "gpt-4o", 503, "upstream_status", NULL);
    for (int i = 0; i < 2; i++)
        CHECK(WAIT_UNTIL(s_breaker_open_in(probe, i, 0, probe->p1, "gpt-4o", "open")),
              "router %d: model breaker not open", i);
    for (int i = 0; i < 2; i++) {
        int count = s_candidates(probe, i, "m", providers, keys, 8);
        CHECK(count == 1 && keys[0] == probe->k3, "router %d: %d candidates", i, count);
    }
    printf("ok 4 - two routers agree: 5xx opened the model breaker\n");
}

//  Scenario 5: 401 on k3 disables it in both, durably; with p1 open too, the
//  best open candidate goes alone as the last resort.
static void s_key_disabled(s_probe_t *probe)
{
    s_outcome(probe, "o-3", probe->p2, probe->k3, "gpt-4o", 401, "upstream_status", NULL);
    for (int i = 0; i < 2; i++)
        CHECK(WAIT_UNTIL(s_breaker_open_in(probe, i, probe->k3, 0, NULL, "disabled")),
              "router %d: key not disabled", i);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT status || ':' || (disabled_reason LIKE 'upstream answered 401%%') FROM "
             "provider_keys WHERE id = %llu",
             (unsigned long long)probe->k3);
    CHECK(WAIT_UNTIL(s_sql_equals(probe, sql, "disabled:true")), "disable not in the database");
    for (int i = 0; i < 2; i++) {
        proto_msg_t *request = proto_msg_new(PROTO_MSG_EXPLAIN);
        proto_msg_set_model(request, "m");
        int status;
        json_t *meta = s_ask_json(probe, i, request, &status);
        CHECK(status == 200 && json_is_true(json_object_get(meta, "last_resort")),
              "router %d: no last resort", i);
        json_t *first = json_array_get(json_object_get(meta, "candidates"), 0);
        CHECK(first &&
                  (uint64_t)json_integer_value(json_object_get(first, "provider_id")) == probe->p1,
              "router %d: last resort is not p1", i);
        json_decref(meta);
    }
    printf("ok 5 - 401 disabled the key in both routers and in PostgreSQL; last resort\n");
}

//  Scenario 6: A success on the last resort closes its breaker.
static void s_breaker_closes(s_probe_t *probe)
{
    s_outcome(probe, "o-4", probe->p1, probe->k1, "gpt-4o", 200, NULL, NULL);
    for (int i = 0; i < 2; i++)
        CHECK(WAIT_UNTIL(!s_breaker_open_in(probe, i, 0, probe->p1, "gpt-4o", NULL)),
              "router %d: breaker still open", i);
    printf("ok 6 - success closed the breaker\n");
}

//  Scenario 7: The operator re-enables k3: both routers take it back. As the
//  admin API does, the change stamps updated_at: a router's disable written
//  late (the second router's, say) then leaves it alone.
static void s_key_back(s_probe_t *probe)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE provider_keys SET status = 'active', disabled_reason = NULL, "
             "updated_at = now() WHERE id = %llu",
             (unsigned long long)probe->k3);
    PQclear(PQexec(probe->db, sql));
    for (int i = 0; i < 2; i++)
        CHECK(WAIT_UNTIL(!s_breaker_open_in(probe, i, probe->k3, 0, NULL, NULL)),
              "router %d: key still disabled", i);
    printf("ok 7 - re-enabled key is back in both routers\n");
}

//  Scenario 8: Routing tables: each router publishes the cluster's breakers to
//  dispatch, and shares a limited key's rps between the dispatch
//  instances by their demand (plus one each): 30 and 10 of a 10 rps key
//  give 10 x 31/42 and 10 x 11/42.
static void s_tables(s_probe_t *probe)
{
    PQclear(PQexec(probe->db, "UPDATE provider_keys SET max_rps = 10 WHERE name = 'k1'"));
    char demand_a[64], demand_b[64];
    snprintf(demand_a, sizeof demand_a, "{\"%llu\":30}", (unsigned long long)probe->k1);
    snprintf(demand_b, sizeof demand_b, "{\"%llu\":10}", (unsigned long long)probe->k1);
    for (int i = 0; i < 2; i++) {
        //  Dispatch instances report every second, and a router forgets
        //  one silent for 5 s: report while waiting, as they do.
        CHECK(WAIT_UNTIL((s_demand(probe, "dispatch-a", demand_a),
                          s_demand(probe, "dispatch-b", demand_b),
                          s_share_near(probe, i, "dispatch-a", probe->k1, 10.0 * 31 / 42))),
              "router %d: no share for dispatch-a", i);
        CHECK(s_share_near(probe, i, "dispatch-b", probe->k1, 10.0 * 11 / 42),
              "router %d: dispatch-b's share", i);
        json_t *table = s_table(probe, i);
        CHECK(table && json_is_array(json_object_get(table, "breakers")) &&
                  json_is_array(json_object_get(table, "stats")) &&
                  json_integer_value(json_object_get(table, "version")) > 0,
              "router %d: table shape", i);
        json_decref(table);
    }
    printf("ok 8 - routing tables carry breakers, health and key shares by demand\n");
}

//  Scenario 9: A breaker reset sent to router 1 reaches router 0.
static void s_reset_spreads(s_probe_t *probe)
{
    proto_msg_t *request;
    json_t *meta;
    int status;
    s_outcome(probe, "o-5", probe->p2, probe->k3, "gpt-4o", 404, "upstream_status", NULL);
    CHECK(WAIT_UNTIL(s_breaker_open_in(probe, 0, 0, probe->p2, "gpt-4o", "open")),
          "404 did not open");
    request = proto_msg_new(PROTO_MSG_BREAKER_RESET);
    proto_msg_set_provider_id(request, probe->p2);
    proto_msg_set_upstream_model(request, "gpt-4o");
    meta = s_ask_json(probe, 1, request, &status);
    CHECK(status == 200, "reset answered %d", status);
    json_decref(meta);
    CHECK(WAIT_UNTIL(!s_breaker_open_in(probe, 0, 0, probe->p2, "gpt-4o", NULL)),
          "router 0 kept the reset breaker");
    printf("ok 9 - breaker reset reaches every router\n");
}

//  p1 (priority 10) with keys k1, k2; p2 with key k3. Model "m" routes to gpt-4o on both;
//  "family" maps by rule (regex, then exclude keyword haiku) and resolves only once health
//  has fetched the list.
static void s_seed(s_probe_t *probe, const char *base_url, const char *secret_key)
{
    const char *p1_values[2] = {"p1", base_url};
    probe->p1 = s_insert(probe->db,
                         "INSERT INTO providers (name, protocol, base_url, priority) VALUES "
                         "($1, 'openai', $2, 10) RETURNING id",
                         2, p1_values);
    const char *p2_values[2] = {"p2", base_url};
    probe->p2 = s_insert(probe->db,
                         "INSERT INTO providers (name, protocol, base_url) VALUES "
                         "($1, 'openai', $2) RETURNING id",
                         2, p2_values);
    probe->k1 = s_key(probe->db, secret_key, probe->p1, "k1", "sk-one");
    probe->k2 = s_key(probe->db, secret_key, probe->p1, "k2", "sk-two");
    probe->k3 = s_key(probe->db, secret_key, probe->p2, "k3", "sk-three");
    uint64_t m =
        s_insert(probe->db, "INSERT INTO models (name) VALUES ('m') RETURNING id", 0, NULL);
    char text[3][64];
    snprintf(text[0], sizeof text[0], "%llu", (unsigned long long)m);
    snprintf(text[1], sizeof text[1], "%llu", (unsigned long long)probe->p1);
    snprintf(text[2], sizeof text[2], "%llu", (unsigned long long)probe->p2);
    const char *route_values[3] = {text[0], text[1], text[2]};
    s_insert(probe->db,
             "INSERT INTO routes (model_id, provider_id, upstream_model) VALUES "
             "($1, $2, 'gpt-4o'), ($1, $3, 'gpt-4o')",
             3, route_values);
    uint64_t family = s_insert(probe->db,
                               "INSERT INTO models (name, scheduling) VALUES ('family', 'cost') "
                               "RETURNING id",
                               0, NULL);
    snprintf(text[0], sizeof text[0], "%llu", (unsigned long long)family);
    const char *rule_values[1] = {text[0]};
    s_insert(probe->db,
             "INSERT INTO mapping_rules (model_id, kind, pattern) VALUES "
             "($1, 'regex', '^(gpt-4o-|claude)'), ($1, 'exclude_keyword', 'HAIKU')",
             1, rule_values);
}

//  Two routers and health started on ipc endpoints in the private folder dir, our sockets
//  to them, and a wait for the three subscriptions to our outcomes, so that no OUTCOME
//  below is lost to a slow joiner.
static void s_start(s_probe_t *probe, const char *dir, const char *bin, const char *database_url,
                    const char *secret_key)
{
    char events_ep[128], health_ep[128], router_ep[2][128], table_ep[2][128], control_ep[3][128];
    snprintf(events_ep, sizeof events_ep, "ipc://%s/dispatch-events.sock", dir);
    snprintf(health_ep, sizeof health_ep, "ipc://%s/health-events.sock", dir);
    for (int i = 0; i < 2; i++) {
        snprintf(router_ep[i], sizeof router_ep[i], "ipc://%s/router-%d.sock", dir, i);
        snprintf(table_ep[i], sizeof table_ep[i], "ipc://%s/table-%d.sock", dir, i);
    }
    for (int i = 0; i < 3; i++)
        snprintf(control_ep[i], sizeof control_ep[i], "ipc://%s/control-%d.sock", dir, i);
    probe->events = proto_socket_new(ZMQ_XPUB);
    zsock_set_xpub_verbose(probe->events, 1);
    PROTO_CHECK(proto_socket_bind(probe->events, events_ep) == 0);
    probe->health = proto_socket_client(ZMQ_SUB, "health.events", health_ep);
    PROTO_CHECK(probe->health);
    zsock_set_subscribe(probe->health, "");

    char sets[3][16][512];
    char *set_pointers[3][16];
    char routers[300];
    snprintf(routers, sizeof routers, "%s,%s", router_ep[0], router_ep[1]);
    for (int p = 0; p < 3; p++) {
        int n = 0;
        snprintf(sets[p][n++], 512, "database_url=%s", database_url);
        snprintf(sets[p][n++], 512, "secret_key=%s", secret_key);
        snprintf(sets[p][n++], 512, "dispatch.events.endpoints=%s", events_ep);
        snprintf(sets[p][n++], 512, "health.events.bind=%s", health_ep);
        snprintf(sets[p][n++], 512, "router.endpoints=%s", routers);
        snprintf(sets[p][n++], 512, "%s.control_bind=%s", p < 2 ? "router" : "health",
                 control_ep[p]);
        snprintf(sets[p][n++], 512, "router.breaker_threshold=2");
        snprintf(sets[p][n++], 512, "log_level=%s", getenv("PROBE_DEBUG") ? "debug" : "warn");
        if (p < 2) {
            snprintf(sets[p][n++], 512, "router.bind=%s", router_ep[p]);
            snprintf(sets[p][n++], 512, "router.table.bind=%s", table_ep[p]);
        }
        for (int i = 0; i < n; i++)
            set_pointers[p][i] = sets[p][i];
        char binary[512];
        snprintf(binary, sizeof binary, "%s/tollgate-%s", bin, p < 2 ? "router" : "health");
        probe->children[p] = s_spawn(binary, set_pointers[p], n);
    }
    for (int i = 0; i < 2; i++) {
        probe->router[i] = proto_socket_client(ZMQ_DEALER, "router", router_ep[i]);
        PROTO_CHECK(probe->router[i]);
        probe->tables[i] = proto_socket_client(ZMQ_SUB, "router.table", table_ep[i]);
        PROTO_CHECK(probe->tables[i]);
        zsock_set_subscribe(probe->tables[i], "");
    }

    int subscribed = 0;
    zpoller_t *poller = zpoller_new(probe->events, NULL);
    uint64_t until = proto_loop_now_ms() + S_WAIT_MS;
    while (subscribed < 3 && proto_loop_now_ms() < until)
        if (zpoller_wait(poller, 200)) {
            zframe_t *frame = zframe_recv(probe->events);
            if (frame && zframe_size(frame) >= 1 && zframe_data(frame)[0] == 1)
                subscribed++;
            zframe_destroy(&frame);
        }
    zpoller_destroy(&poller);
    CHECK(subscribed == 3, "only %d subscribers", subscribed);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: router_probe DATABASE_URL BIN_DIR\n");
        return 2;
    }
    const char *database_url = argv[1];
    const char *bin = argv[2];
    PROTO_CHECK(proto_crypto_init() == 0);
    char socket_error[512];
    if (proto_socket_init_env("probe", socket_error, sizeof socket_error) != 0) {
        fprintf(stderr, "router_probe: %s\n", socket_error);
        return 2;
    }
    s_probe_t probe = {0};
    probe.db = PQconnectdb(database_url);
    if (PQstatus(probe.db) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect: %s", PQerrorMessage(probe.db));
        return 1;
    }
    char secret_key[65];
    proto_crypto_random_hex(secret_key, 32);

    //  Upstream: one mock serving three models; the list endpoint is what
    //  health fetches.
    mock_upstream_config_t mock_config;
    mock_upstream_config_init(&mock_config);
    mock_config.models = "gpt-4o,gpt-4o-mini,claude-3-5-haiku";
    mock_upstream_t *mock = mock_upstream_new(&mock_config);
    PROTO_CHECK(mock);
    char base_url[64];
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%u", mock_upstream_port(mock));
    s_seed(&probe, base_url, secret_key);
    char dir[] = "/tmp/router_probe.XXXXXX";
    PROTO_CHECK(mkdtemp(dir));
    s_start(&probe, dir, bin, database_url, secret_key);

    s_explain_alike(&probe);
    s_rules_resolved(&probe);
    s_health_heard(&probe);
    s_breaker_opens(&probe);
    s_key_disabled(&probe);
    s_breaker_closes(&probe);
    s_key_back(&probe);
    s_tables(&probe);
    s_reset_spreads(&probe);
    //  SIGTERM: every program drains and exits 0.
    for (int i = 0; i < 3; i++)
        kill(probe.children[i], SIGTERM);
    for (int i = 0; i < 3; i++) {
        int child_status = 0;
        waitpid(probe.children[i], &child_status, 0);
        CHECK(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0, "child %d exit %d", i,
              child_status);
    }
    for (int i = 0; i < 2; i++) {
        zsock_destroy(&probe.router[i]);
        zsock_destroy(&probe.tables[i]);
    }
    zsock_destroy(&probe.events);
    zsock_destroy(&probe.health);
    mock_upstream_destroy(&mock);
    PQfinish(probe.db);
    char command[300];
    snprintf(command, sizeof command, "rm -rf %s", dir);
    if (system(command) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    if (s_failures)
        fprintf(stderr, "%d check(s) failed\n", s_failures);
    else
        printf("router_probe: all passed\n");
    return s_failures ? 1 : 0;
}
