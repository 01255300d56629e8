/*  admin_routing: questions to the routers (EXPLAIN, BREAKERS,
    BREAKER_RESET, STICKY, STICKY_DELETE; docs/routing.md), and what
    tollgate-health writes about providers (health, model lists, mappings).
*/
#include "admin_handlers.h"
#include "proto_check.h"
#include "admin_resource.h"
#include "proto_socket.h"
#include "proto_crypto.h"
#include "proto_log.h"
#include "proto_msg.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  A question waits at most S_ROUTER_WAIT_MS: it holds one worker, never
//  the listener, but an operator should not wait longer either.
#define S_ROUTERS_MAX 16      //  router endpoints asked
#define S_ROUTER_WAIT_MS 2000 //  longest wait for their answers
#define S_ROUTER_QUEUE 64     //  questions queued for one router at most
#define S_SESSION_MAX 256     //  bytes in a sticky session id (as ingress cuts them)

struct _admin_routers_t {
    proto_config_t *config;                //  borrowed: router.endpoints
    zsock_t *routers[S_ROUTERS_MAX];       //  DEALER per router endpoint, NULL until used
    char *router_endpoints[S_ROUTERS_MAX]; //  their endpoints (copies)
    int router_count;                      //  endpoints configured
    uint64_t questions;                    //  questions asked, for unique request ids
};

// ---------------------------------------------------------------------------
//  Questions to the routers: EXPLAIN, BREAKERS, BREAKER_RESET, STICKY,
//  STICKY_DELETE (docs/routing.md)
//
//  One DEALER per router endpoint rather than one connected to all, so a
//  question can go to every router and each answer is known by who gave it:
//  routers keep soft state of their own (bindings from their own decisions,
//  half-open trials), and an operator wants to see whether they agree. The
//  admin API answers on the ingress loop, so a question waits at most
//  S_ROUTER_WAIT_MS. A router that did not answer by then gets a fresh
//  socket, which drops what was queued for it instead of having it answered
//  later; answers are matched by request id, and a late answer to an
//  earlier question is read and dropped.

//  One question; unset fields are 0 or NULL.
typedef struct {
    proto_msg_type_t type;      //  EXPLAIN, BREAKERS, BREAKER_RESET, STICKY, STICKY_DELETE
    const char *model;          //  EXPLAIN: the model asked for
    uint64_t key_id;            //  EXPLAIN: the client key, 0 = none
    uint64_t account_id;        //  EXPLAIN: its account, 0 = none
    const char *session;        //  EXPLAIN, STICKY (filter), STICKY_DELETE
    const char *capabilities;   //  EXPLAIN: required tags, comma-separated
    uint64_t provider_key_id;   //  BREAKER_RESET, key layer
    uint64_t provider_id;       //  BREAKER_RESET, model layer
    const char *upstream_model; //  BREAKER_RESET, model layer
} s_question_t;

//  Reads the router endpoints from the configuration, once.
static void s_routers_open(admin_routers_t *self)
{
    if (self->router_count > 0)
        return;
    const char *endpoints[S_ROUTERS_MAX];
    int count = proto_config_endpoints(self->config, "router", endpoints, S_ROUTERS_MAX);
    for (int i = 0; i < count; i++) {
        self->router_endpoints[i] = strdup(endpoints[i]);
        assert(self->router_endpoints[i]);
    }
    self->router_count = count;
}

//  The DEALER to router i, made (and connected) when missing. NULL when
//  ZeroMQ refuses the endpoint.
static zsock_t *s_router_socket(admin_routers_t *self, int i)
{
    if (self->routers[i])
        return self->routers[i];
    zsock_t *socket = proto_socket_new(ZMQ_DEALER);
    if (!socket)
        return NULL;
    zsock_set_linger(socket, 0);
    zsock_set_sndtimeo(socket, 0);
    zsock_set_rcvtimeo(socket, 0);
    zsock_set_sndhwm(socket, S_ROUTER_QUEUE);
    if (proto_socket_connect(socket, "router", self->router_endpoints[i]) != 0) {
        zsock_destroy(&socket);
        return NULL;
    }
    self->routers[i] = socket;
    return socket;
}

static void s_routers_close(admin_routers_t *self)
{
    for (int i = 0; i < self->router_count; i++) {
        zsock_destroy(&self->routers[i]);
        free(self->router_endpoints[i]);
        self->router_endpoints[i] = NULL;
    }
    self->router_count = 0;
}

//  The message for a question, with its own request id. Caller owns it.
static proto_msg_t *s_question_msg(const s_question_t *question, const char *request_id)
{
    proto_msg_t *msg = proto_msg_new(question->type);
    proto_msg_set_request_id(msg, request_id);
    if (question->model)
        proto_msg_set_model(msg, question->model);
    if (question->key_id)
        proto_msg_set_key_id(msg, question->key_id);
    if (question->account_id)
        proto_msg_set_account_id(msg, question->account_id);
    if (question->session)
        proto_msg_set_session(msg, question->session);
    if (question->capabilities && *question->capabilities)
        proto_msg_set_capabilities(msg, question->capabilities);
    if (question->provider_key_id)
        proto_msg_set_provider_key_id(msg, question->provider_key_id);
    if (question->provider_id)
        proto_msg_set_provider_id(msg, question->provider_id);
    if (question->upstream_model)
        proto_msg_set_upstream_model(msg, question->upstream_model);
    return msg;
}

//  Asks router `only` (or every router when -1) and waits for the answers:
//  all of them, or with first_only the first. replies[i] gets router i's
//  answer (caller destroys) or NULL. Returns how many answered.
static int s_routers_ask(admin_call_t *call, const s_question_t *question, int only,
                         bool first_only, proto_msg_t **replies)
{
    admin_routers_t *self = call->routers;
    s_routers_open(self);
    char ids[S_ROUTERS_MAX][PROTO_MSG_RID_MAX + 1];
    bool asked[S_ROUTERS_MAX] = {false};
    int waiting = 0;
    for (int i = 0; i < self->router_count; i++) {
        replies[i] = NULL;
        if (only >= 0 && i != only)
            continue;
        zsock_t *socket = s_router_socket(self, i);
        if (!socket)
            continue;
        //  The caller's request id with a count, so answers are told apart.
        snprintf(ids[i], sizeof ids[i], "%.40s-%" PRIu64,
                 call->request->request_id ? call->request->request_id : "admin",
                 ++self->questions);
        proto_msg_t *msg = s_question_msg(question, ids[i]);
        if (proto_msg_send(&msg, socket) == 0) {
            asked[i] = true;
            waiting++;
        }
    }
    int answered = 0;
    int64_t deadline = zclock_mono() + S_ROUTER_WAIT_MS;
    while (waiting > 0 && !(first_only && answered > 0)) {
        int64_t left = deadline - zclock_mono();
        if (left <= 0)
            break;
        zmq_pollitem_t items[S_ROUTERS_MAX];
        int index[S_ROUTERS_MAX], count = 0;
        for (int i = 0; i < self->router_count; i++)
            if (asked[i] && !replies[i]) {
                items[count] = (zmq_pollitem_t){zsock_resolve(self->routers[i]), 0, ZMQ_POLLIN, 0};
                index[count++] = i;
            }
        if (zmq_poll(items, count, (long)left) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int k = 0; k < count; k++) {
            if (!(items[k].revents & ZMQ_POLLIN))
                continue;
            int i = index[k];
            proto_msg_t *msg = NULL;
            int rc;
            while (!replies[i] && (rc = proto_msg_recv(&msg, self->routers[i])) != -1) {
                if (rc == 0 && strcmp(proto_msg_request_id(msg), ids[i]) == 0) {
                    replies[i] = msg;
                    answered++;
                    waiting--;
                } else
                    proto_msg_destroy(&msg); //  malformed, or late for an earlier question
            }
        }
    }
    //  A router that was waited for in vain: start afresh with it.
    if (!(first_only && answered > 0))
        for (int i = 0; i < self->router_count; i++)
            if (asked[i] && !replies[i]) {
                log_warn(call->request->request_id, "admin: router %s did not answer %s in %d ms",
                         self->router_endpoints[i], proto_msg_type_name(question->type),
                         S_ROUTER_WAIT_MS);
                zsock_destroy(&self->routers[i]);
            }
    return answered;
}

static void s_replies_destroy(proto_msg_t **replies, int count)
{
    for (int i = 0; i < count; i++)
        proto_msg_destroy(&replies[i]);
}

static void s_no_router(admin_call_t *call)
{
    admin_error(call, 503, "router_unavailable",
                "no router answered within %d ms; is tollgate-router running (router.endpoints)?",
                S_ROUTER_WAIT_MS);
}

//  The JSON a router put in `meta`, or NULL when it sent none or not JSON.
//  Caller owns return value.
static json_t *s_reply_meta(proto_msg_t *reply)
{
    if (!reply || !proto_msg_has(reply, PROTO_FIELD_meta))
        return NULL;
    json_t *meta = json_loads(proto_msg_meta(reply), 0, NULL);
    if (meta && !json_is_object(meta)) {
        json_decref(meta);
        meta = NULL;
    }
    return meta;
}

//  Epoch milliseconds as ISO 8601 UTC ("2026-01-31T10:00:00.250Z"), for
//  people; the _ms fields stay for programs.
static json_t *s_iso_ms(json_t *ms)
{
    if (!json_is_integer(ms) || json_integer_value(ms) <= 0)
        return json_null();
    json_int_t value = json_integer_value(ms);
    time_t seconds = (time_t)(value / 1000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    char text[40];
    size_t used = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(text + used, sizeof text - used, ".%03dZ", (int)(value % 1000));
    return json_string(text);
}

//  ?router=N: one router by its index in router.endpoints, else -1 (all).
//  Returns 0, or -1 after setting the answer.
static int s_router_param(admin_call_t *call, int *only)
{
    char text[16];
    *only = -1;
    int found = admin_query_get(call->request->query, "router", text, sizeof text);
    if (found == 0)
        return 0;
    s_routers_open(call->routers);
    if (found < 0 || !admin_is_id(text) || atoi(text) >= call->routers->router_count) {
        admin_invalid(call, "'router' must be an index from 0 to %d (router.endpoints)",
                      call->routers->router_count - 1);
        return -1;
    }
    *only = atoi(text);
    return 0;
}

//  The "routers" part of a list answer: who was asked and what each said.
static json_t *s_routers_json(admin_call_t *call, proto_msg_t **replies, int only, const char *list)
{
    json_t *routers = json_array();
    for (int i = 0; i < call->routers->router_count; i++) {
        if (only >= 0 && i != only)
            continue;
        json_t *item =
            json_pack("{s:i, s:s, s:b}", "router", i, "endpoint",
                      call->routers->router_endpoints[i], "answered", replies[i] != NULL);
        if (replies[i] && proto_msg_status(replies[i]) != 200)
            json_object_set_new(item, "error",
                                json_string(proto_msg_has(replies[i], PROTO_FIELD_error_code)
                                                ? proto_msg_error_code(replies[i])
                                                : "error"));
        json_t *meta = s_reply_meta(replies[i]);
        if (json_is_array(json_object_get(meta, list)))
            json_object_set_new(
                item, "count",
                json_integer((json_int_t)json_array_size(json_object_get(meta, list))));
        json_decref(meta);
        json_array_append_new(routers, item);
    }
    return routers;
}

//  Merges the lists routers answered (meta[list]) into one: entries equal
//  apart from `volatile_keys` are one, with "routers": the indexes that hold
//  it. The copy of each entry is the first router's.
static json_t *s_merge_lists(proto_msg_t **replies, int count, const char *list,
                             const char *const *identity)
{
    json_t *merged = json_array();
    for (int i = 0; i < count; i++) {
        json_t *meta = s_reply_meta(replies[i]);
        size_t index;
        json_t *entry;
        json_array_foreach(json_object_get(meta, list), index, entry)
        {
            json_t *same = NULL;
            size_t at;
            json_t *seen;
            json_array_foreach(merged, at, seen)
            {
                bool equal = true;
                for (int k = 0; identity[k] && equal; k++) {
                    json_t *a = json_object_get(seen, identity[k]);
                    json_t *b = json_object_get(entry, identity[k]);
                    equal = (!a && !b) || (a && b && json_equal(a, b));
                }
                if (equal) {
                    same = seen;
                    break;
                }
            }
            if (same)
                json_array_append_new(json_object_get(same, "routers"), json_integer(i));
            else {
                json_t *copy = json_deep_copy(entry);
                json_object_set_new(copy, "routers", json_pack("[i]", i));
                json_array_append_new(merged, copy);
            }
        }
        json_decref(meta);
    }
    return merged;
}

//  Names for the ids in breaker and binding entries, from one statement:
//  {"p": {id: name}, "k": {id: {provider_id, provider, name}}}. NULL after
//  setting the error answer. Caller owns return value.
static json_t *s_names(admin_call_t *call)
{
    char *text = NULL;
    if (admin_sql_one(call,
                      "SELECT json_build_object('p', coalesce((SELECT json_object_agg(id, name) "
                      "FROM providers), '{}'::json), 'k', coalesce((SELECT json_object_agg(k.id, "
                      "json_build_object('provider_id', k.provider_id, 'provider', p.name, 'name', "
                      "k.name)) FROM provider_keys k JOIN providers p ON p.id = k.provider_id), "
                      "'{}'::json))",
                      0, NULL, &text) != 1 ||
        !text) {
        free(text);
        return NULL;
    }
    json_t *names = json_loads(text, 0, NULL);
    free(text);
    return names;
}

//  Adds "provider" (and for a key "provider_id" and "key") names to an entry.
static void s_name_entry(json_t *entry, json_t *names)
{
    char id[32];
    json_t *key = json_object_get(entry, "provider_key_id");
    json_t *provider = json_object_get(entry, "provider_id");
    if (json_is_integer(key)) {
        snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT, json_integer_value(key));
        json_t *known = json_object_get(json_object_get(names, "k"), id);
        if (known) {
            if (!provider)
                json_object_set(entry, "provider_id", json_object_get(known, "provider_id"));
            json_object_set(entry, "provider", json_object_get(known, "provider"));
            json_object_set(entry, "key", json_object_get(known, "name"));
        }
    }
    if (json_is_integer(provider) && !json_object_get(entry, "provider")) {
        snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT, json_integer_value(provider));
        json_t *name = json_object_get(json_object_get(names, "p"), id);
        if (name)
            json_object_set(entry, "provider", name);
    }
}

//  Finds a client key by id or by the key itself (tg-…). Returns 0 with its
//  id and account, or -1 after setting the answer (404).
static int s_client_key(admin_call_t *call, const char *ident, uint64_t *key_id,
                        uint64_t *account_id)
{
    char hash[65];
    const char *params[] = {NULL, NULL};
    //  Anything but an id is a key, whatever its prefix (settings
    //  'client_keys' may have changed it since the key was made).
    if (admin_is_id(ident))
        params[0] = ident;
    else if (*ident) {
        proto_crypto_hash_hex(ident, strlen(ident), hash);
        params[1] = hash;
    } else {
        admin_not_found(call, "key not found (give its id or the whole key)");
        return -1;
    }
    PGresult *result = admin_sql(call,
                                 "SELECT id, account_id FROM api_keys "
                                 "WHERE id = $1::bigint OR key_hash = $2",
                                 2, params);
    if (!result)
        return -1;
    int rc = -1;
    if (PQntuples(result) == 1) {
        *key_id = strtoull(PQgetvalue(result, 0, 0), NULL, 10);
        *account_id = strtoull(PQgetvalue(result, 0, 1), NULL, 10);
        rc = 0;
    } else
        admin_not_found(call, "key not found");
    PQclear(result);
    return rc;
}

//  Capabilities as an array of tags or one comma-separated string, into
//  "a,b" (at most out_size - 1 bytes). Returns 0, or -1 after the answer.
static int s_capabilities_text(admin_call_t *call, json_t *value, char *out, size_t out_size)
{
    *out = '\0';
    if (!value || json_is_null(value))
        return 0;
    json_t *tags = json_is_string(value) ? NULL : json_incref(value);
    if (json_is_string(value)) {
        tags = json_array();
        char *copy = strdup(json_string_value(value));
        char *save = NULL;
        for (char *tag = strtok_r(copy, ", ", &save); tag; tag = strtok_r(NULL, ", ", &save))
            json_array_append_new(tags, json_string(tag));
        free(copy);
    }
    int rc = 0;
    if (!json_is_array(tags)) {
        admin_invalid(call, "'capabilities' must be an array of tags or a comma-separated string");
        rc = -1;
    } else if (admin_tags_check(call, "capabilities", tags) != 0)
        rc = -1;
    size_t index;
    json_t *tag;
    json_array_foreach(tags, index, tag)
    {
        if (rc != 0)
            break;
        size_t used = strlen(out);
        if (used + strlen(json_string_value(tag)) + 2 > out_size) {
            admin_invalid(call, "'capabilities' is too long");
            rc = -1;
            break;
        }
        snprintf(out + used, out_size - used, "%s%s", used ? "," : "", json_string_value(tag));
    }
    json_decref(tags);
    return rc;
}

static const admin_field_t s_decide_fields[] = {
    {.field = "model",
     .column = NULL,
     .kind = ADMIN_F_TEXT,
     .min = 1,
     .max = 255,
     .required = true},
    {.field = "key", .column = NULL, .kind = ADMIN_F_REF},
    {.field = "session", .column = NULL, .kind = ADMIN_F_TEXT, .min = 1, .max = 256},
    {.field = "capabilities", .column = NULL, .kind = ADMIN_F_ANY},
    {.field = NULL}};

//  POST /admin/routing/decide[?router=N]: the decision a request would get,
//  explained, by the first router that answers (or by router N). Changes nothing (no trial, no
//  binding, no limit is taken), so viewers may ask.
void admin_routing_decide(admin_call_t *call)
{
    const admin_field_t *f = s_decide_fields;
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    char capabilities[1024];
    s_question_t question = {.type = PROTO_MSG_EXPLAIN};
    proto_msg_t *replies[S_ROUTERS_MAX] = {NULL};
    int only;
    if (s_router_param(call, &only) != 0 || admin_read(call, f, v, ADMIN_CREATE) != 0 ||
        s_capabilities_text(call, ADMIN_VALUE(f, v, "capabilities")->json, capabilities,
                            sizeof capabilities) != 0)
        goto done;
    const char *key = ADMIN_VALUE(f, v, "key")->text;
    if (key && s_client_key(call, key, &question.key_id, &question.account_id) != 0)
        goto done;
    question.model = ADMIN_VALUE(f, v, "model")->text;
    question.session = ADMIN_VALUE(f, v, "session")->text;
    question.capabilities = capabilities;
    if (s_routers_ask(call, &question, only, true, replies) == 0) {
        s_no_router(call);
        goto done;
    }
    for (int i = 0; i < call->routers->router_count; i++) {
        if (!replies[i])
            continue;
        json_t *meta = s_reply_meta(replies[i]);
        if (!meta)
            admin_error(call, 502, "api_error",
                        proto_msg_status(replies[i]) == 413
                            ? "the explanation is larger than a router message may be (%d bytes)"
                            : "router %d answered without an explanation",
                        proto_msg_status(replies[i]) == 413 ? PROTO_MSG_STR_MAX : i);
        else {
            json_object_set_new(meta, "router", json_integer(i));
            admin_respond_json(call, 200, meta);
        }
        break;
    }
done:
    s_replies_destroy(replies, S_ROUTERS_MAX);
    admin_values_free(v, ADMIN_MAX_FIELDS);
}

//  GET /admin/breakers[?router=N]: every breaker that is not closed, from
//  every router (merged; "routers" says which hold each), or from one.
void admin_breakers_list(admin_call_t *call)
{
    static const char *const identity[] = {"layer",          "provider_key_id", "provider_id",
                                           "upstream_model", "state",           NULL};
    int only;
    proto_msg_t *replies[S_ROUTERS_MAX] = {NULL};
    if (s_router_param(call, &only) != 0)
        return;
    s_question_t question = {.type = PROTO_MSG_BREAKERS};
    if (s_routers_ask(call, &question, only, false, replies) == 0) {
        s_no_router(call);
        return;
    }
    json_t *names = s_names(call);
    if (names) {
        json_t *data = s_merge_lists(replies, call->routers->router_count, "breakers", identity);
        size_t index;
        json_t *entry;
        json_array_foreach(data, index, entry)
        {
            s_name_entry(entry, names);
            json_object_set_new(entry, "opened_at",
                                s_iso_ms(json_object_get(entry, "opened_at_ms")));
            json_object_set_new(entry, "reopens_at",
                                s_iso_ms(json_object_get(entry, "reopens_at_ms")));
        }
        admin_respond_json(call, 200,
                           json_pack("{s:o, s:o}", "data", data, "routers",
                                     s_routers_json(call, replies, only, "breakers")));
        json_decref(names);
    }
    s_replies_destroy(replies, S_ROUTERS_MAX);
}

//  Sends a change every router applies (BREAKER_RESET, STICKY_DELETE) to
//  every router, and writes its audit row once one took it. Each router
//  also tells the others (NOTIFY tollgate_routing), so one is enough; asking
//  all makes it work without that too. `count` names the answer's number
//  ("reset", "deleted"). Returns the answer (caller owns it), or NULL after
//  setting the error answer.
static json_t *s_routers_change(admin_call_t *call, const s_question_t *question, const char *count)
{
    proto_msg_t *replies[S_ROUTERS_MAX] = {NULL};
    if (s_routers_ask(call, question, -1, false, replies) == 0) {
        s_no_router(call);
        return NULL;
    }
    json_int_t changed = 0;
    bool broadcast = false;
    int applied = 0;
    const char *refused = NULL;
    for (int i = 0; i < call->routers->router_count; i++) {
        json_t *meta = s_reply_meta(replies[i]);
        if (replies[i] && proto_msg_status(replies[i]) == 200 && meta) {
            applied++;
            json_int_t n = json_integer_value(json_object_get(meta, count));
            changed = n > changed ? n : changed;
            broadcast = broadcast || json_is_true(json_object_get(meta, "broadcast"));
        } else if (replies[i] && !refused)
            refused = json_string_value(json_object_get(meta, "error"));
        json_decref(meta);
    }
    json_t *answer = NULL;
    if (applied == 0)
        admin_invalid(call, "the router refused: %s", refused ? refused : "malformed question");
    else {
        answer = json_pack("{s:I, s:i, s:b}", count, changed, "routers", applied, "broadcast",
                           broadcast);
        json_object_set_new(answer, "asked", s_routers_json(call, replies, -1, "none"));
    }
    s_replies_destroy(replies, S_ROUTERS_MAX);
    return answer;
}

static const admin_field_t s_breaker_reset_fields[] = {
    {.field = "provider_key_id", .column = NULL, .kind = ADMIN_F_INT, .min = 1, .max = INT64_MAX},
    {.field = "provider_id", .column = NULL, .kind = ADMIN_F_INT, .min = 1, .max = INT64_MAX},
    {.field = "provider", .column = NULL, .kind = ADMIN_F_REF},
    {.field = "upstream_model", .column = NULL, .kind = ADMIN_F_TEXT, .min = 1, .max = 127},
    {.field = NULL}};

//  POST /admin/breakers/reset: closes a key's breaker, or a (provider,
//  model) breaker, in every router. A key the routers disabled in
//  PostgreSQL after a 401/403 (its disabled_reason is theirs) is made
//  active again in the same step, since the routers follow the database.
void admin_breakers_reset(admin_call_t *call)
{
    const admin_field_t *f = s_breaker_reset_fields;
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    s_question_t question = {.type = PROTO_MSG_BREAKER_RESET};
    json_t *answer = NULL;
    char provider[24] = "";
    if (admin_read(call, f, v, ADMIN_CREATE) != 0)
        goto done;
    const char *key = ADMIN_VALUE(f, v, "provider_key_id")->text;
    const char *provider_ref = ADMIN_VALUE(f, v, "provider")->text;
    if (!provider_ref)
        provider_ref = ADMIN_VALUE(f, v, "provider_id")->text;
    const char *model = ADMIN_VALUE(f, v, "upstream_model")->text;
    bool by_key = key && !provider_ref && !model;
    bool by_model = !key && provider_ref && model;
    if ((!by_key && !by_model) ||
        (ADMIN_VALUE(f, v, "provider")->present && ADMIN_VALUE(f, v, "provider_id")->present)) {
        admin_invalid(call, "give 'provider_key_id', or 'provider' (or 'provider_id') and "
                            "'upstream_model'");
        goto done;
    }
    if (by_key) {
        int found = admin_sql_one(call, "SELECT id FROM provider_keys WHERE id = $1::bigint", 1,
                                  (const char *[]){key}, NULL);
        if (found == 0)
            admin_not_found(call, "provider key not found");
        if (found != 1)
            goto done;
        question.provider_key_id = strtoull(key, NULL, 10);
        snprintf(call->audit_target, sizeof call->audit_target, "key:%s", key);
    } else {
        if (admin_resolve(call, &admin_providers, provider_ref, provider) != 0)
            goto done;
        question.provider_id = strtoull(provider, NULL, 10);
        question.upstream_model = model;
        snprintf(call->audit_target, sizeof call->audit_target, "%s/%.100s", provider, model);
    }
    //  No transaction is open while the routers are asked: the wait may be long.
    if (!(answer = s_routers_change(call, &question, "reset")) || admin_begin(call) != 0)
        goto done;
    char key_sql[8192];
    admin_resource_by_id(&admin_provider_keys, key_sql, sizeof key_sql);
    if (by_key) {
        if (admin_before(call, key_sql, key) != 0)
            goto done;
        PGresult *result =
            admin_sql(call,
                      "UPDATE provider_keys SET status = 'active', disabled_reason = "
                      "NULL, updated_at = now() WHERE id = $1::bigint AND status = "
                      "'disabled' AND disabled_reason LIKE 'upstream answered %'",
                      1, (const char *[]){key});
        if (!result)
            goto done;
        bool reenabled = atoi(PQcmdTuples(result)) > 0;
        PQclear(result);
        json_object_set_new(answer, "reenabled", json_boolean(reenabled));
        if (admin_after(call, key_sql, key) != 0)
            goto done;
    } else
        call->audit_after = json_incref(answer);
    if (admin_commit(call) == 0) {
        log_info(call->request->request_id, "admin: breaker reset %s: %" JSON_INTEGER_FORMAT,
                 call->audit_target, json_integer_value(json_object_get(answer, "reset")));
        admin_respond_json(call, 200, answer);
        answer = NULL;
    }
done:
    json_decref(answer);
    admin_values_free(v, ADMIN_MAX_FIELDS);
}

//  GET /admin/sticky[?session=S][&router=N]: session bindings, merged.
void admin_sticky_list(admin_call_t *call)
{
    static const char *const identity[] = {"session", "provider_id", "provider_key_id",
                                           "upstream_model", NULL};
    char session[S_SESSION_MAX + 1];
    int found = admin_query_get(call->request->query, "session", session, sizeof session);
    int only;
    proto_msg_t *replies[S_ROUTERS_MAX] = {NULL};
    if (found < 0 || (found == 1 && !*session)) {
        admin_invalid(call, "'session' must be 1 to %d bytes", S_SESSION_MAX);
        return;
    }
    if (s_router_param(call, &only) != 0)
        return;
    s_question_t question = {.type = PROTO_MSG_STICKY, .session = found == 1 ? session : NULL};
    if (s_routers_ask(call, &question, only, false, replies) == 0) {
        s_no_router(call);
        return;
    }
    json_t *names = s_names(call);
    if (names) {
        json_t *data = s_merge_lists(replies, call->routers->router_count, "bindings", identity);
        size_t index;
        json_t *entry;
        json_array_foreach(data, index, entry)
        {
            s_name_entry(entry, names);
            json_object_set_new(entry, "expires_at",
                                s_iso_ms(json_object_get(entry, "expires_at_ms")));
        }
        admin_respond_json(call, 200,
                           json_pack("{s:o, s:o}", "data", data, "routers",
                                     s_routers_json(call, replies, only, "bindings")));
        json_decref(names);
    }
    s_replies_destroy(replies, S_ROUTERS_MAX);
}

//  DELETE /admin/sticky/{session}: drops a binding in every router.
void admin_sticky_delete(admin_call_t *call)
{
    const char *session = call->params[0];
    if (strlen(session) >= S_SESSION_MAX + 1) {
        admin_not_found(call, "no such session (sessions are at most %d bytes)", S_SESSION_MAX);
        return;
    }
    s_question_t question = {.type = PROTO_MSG_STICKY_DELETE, .session = session};
    json_t *answer = s_routers_change(call, &question, "deleted");
    if (!answer)
        return;
    snprintf(call->audit_target, sizeof call->audit_target, "%.120s", session);
    call->audit_after = json_incref(answer);
    if (admin_begin(call) == 0 && admin_commit(call) == 0) {
        admin_respond_json(call, 200, answer);
        answer = NULL;
    }
    json_decref(answer);
}

// ---------------------------------------------------------------------------
//  Health, model lists, mappings and rules (written by tollgate-health and
//  read here; docs/routing.md sections 1 and 6)

#define S_HEALTH_JSON                                                                              \
    "json_build_object('provider_id', h.provider_id, 'provider', p.name, "                         \
    "'provider_key_id', h.provider_key_id, 'key', k.name, 'upstream_model', h.upstream_model, "    \
    "'state', h.state, 'success_ppm', h.success_ppm, 'latency_us', h.latency_us, "                 \
    "'ttfb_us', h.ttfb_us, 'attempts', h.attempts, 'last_status', h.last_status, "                 \
    "'last_error', h.last_error, 'updated_at', h.updated_at)"

#define S_FETCH_JSON                                                                               \
    "json_build_object('provider_id', f.provider_id, 'provider', fp.name, "                        \
    "'fetched_at', f.fetched_at, 'ok', f.ok, 'model_count', f.model_count, "                       \
    "'provider_key_id', f.provider_key_id, 'error', f.error)"

//  GET /admin/health[?provider=P]: health per (provider, key, model) as the
//  health instances last wrote it (every ~10 s), and each provider's last
//  model-list fetch. Probe entries have upstream_model "".
void admin_health(admin_call_t *call)
{
    char ref[208], provider[24] = "";
    int found = admin_query_get(call->request->query, "provider", ref, sizeof ref);
    if (found < 0) {
        admin_invalid(call, "'provider' must be a provider name or id");
        return;
    }
    if (found == 1 && admin_resolve(call, &admin_providers, ref, provider) != 0)
        return;
    const char *params[] = {found == 1 ? provider : NULL};
    admin_respond_query(
        call, 200,
        "SELECT json_build_object('data', coalesce((SELECT json_agg(" S_HEALTH_JSON
        " ORDER BY p.name, h.provider_key_id, h.upstream_model) FROM provider_health "
        "h LEFT JOIN providers p ON p.id = h.provider_id LEFT JOIN provider_keys k ON "
        "k.id = h.provider_key_id WHERE $1::bigint IS NULL OR h.provider_id = "
        "$1::bigint), '[]'::json), 'fetches', coalesce((SELECT json_agg(" S_FETCH_JSON
        " ORDER BY fp.name) FROM provider_model_fetches f JOIN providers fp ON fp.id "
        "= f.provider_id WHERE $1::bigint IS NULL OR f.provider_id = $1::bigint), "
        "'[]'::json))",
        1, params, "health");
}

//  GET /admin/providers/{provider}/models: the provider's model list as
//  last fetched, and how that fetch went.
void admin_provider_models(admin_call_t *call)
{
    char id[24];
    if (admin_resolve(call, &admin_providers, call->params[0], id) == 0)
        admin_respond_query(
            call, 200,
            "SELECT json_build_object('data', coalesce((SELECT json_agg("
            "json_build_object('model', pm.model, 'first_seen_at', pm.first_seen_at) "
            "ORDER BY pm.model) FROM provider_models pm WHERE pm.provider_id = "
            "$1::bigint), '[]'::json), 'fetch', (SELECT " S_FETCH_JSON
            " FROM provider_model_fetches f JOIN providers fp ON fp.id = "
            "f.provider_id WHERE f.provider_id = $1::bigint))",
            1, (const char *[]){id}, "provider");
}

//  POST /admin/providers/{provider}/models/refresh: asks the health
//  instances to fetch the provider's model list now (NOTIFY tollgate_health,
//  'fetch:ID', sent at commit). The answer does not wait for the fetch:
//  GET .../models shows it when done.
void admin_provider_models_refresh(admin_call_t *call)
{
    char id[24];
    if (admin_resolve(call, &admin_providers, call->params[0], id) != 0 || admin_begin(call) != 0)
        return;
    PGresult *result =
        admin_sql(call, "SELECT pg_notify('tollgate_health', 'fetch:' || $1::bigint)", 1,
                  (const char *[]){id});
    if (!result)
        return;
    PQclear(result);
    snprintf(call->audit_target, sizeof call->audit_target, "%s", id);
    if (admin_commit(call) == 0)
        admin_respond_json(call, 202,
                           json_pack("{s:I, s:b}", "provider_id", (json_int_t)strtoll(id, NULL, 10),
                                     "requested", 1));
}

//  GET /admin/models/{model}/mappings: the pairs the model's routes and
//  rules resolve to against the fetched lists, as tollgate-health last wrote
//  them (the routers resolve the same in memory).
void admin_model_mappings(admin_call_t *call)
{
    char id[24];
    if (admin_resolve(call, &admin_models, call->params[0], id) == 0)
        admin_respond_query(
            call, 200,
            "SELECT json_build_object('data', coalesce(json_agg(json_build_object("
            "'provider_id', mm.provider_id, 'provider', p.name, 'upstream_model', "
            "mm.upstream_model, 'source', mm.source, 'rule_id', mm.rule_id, 'priority', "
            "mm.priority, 'weight', mm.weight, 'active', mm.active, 'resolved_at', "
            "mm.resolved_at) ORDER BY mm.priority DESC, p.name, mm.upstream_model), '[]'::json)) "
            "FROM model_mappings mm JOIN providers p ON p.id = mm.provider_id "
            "WHERE mm.model_id = $1::bigint",
            1, (const char *[]){id}, "mappings");
}

admin_routers_t *admin_routers_new(proto_config_t *config)
{
    admin_routers_t *self = calloc(1, sizeof *self);
    assert(self);
    self->config = config;
    //  Connect now, so the first question finds them ready.
    s_routers_open(self);
    for (int i = 0; i < self->router_count; i++)
        s_router_socket(self, i);
    return self;
}

void admin_routers_destroy(admin_routers_t **self_p)
{
    assert(self_p);
    admin_routers_t *self = *self_p;
    if (!self)
        return;
    s_routers_close(self);
    free(self);
    *self_p = NULL;
}

// ---------------------------------------------------------------------------
//  Self test

static void s_test_routing(void)
{
    PROTO_CHECK(admin_tag_valid("context-1m") && admin_tag_valid("prompt-cache-1h") &&
                admin_tag_valid("a.b_c"));
    PROTO_CHECK(!admin_tag_valid("") && !admin_tag_valid("Vision") && !admin_tag_valid("a,b") &&
                !admin_tag_valid("a b"));
    char long_tag[ADMIN_TAG_MAX + 2];
    memset(long_tag, 'a', sizeof long_tag - 1);
    long_tag[sizeof long_tag - 1] = '\0';
    PROTO_CHECK(!admin_tag_valid(long_tag));

    json_t *ms = json_integer(1767225600250); //  2026-01-01T00:00:00.250Z
    json_t *iso = s_iso_ms(ms);
    PROTO_CHECK(strcmp(json_string_value(iso), "2026-01-01T00:00:00.250Z") == 0);
    json_decref(iso);
    json_decref(ms);
    iso = s_iso_ms(NULL);
    PROTO_CHECK(json_is_null(iso));
    json_decref(iso);

    //  Two routers that agree on one breaker and not on another.
    proto_msg_t *replies[3] = {NULL};
    const char *metas[] = {
        "{\"breakers\":[{\"layer\":\"model\",\"provider_id\":1,\"upstream_model\":\"m\","
        "\"state\":\"open\",\"reopens_at_ms\":5},{\"layer\":\"key\",\"provider_key_id\":2,"
        "\"state\":\"disabled\"}]}",
        NULL,
        "{\"breakers\":[{\"layer\":\"model\",\"provider_id\":1,\"upstream_model\":\"m\","
        "\"state\":\"open\",\"reopens_at_ms\":6}]}"};
    for (int i = 0; i < 3; i++)
        if (metas[i]) {
            replies[i] = proto_msg_new(PROTO_MSG_BREAKERS_REPLY);
            proto_msg_set_status(replies[i], 200);
            proto_msg_set_meta(replies[i], metas[i]);
        }
    static const char *const identity[] = {"layer",          "provider_key_id", "provider_id",
                                           "upstream_model", "state",           NULL};
    json_t *merged = s_merge_lists(replies, 3, "breakers", identity);
    PROTO_CHECK(json_array_size(merged) == 2);
    json_t *routers = json_object_get(json_array_get(merged, 0), "routers");
    PROTO_CHECK(json_array_size(routers) == 2 &&
                json_integer_value(json_array_get(routers, 1)) == 2);
    PROTO_CHECK(json_integer_value(json_object_get(json_array_get(merged, 0), "reopens_at_ms")) ==
                5);
    PROTO_CHECK(json_array_size(json_object_get(json_array_get(merged, 1), "routers")) == 1);
    json_decref(merged);

    json_t *names = json_loads("{\"p\":{\"1\":\"openai\"},\"k\":{\"2\":{\"provider_id\":1,"
                               "\"provider\":\"openai\",\"name\":\"main\"}}}",
                               0, NULL);
    json_t *entry = json_pack("{s:i}", "provider_key_id", 2);
    s_name_entry(entry, names);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(entry, "provider")), "openai") == 0);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(entry, "key")), "main") == 0);
    PROTO_CHECK(json_integer_value(json_object_get(entry, "provider_id")) == 1);
    json_decref(entry);
    json_decref(names);
    for (int i = 0; i < 3; i++)
        proto_msg_destroy(&replies[i]);
}
void admin_routing_test(bool verbose)
{
    if (verbose)
        printf(" * admin_routing: ");
    s_test_routing();
    if (verbose)
        printf("OK\n");
}
