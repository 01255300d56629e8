/*  admin_api: the route table and what every request goes through. See
    admin_api.h and docs/admin-api.md.

    Shape of the code: a route table maps (method, path pattern) to a
    handler. Most routes are generated from the resource descriptions
    (admin_resource.h, admin_tables.c) and served by the generic path; the
    rest have handlers of their own (admin_handlers.h). Whatever the route,
    a request is answered in the same order: who is calling (401), whether
    the path exists (404, 405), whether they may (403), the body (400),
    then the handler; and no transaction is left open.
*/
#include "admin_api.h"
#include "proto_check.h"
#include "admin_call.h"
#include "admin_handlers.h"
#include "admin_resource.h"
#include "proto_crypto.h"
#include "proto_db.h"
#include "proto_log.h"

#include <assert.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_CONTENT_TYPE "application/json"
#define S_MAX_BODY (1024 * 1024) //  admin bodies are small; refuse bigger ones
#define S_MAX_SEGMENTS 64        //  path segments we route

struct _admin_api_t {
    proto_config_t *config;   //  borrowed: admin.*, secret_key, database_url
    PGconn *db;               //  our own connection, reset when it breaks
    char *dummy_hash;         //  argon2id of a random password: verified for unknown
                              //  users so that timing does not tell who exists
    admin_routers_t *routers; //  DEALERs to the routers
};

// ---------------------------------------------------------------------------
//  Paths

//  Matches a path against a pattern. Literal segments must be equal; {x}
//  takes one non-empty segment; {x*} (at most one per pattern) takes one or
//  more segments, so model and account names may contain '/'. Parameters
//  are copied NUL-separated into buf and pointed to by params. Returns the
//  number of parameters, or -1 when the path does not match.
static int s_match(const char *pattern, const char *path, const char **params, char *buf,
                   size_t buf_size)
{
    const char *path_seg[S_MAX_SEGMENTS], *pat_seg[S_MAX_SEGMENTS];
    size_t path_len[S_MAX_SEGMENTS], pat_len[S_MAX_SEGMENTS];
    int path_count = 0, pat_count = 0;
    size_t length = strlen(path);
    if (path[0] != '/' || length >= buf_size || length > ADMIN_MAX_PATH)
        return -1;
    if (length > 1 && path[length - 1] == '/')
        length--; //  "/admin/providers/" is "/admin/providers"
    for (const char *c = path + 1; c <= path + length;) {
        if (path_count == S_MAX_SEGMENTS)
            return -1;
        size_t n = strcspn(c, "/");
        if (c + n > path + length)
            n = (size_t)(path + length - c);
        path_seg[path_count] = c;
        path_len[path_count++] = n;
        c += n + 1;
    }
    for (const char *c = pattern + 1; *c;) {
        assert(pat_count < S_MAX_SEGMENTS);
        size_t n = strcspn(c, "/");
        pat_seg[pat_count] = c;
        pat_len[pat_count++] = n;
        c += n;
        if (*c == '/')
            c++;
    }
    int star = -1;
    for (int i = 0; i < pat_count; i++)
        if (pat_len[i] > 3 && pat_seg[i][0] == '{' && pat_seg[i][pat_len[i] - 2] == '*') {
            assert(star == -1);
            star = i;
        }
    if (star < 0 ? path_count != pat_count : path_count < pat_count)
        return -1;
    int tail = star < 0 ? 0 : pat_count - star - 1; //  segments after the star
    int count = 0;
    size_t used = 0;
    for (int i = 0; i < pat_count; i++) {
        //  Which path segments this pattern segment covers.
        int first = (star >= 0 && i > star) ? path_count - tail + (i - star - 1) : i;
        int last = (i == star) ? path_count - tail - 1 : first;
        bool param = pat_seg[i][0] == '{';
        if (!param) {
            if (path_len[first] != pat_len[i] ||
                memcmp(path_seg[first], pat_seg[i], pat_len[i]) != 0)
                return -1;
            continue;
        }
        //  A star's text runs from its first segment to the end of its last.
        const char *start = path_seg[first];
        size_t n = (size_t)(path_seg[last] + path_len[last] - start);
        if (path_len[first] == 0 || path_len[last] == 0 || used + n + 1 > buf_size)
            return -1;
        assert(count < ADMIN_MAX_PARAMS);
        memcpy(buf + used, start, n);
        buf[used + n] = '\0';
        params[count++] = buf + used;
        used += n + 1;
    }
    return count;
}

// ---------------------------------------------------------------------------
//  The table

static void s_route_table(admin_call_t *call);
static void s_resources(admin_call_t *call);

//  Routes with handlers of their own. They are matched before the
//  resources' routes, so literal routes come before the patterns that would
//  also match them (GET /admin/models/{model*}/mappings before GET
//  /admin/models/{model*}). Each names the least role it needs: reads are
//  for viewers, changes for operators, access management for owners. The
//  whole table is served as GET /admin/routes, which tests check against
//  docs/openapi.json.
static const admin_route_t s_routes[] = {
    {"POST", "/admin/login", admin_login, ADMIN_PUBLIC, "login", NULL, ADMIN_OP_NONE},
    {"POST", "/admin/logout", admin_logout, ADMIN_ANY, "logout", NULL, ADMIN_OP_NONE},
    {"GET", "/admin/me", admin_me, ADMIN_ANY, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/session", admin_session_probe, ADMIN_PUBLIC, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/routes", s_route_table, ADMIN_ANY, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/resources", s_resources, ADMIN_ANY, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/status", admin_status, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/stats", admin_stats, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    //  An account holder's own account, usage and keys (and nobody else's).
    {"GET", "/admin/self", admin_self, ADMIN_ACCOUNT, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/self/usage", admin_self_usage, ADMIN_ACCOUNT, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/self/keys", admin_self_keys, ADMIN_ACCOUNT, NULL, NULL, ADMIN_OP_NONE},
    {"POST", "/admin/self/keys", admin_self_key_create, ADMIN_ACCOUNT, "self.key.create", NULL,
     ADMIN_OP_NONE},
    {"POST", "/admin/self/keys/{id}/revoke", admin_self_key_revoke, ADMIN_ACCOUNT,
     "self.key.revoke", NULL, ADMIN_OP_NONE},
    {"GET", "/admin/usage", admin_usage, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/usage.csv", admin_usage_csv, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/reports/spend", admin_spend_report, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/reports/balances", admin_balances_report, ADMIN_VIEWER, NULL, NULL,
     ADMIN_OP_NONE},
    {"GET", "/admin/reports/usage", admin_usage_report, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/ledger/check", admin_ledger_check, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/requests", admin_request_list, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"GET", "/admin/requests/{request}", admin_request_get, ADMIN_VIEWER, NULL, NULL,
     ADMIN_OP_NONE},
    {"GET", "/admin/settings/request-log", admin_request_log_get, ADMIN_VIEWER, NULL, NULL,
     ADMIN_OP_NONE},
    {"PATCH", "/admin/settings/request-log", admin_request_log_patch, ADMIN_OPERATOR,
     "settings.request_log", NULL, ADMIN_OP_NONE},
    {"GET", "/admin/settings/client-keys", admin_client_keys_get, ADMIN_VIEWER, NULL, NULL,
     ADMIN_OP_NONE},
    {"PATCH", "/admin/settings/client-keys", admin_client_keys_patch, ADMIN_OPERATOR,
     "settings.client_keys", NULL, ADMIN_OP_NONE},
    {"GET", "/admin/settings/log-level", admin_log_level_get, ADMIN_VIEWER, NULL, NULL,
     ADMIN_OP_NONE},
    {"PATCH", "/admin/settings/log-level", admin_log_level_patch, ADMIN_OPERATOR,
     "settings.log_level", NULL, ADMIN_OP_NONE},
    {"GET", "/admin/providers/{provider}/models", admin_provider_models, ADMIN_VIEWER, NULL, NULL,
     ADMIN_OP_NONE},
    {"POST", "/admin/providers/{provider}/models/refresh", admin_provider_models_refresh,
     ADMIN_OPERATOR, "provider.models_refresh", NULL, ADMIN_OP_NONE},
    {"POST", "/admin/providers/{provider}/probe", admin_provider_probe, ADMIN_OPERATOR,
     "provider.probe", NULL, ADMIN_OP_NONE},
    {"GET", "/admin/providers/{provider}/probes", admin_provider_probes, ADMIN_VIEWER, NULL, NULL,
     ADMIN_OP_NONE},
    {"GET", "/admin/models/{model*}/mappings", admin_model_mappings, ADMIN_VIEWER, NULL, NULL,
     ADMIN_OP_NONE},
    //  Asks the routers; decide changes nothing, so a viewer may ask (its
    //  action names it in the table; no audit row is written).
    {"POST", "/admin/routing/decide", admin_routing_decide, ADMIN_VIEWER, "routing.decide", NULL,
     ADMIN_OP_NONE},
    {"GET", "/admin/breakers", admin_breakers_list, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"POST", "/admin/breakers/reset", admin_breakers_reset, ADMIN_OPERATOR, "breaker.reset", NULL,
     ADMIN_OP_NONE},
    {"GET", "/admin/sticky", admin_sticky_list, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"DELETE", "/admin/sticky/{session*}", admin_sticky_delete, ADMIN_OPERATOR, "sticky.delete",
     NULL, ADMIN_OP_NONE},
    {"GET", "/admin/health", admin_health, ADMIN_VIEWER, NULL, NULL, ADMIN_OP_NONE},
    {"POST", "/admin/accounts/{account*}/topup", admin_account_topup, ADMIN_OPERATOR,
     "account.topup", NULL, ADMIN_OP_NONE},
    {"POST", "/admin/keys/revoke", admin_key_revoke_body, ADMIN_OPERATOR, "key.revoke", NULL,
     ADMIN_OP_NONE},
    {"POST", "/admin/keys/{key}/revoke", admin_key_revoke, ADMIN_OPERATOR, "key.revoke", NULL,
     ADMIN_OP_NONE},
    {"GET", "/admin/audit", admin_audit_list, ADMIN_OPERATOR, NULL, NULL, ADMIN_OP_NONE},
    {"POST", "/admin/bootstrap/rotate", admin_bootstrap_rotate, ADMIN_OWNER, "bootstrap.rotate",
     NULL, ADMIN_OP_NONE},
};
#define S_ROUTE_COUNT (sizeof s_routes / sizeof s_routes[0])

//  Route number i in match order: the table above, then every resource's
//  collection routes, then their item routes (so /admin/models/{model*}/routes
//  is tried before /admin/models/{model*}). Returns false past the end.
static bool s_route_at(size_t i, admin_route_t *route)
{
    if (i < S_ROUTE_COUNT) {
        *route = s_routes[i];
        return true;
    }
    i -= S_ROUTE_COUNT;
    static const admin_op_t order[] = {ADMIN_OP_LIST, ADMIN_OP_CREATE, ADMIN_OP_GET, ADMIN_OP_PATCH,
                                       ADMIN_OP_DELETE};
    size_t resources = 0;
    while (admin_resources[resources])
        resources++;
    //  Slots: collections for each resource (2 ops), then items (3 ops).
    size_t slot = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t first = pass == 0 ? 0 : 2, ops = pass == 0 ? 2 : 3;
        for (size_t r = 0; r < resources; r++)
            for (size_t k = 0; k < ops; k++, slot++)
                if (slot == i) {
                    if (!admin_resource_route(admin_resources[r], order[first + k], route))
                        *route = (admin_route_t){0};
                    return true;
                }
    }
    return false;
}

//  Finds the route for a request into *found (with params filled). Returns
//  true when found; else *path_known tells whether some route has this path
//  with another method.
static bool s_route_find(const char *method, const char *path, const char **params, char *buf,
                         size_t buf_size, bool *path_known, admin_route_t *found)
{
    *path_known = false;
    admin_route_t route;
    for (size_t i = 0; s_route_at(i, &route); i++) {
        if (!route.pattern || s_match(route.pattern, path, params, buf, buf_size) < 0)
            continue;
        if (strcmp(route.method, method) == 0) {
            *found = route;
            return true;
        }
        *path_known = true;
    }
    return false;
}

//  GET /admin/routes: the table, as OpenAPI spells paths ({model*} becomes
//  {model}), with the role each route needs.
static void s_route_table(admin_call_t *call)
{
    json_t *data = json_array();
    admin_route_t route;
    for (size_t i = 0; s_route_at(i, &route); i++) {
        if (!route.pattern)
            continue;
        char path[256];
        size_t used = 0;
        for (const char *c = route.pattern; *c && used + 1 < sizeof path; c++)
            if (*c != '*')
                path[used++] = *c;
        path[used] = '\0';
        json_t *item = json_pack("{s:s,s:s,s:s}", "method", route.method, "path", path, "access",
                                 admin_role_name(route.access));
        json_object_set_new(item, "action", route.action ? json_string(route.action) : json_null());
        json_array_append_new(data, item);
    }
    admin_respond_json(call, 200, json_pack("{s:o}", "data", data));
}

//  GET /admin/resources: what each resource is made of, for the CLI and the
//  console.
static void s_resources(admin_call_t *call)
{
    admin_respond_json(call, 200, admin_resource_schema());
}

// ---------------------------------------------------------------------------
//  Serving

static int s_parse_body(admin_call_t *call)
{
    const admin_api_request_t *request = call->request;
    if (request->body_size > S_MAX_BODY) {
        admin_error(call, 413, "invalid_request_error", "body larger than %d bytes", S_MAX_BODY);
        return -1;
    }
    if (!request->body || request->body_size == 0) {
        call->body = json_object();
        return 0;
    }
    json_error_t error;
    call->body = json_loadb(request->body, request->body_size, JSON_REJECT_DUPLICATES, &error);
    if (!call->body) {
        admin_invalid(call, "body is not valid JSON: %s (line %d, column %d)", error.text,
                      error.line, error.column);
        return -1;
    }
    if (!json_is_object(call->body)) {
        admin_invalid(call, "body must be a JSON object");
        return -1;
    }
    return 0;
}

//  Forgets what one attempt at a request left behind, for a retry.
static void s_call_reset(admin_call_t *call)
{
    call->statements = 0;
    call->connection_lost = false;
    call->in_transaction = false;
    call->audited = false;
    call->audit_action = NULL;
    call->audit_target[0] = '\0';
    json_decref(call->audit_before);
    json_decref(call->audit_after);
    call->audit_before = call->audit_after = NULL;
    free(call->set_cookie);
    call->set_cookie = NULL;
}

//  Everything after the route lookup, in the order the answers rank: who
//  is calling (401), whether the path exists (404, 405), whether they may
//  (403), the body (400), then the handler. An unknown path is 401 to an
//  outsider, so the table cannot be probed without a token. Makes sure no
//  transaction is left open.
static void s_serve(admin_call_t *call, bool path_known)
{
    s_call_reset(call);
    const admin_route_t *route = call->route;
    const char *method = call->request->method ? call->request->method : "";
    if ((!route || route->access != ADMIN_PUBLIC) && call->who.kind == ADMIN_WHO_NONE &&
        admin_authenticate(call) != 0)
        return;
    if (!route) {
        admin_error(call, path_known ? 405 : 404, path_known ? "method_not_allowed" : "not_found",
                    path_known ? "method not allowed here" : "no such admin endpoint");
        return;
    }
    if (!admin_allowed(route, &call->who)) {
        admin_error(call, 403, "permission_error", "this needs the %s role; %s has the %s role",
                    admin_role_name(route->access), call->who.actor,
                    admin_role_name(call->who.role));
        return;
    }
    if (!call->body && (strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0) &&
        s_parse_body(call) != 0)
        return;
    if (!call->body)
        call->body = json_object();
    route->handler(call);
    if (call->in_transaction && PQstatus(call->db) == CONNECTION_OK) {
        PGresult *result = PQexec(call->db, "ROLLBACK");
        PQclear(result);
    }
    call->in_transaction = false;
    if (!call->response)
        admin_error(call, 500, "api_error", "no answer");
}

void admin_api_handle(admin_api_t *self, const admin_api_request_t *request,
                      admin_api_answer_t *answer)
{
    assert(self && request && answer);
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    admin_call_t call = {.self = self,
                         .db = self->db,
                         .config = self->config,
                         .routers = self->routers,
                         .dummy_hash = &self->dummy_hash,
                         .request = request};
    const char *method = request->method ? request->method : "";
    const char *path = request->path ? request->path : "";
    bool path_known = false;
    if (s_route_find(method, path, call.params, call.param_buf, sizeof call.param_buf, &path_known,
                     &call.matched))
        call.route = &call.matched;
    bool proof = admin_bearer(request->authorization) ||
                 (!request->authorization && admin_cookie_token(request->cookie));
    if ((!call.route || call.route->access != ADMIN_PUBLIC) && !proof)
        //  No database needed to say no.
        admin_error(&call, 401, "authentication_error",
                    "missing or wrong admin token (Authorization: Bearer <token>)");
    else {
        if (PQstatus(self->db) != CONNECTION_OK) {
            PQreset(self->db);
            admin_session_setup(self->db);
        }
        s_serve(&call, path_known);
        //  A connection that broke while idle shows only when the first
        //  statement fails. Nothing reached the database then, so one
        //  retry on a fresh connection is safe; later failures are not
        //  retried, since a COMMIT may have happened.
        if (call.connection_lost && call.statements == 1) {
            PQreset(self->db);
            if (PQstatus(self->db) == CONNECTION_OK) {
                admin_session_setup(self->db);
                s_serve(&call, path_known);
            }
        }
    }
    struct timespec ended;
    clock_gettime(CLOCK_MONOTONIC, &ended);
    double ms = (double)(ended.tv_sec - started.tv_sec) * 1e3 +
                (double)(ended.tv_nsec - started.tv_nsec) / 1e6;
    //  The pattern, never the path: a path may hold a client key (revoke).
    log_info(request->request_id, "admin: %d %s %s by %s from %s (%.1f ms)", call.status, method,
             call.route ? call.route->pattern : "(unrouted)",
             call.who.kind == ADMIN_WHO_NONE ? "anonymous" : call.who.actor,
             request->client_ip ? request->client_ip : "?", ms);
    json_decref(call.body);
    char *set_cookie = call.set_cookie;
    call.set_cookie = NULL;
    s_call_reset(&call);
    sodium_memzero(call.secret, sizeof call.secret);
    *answer = (admin_api_answer_t){
        .status = call.status >= 100 && call.status <= 599 ? call.status : 500,
        .body = call.response ? call.response : strdup(""),
        .content_type = call.content_type ? call.content_type : S_CONTENT_TYPE,
        .set_cookie = set_cookie,
    };
}

void admin_api_answer_free(admin_api_answer_t *answer)
{
    free(answer->body);
    free(answer->set_cookie);
    answer->body = answer->set_cookie = NULL;
}

admin_api_t *admin_api_new(proto_config_t *config, char *error, size_t error_size)
{
    assert(config);
    if (proto_crypto_init() != 0) {
        snprintf(error, error_size, "cannot initialise libsodium");
        return NULL;
    }
    PGconn *db = proto_db_connect(config, error, error_size);
    if (!db)
        return NULL;
    admin_session_setup(db);
    admin_api_t *self = calloc(1, sizeof *self);
    assert(self);
    self->config = config;
    self->db = db;
    self->routers = admin_routers_new(config);
    return self;
}

void admin_api_destroy(admin_api_t **self_p)
{
    assert(self_p);
    admin_api_t *self = *self_p;
    if (!self)
        return;
    PQfinish(self->db);
    admin_routers_destroy(&self->routers);
    free(self->dummy_hash);
    free(self);
    *self_p = NULL;
}

// ---------------------------------------------------------------------------
//  Self test

static void s_test_match(void)
{
    const char *params[ADMIN_MAX_PARAMS];
    char buf[256];
    PROTO_CHECK(s_match("/admin/providers", "/admin/providers", params, buf, sizeof buf) == 0);
    PROTO_CHECK(s_match("/admin/providers", "/admin/providers/", params, buf, sizeof buf) == 0);
    PROTO_CHECK(s_match("/admin/providers", "/admin/provider", params, buf, sizeof buf) == -1);
    PROTO_CHECK(s_match("/admin/providers", "/admin/providers/x", params, buf, sizeof buf) == -1);
    PROTO_CHECK(
        s_match("/admin/providers/{p}", "/admin/providers/openai", params, buf, sizeof buf) == 1);
    PROTO_CHECK(strcmp(params[0], "openai") == 0);
    PROTO_CHECK(s_match("/admin/providers/{p}", "/admin/providers//", params, buf, sizeof buf) ==
                -1);
    PROTO_CHECK(s_match("/admin/providers/{p}/keys", "/admin/providers/7/keys", params, buf,
                        sizeof buf) == 1);
    PROTO_CHECK(strcmp(params[0], "7") == 0);
    PROTO_CHECK(
        s_match("/admin/models/{m*}", "/admin/models/openai/gpt-4o", params, buf, sizeof buf) == 1);
    PROTO_CHECK(strcmp(params[0], "openai/gpt-4o") == 0);
    PROTO_CHECK(s_match("/admin/models/{m*}/routes", "/admin/models/a/b/routes", params, buf,
                        sizeof buf) == 1);
    PROTO_CHECK(strcmp(params[0], "a/b") == 0);
    PROTO_CHECK(s_match("/admin/models/{m*}/routes", "/admin/models/routes", params, buf,
                        sizeof buf) == -1);
    PROTO_CHECK(s_match("/admin/models/{m*}", "/admin/models", params, buf, sizeof buf) == -1);
    PROTO_CHECK(s_match("/admin/models/{m*}", "admin/models/x", params, buf, sizeof buf) == -1);
    PROTO_CHECK(s_match("/admin/models/{m*}", "/", params, buf, sizeof buf) == -1);
    PROTO_CHECK(s_match("/admin/models/{m*}", "", params, buf, sizeof buf) == -1);

    //  The table: first match by method, 405 for a known path.
    bool known = false;
    admin_route_t route;
    PROTO_CHECK(
        s_route_find("GET", "/admin/models/x/routes", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(route.resource == &admin_routes && route.op == ADMIN_OP_LIST);
    PROTO_CHECK(strcmp(params[0], "x") == 0);
    PROTO_CHECK(s_route_find("GET", "/admin/models/x/y", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(route.resource == &admin_models && route.op == ADMIN_OP_GET);
    PROTO_CHECK(strcmp(params[0], "x/y") == 0);
    PROTO_CHECK(
        s_route_find("GET", "/admin/models/x/mappings", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(route.handler == admin_model_mappings);
    PROTO_CHECK(
        s_route_find("POST", "/admin/keys/revoke", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(route.handler == admin_key_revoke_body);
    PROTO_CHECK(
        s_route_find("POST", "/admin/keys/tg-abc/revoke", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(route.handler == admin_key_revoke && strcmp(params[0], "tg-abc") == 0);
    PROTO_CHECK(s_route_find("DELETE", "/admin/keys/7", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(route.resource == &admin_keys && strcmp(route.action, "key.revoke") == 0);
    PROTO_CHECK(!s_route_find("PUT", "/admin/providers", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(known);
    PROTO_CHECK(!s_route_find("GET", "/admin/nothing", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(!known);
    PROTO_CHECK(!s_route_find("GET", "/admin/routes/7", params, buf, sizeof buf, &known, &route));
    PROTO_CHECK(known); //  routes have PATCH and DELETE, no GET
    PROTO_CHECK(s_route_find("POST", "/admin/accounts/team a/topup", params, buf, sizeof buf,
                             &known, &route));
    PROTO_CHECK(route.handler == admin_account_topup && strcmp(params[0], "team a") == 0);
    //  Every pattern is well formed: it matches itself with placeholders filled.
    for (size_t i = 0; s_route_at(i, &route); i++) {
        if (!route.pattern)
            continue;
        char path[256];
        snprintf(path, sizeof path, "%s", route.pattern);
        for (char *open; (open = strchr(path, '{'));)
            memmove(open + 1, strchr(open, '}') + 1, strlen(strchr(open, '}') + 1) + 1),
                *open = 'x';
        PROTO_CHECK(s_match(route.pattern, path, params, buf, sizeof buf) >= 0);
    }
}

static void s_test_fields(void)
{
    admin_api_request_t request = {.method = "POST", .path = "/admin/providers"};
    admin_call_t call = {.request = &request};
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    const admin_field_t *f = admin_providers.fields;

    call.body = json_pack("{s:s,s:s,s:s,s:i}", "name", "openai", "protocol", "openai", "base_url",
                          "https://api.openai.com/v1/", "priority", 5);
    PROTO_CHECK(admin_read(&call, f, v, ADMIN_CREATE) == 0 && !call.response);
    PROTO_CHECK(strcmp(ADMIN_VALUE(f, v, "base_url")->text, "https://api.openai.com/v1") == 0);
    PROTO_CHECK(strcmp(ADMIN_VALUE(f, v, "priority")->text, "5") == 0);
    PROTO_CHECK(!ADMIN_VALUE(f, v, "weight")->present && !ADMIN_VALUE(f, v, "weight")->text);
    admin_values_free(v, ADMIN_MAX_FIELDS);
    json_decref(call.body);

    struct {
        const char *body;    //  request body
        const char *message; //  part of the error message expected
    } bad[] = {
        {"{\"protocol\":\"openai\",\"base_url\":\"http://x\"}", "'name' is required"},
        {"{\"name\":\"a b\",\"protocol\":\"openai\",\"base_url\":\"http://x\"}", "'name'"},
        {"{\"name\":\"a\",\"protocol\":\"cohere\",\"base_url\":\"http://x\"}",
         "'protocol' must be one of openai, openai-responses, anthropic, gemini"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"ftp://x\"}", "'base_url'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://\"}", "'base_url'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x y\"}", "'base_url'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x\",\"weight\":-1}",
         "'weight'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x\",\"weight\":1000001}",
         "'weight'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x\",\"priority\":1.5}",
         "'priority'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x\",\"colour\":1}",
         "unknown field 'colour'"},
        {"{\"name\":null,\"protocol\":\"openai\",\"base_url\":\"http://x\"}",
         "'name' cannot be null"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(v, 0, sizeof v);
        call.body = json_loads(bad[i].body, 0, NULL);
        PROTO_CHECK(call.body);
        PROTO_CHECK(admin_read(&call, f, v, ADMIN_CREATE) == -1);
        PROTO_CHECK(call.status == 400 && call.response && strstr(call.response, bad[i].message));
        admin_values_free(v, ADMIN_MAX_FIELDS);
        json_decref(call.body);
        free(call.response);
        call.response = NULL;
    }

    //  Money: decimal strings, whole units, micros, and their mistakes.
    const admin_field_t *m = admin_models.fields;
    struct {
        const char *body;     //  request body
        const char *price_in; //  expected parameter, or NULL for an error
    } money[] = {
        {"{\"name\":\"m\",\"price_in\":\"2.50\"}", "2500000"},
        {"{\"name\":\"m\",\"price_in\":3}", "3000000"},
        {"{\"name\":\"m\",\"price_in_micros\":15}", "15"},
        {"{\"name\":\"m\",\"price_in\":2.5}", NULL},
        {"{\"name\":\"m\",\"price_in\":\"1e3\"}", NULL},
        {"{\"name\":\"m\",\"price_in\":\"-1\"}", NULL},
        {"{\"name\":\"m\",\"price_in_micros\":\"15\"}", NULL},
        {"{\"name\":\"m\",\"price_in\":\"1\",\"price_in_micros\":1}", NULL},
        {"{\"name\":\"m\",\"price_in\":\"1000001\"}", NULL},
    };
    for (size_t i = 0; i < sizeof money / sizeof money[0]; i++) {
        memset(v, 0, sizeof v);
        call.body = json_loads(money[i].body, 0, NULL);
        PROTO_CHECK(call.body);
        int rc = admin_read(&call, m, v, ADMIN_CREATE);
        if (money[i].price_in)
            PROTO_CHECK(rc == 0 &&
                        strcmp(ADMIN_VALUE(m, v, "price_in")->text, money[i].price_in) == 0);
        else
            PROTO_CHECK(rc == -1 && call.status == 400);
        admin_values_free(v, ADMIN_MAX_FIELDS);
        json_decref(call.body);
        free(call.response);
        call.response = NULL;
    }

    //  Names lists: JSON text for SQL, null for any.
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"account\":\"a\",\"models\":[\"gpt-4o\",\"x/y\"]}", 0, NULL);
    PROTO_CHECK(admin_read(&call, admin_keys.fields, v, ADMIN_CREATE) == 0);
    PROTO_CHECK(strcmp(ADMIN_VALUE(admin_keys.fields, v, "models")->text, "[\"gpt-4o\",\"x/y\"]") ==
                0);
    admin_values_free(v, ADMIN_MAX_FIELDS);
    json_decref(call.body);
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"account\":7,\"models\":null}", 0, NULL);
    PROTO_CHECK(admin_read(&call, admin_keys.fields, v, ADMIN_CREATE) == 0);
    PROTO_CHECK(ADMIN_VALUE(admin_keys.fields, v, "models")->present);
    PROTO_CHECK(!ADMIN_VALUE(admin_keys.fields, v, "models")->text);
    PROTO_CHECK(strcmp(ADMIN_VALUE(admin_keys.fields, v, "account")->text, "7") == 0);
    admin_values_free(v, ADMIN_MAX_FIELDS);
    json_decref(call.body);
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"account\":\"a\",\"models\":[\"\"]}", 0, NULL);
    PROTO_CHECK(admin_read(&call, admin_keys.fields, v, ADMIN_CREATE) == -1 && call.status == 400);
    admin_values_free(v, ADMIN_MAX_FIELDS);
    json_decref(call.body);
    free(call.response);
    call.response = NULL;

    //  Balances may not be negative; a PATCH accepts only its own fields.
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"name\":\"a\",\"balance\":\"-1\"}", 0, NULL);
    PROTO_CHECK(admin_read(&call, admin_accounts.fields, v, ADMIN_CREATE) == -1);
    admin_values_free(v, ADMIN_MAX_FIELDS);
    json_decref(call.body);
    free(call.response);
    call.response = NULL;
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"name\":\"a\"}", 0, NULL);
    PROTO_CHECK(admin_read(&call, admin_providers.fields, v, ADMIN_PATCH) == -1);
    PROTO_CHECK(strstr(call.response, "unknown field 'name'"));
    admin_values_free(v, ADMIN_MAX_FIELDS);
    json_decref(call.body);
    free(call.response);
    call.response = NULL;
}

//  Checks one answer: status and error type.
static void s_test_answer(int status, char *body, int want_status, const char *want_type)
{
    PROTO_CHECK(status == want_status);
    json_t *answer = json_loads(body, 0, NULL);
    PROTO_CHECK(answer);
    const char *error_type =
        json_string_value(json_object_get(json_object_get(answer, "error"), "type"));
    PROTO_CHECK(error_type && strcmp(error_type, want_type) == 0);
    json_decref(answer);
}

//  Authentication, routing and roles without a database: requests that
//  are refused before any statement runs, through the public entry point
//  (no token) and through s_serve with a caller already proved.
static void s_test_handle(void)
{
    proto_config_t *config = proto_config_new();
    char error[256];
    PROTO_CHECK(proto_config_set(config, "admin.token", "tga_test", "test", error, sizeof error) ==
                0);
    admin_api_t self = {.config = config, .db = NULL};
    struct {
        const char *method, *path, *authorization; //  the request
    } outsiders[] = {
        {"GET", "/admin/providers", NULL},      {"GET", "/admin/providers", "Basic tga_test"},
        {"GET", "/admin/providers", "Bearer "}, {"GET", "/admin/nope", NULL},
        {"POST", "/admin/logout", NULL},
    };
    for (size_t i = 0; i < sizeof outsiders / sizeof outsiders[0]; i++) {
        admin_api_request_t request = {.method = outsiders[i].method,
                                       .path = outsiders[i].path,
                                       .authorization = outsiders[i].authorization,
                                       .client_ip = "127.0.0.1"};
        admin_api_answer_t answer;
        admin_api_handle(&self, &request, &answer);
        PROTO_CHECK(strcmp(answer.content_type, "application/json") == 0);
        s_test_answer(answer.status, answer.body, 401, "authentication_error");
        admin_api_answer_free(&answer);
    }

    struct {
        const char *method, *path, *body; //  the request
        admin_access_t role;              //  the caller's
        int status;                       //  expected answer
        const char *type;                 //  expected error type
    } cases[] = {
        {"GET", "/admin/nope", NULL, ADMIN_OWNER, 404, "not_found"},
        {"PUT", "/admin/providers", NULL, ADMIN_OWNER, 405, "method_not_allowed"},
        {"POST", "/admin/providers", "{", ADMIN_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/providers", "[1]", ADMIN_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/providers", "{\"a\":1,\"a\":2}", ADMIN_OWNER, 400,
         "invalid_request_error"},
        {"POST", "/admin/providers", "{}", ADMIN_VIEWER, 403, "permission_error"},
        {"DELETE", "/admin/keys/7", NULL, ADMIN_VIEWER, 403, "permission_error"},
        {"GET", "/admin/audit", NULL, ADMIN_VIEWER, 403, "permission_error"},
        {"POST", "/admin/users", "{}", ADMIN_OPERATOR, 403, "permission_error"},
        {"GET", "/admin/tokens", NULL, ADMIN_OPERATOR, 403, "permission_error"},
        {"POST", "/admin/users", "{\"username\":\"a\"}", ADMIN_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/users",
         "{\"username\":\"a b\",\"password\":\"long enough pw\","
         "\"role\":\"owner\"}",
         ADMIN_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/users", "{\"username\":\"ab\",\"password\":\"short\",\"role\":\"owner\"}",
         ADMIN_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/users",
         "{\"username\":\"ab\",\"password\":\"long enough pw\","
         "\"role\":\"god\"}",
         ADMIN_OWNER, 400, "invalid_request_error"},
        {"PATCH", "/admin/settings/request-log", "{\"level\":\"all\"}", ADMIN_OPERATOR, 400,
         "invalid_request_error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        admin_api_request_t request = {.method = cases[i].method,
                                       .path = cases[i].path,
                                       .body = cases[i].body,
                                       .body_size = cases[i].body ? strlen(cases[i].body) : 0};
        admin_call_t call = {.self = &self, .config = config, .request = &request};
        call.who.kind = ADMIN_WHO_TOKEN;
        call.who.role = cases[i].role;
        snprintf(call.who.actor, sizeof call.who.actor, "token:test");
        bool known = false;
        if (s_route_find(request.method, request.path, call.params, call.param_buf,
                         sizeof call.param_buf, &known, &call.matched))
            call.route = &call.matched;
        s_serve(&call, known);
        s_test_answer(call.status, call.response, cases[i].status, cases[i].type);
        json_decref(call.body);
        s_call_reset(&call);
        free(call.response);
    }
    proto_config_destroy(&config);
}

//  The table's promises: a viewer changes nothing, access management is
//  for owners, every change has an audit action, only login is public, an
//  account holder reaches only what any caller may.
static void s_test_roles(void)
{
    admin_who_t holder = {.kind = ADMIN_WHO_USER, .role = ADMIN_ACCOUNT};
    admin_who_t viewer = {.kind = ADMIN_WHO_USER, .role = ADMIN_VIEWER};
    admin_who_t operator= {.kind = ADMIN_WHO_USER, .role = ADMIN_OPERATOR};
    admin_who_t nobody = {.kind = ADMIN_WHO_NONE};
    admin_route_t route;
    size_t count = 0;
    for (size_t i = 0; s_route_at(i, &route); i++) {
        if (!route.pattern)
            continue;
        count++;
        bool reads = strcmp(route.method, "GET") == 0;
        bool own_session = route.handler == admin_logout || route.handler == admin_login;
        bool asks = route.handler == admin_routing_decide; //  a POST that changes nothing
        PROTO_CHECK(reads == (route.action == NULL));
        PROTO_CHECK((route.access == ADMIN_PUBLIC) ==
                    (route.handler == admin_login || route.handler == admin_session_probe));
        if (!reads && !own_session && !asks)
            PROTO_CHECK(!admin_allowed(&route, &viewer));
        if (strstr(route.pattern, "/users") || strstr(route.pattern, "/tokens") ||
            strstr(route.pattern, "/sessions") || strstr(route.pattern, "/bootstrap"))
            PROTO_CHECK(route.access == ADMIN_OWNER && !admin_allowed(&route, &operator));
        if (route.access != ADMIN_PUBLIC)
            PROTO_CHECK(!admin_allowed(&route, &nobody));
        //  An account holder reaches what any caller may, and their own routes;
        //  nobody else reaches those.
        if (route.access > ADMIN_ANY)
            PROTO_CHECK(admin_allowed(&route, &holder) == (route.access == ADMIN_ACCOUNT));
        if (route.access == ADMIN_ACCOUNT)
            PROTO_CHECK(strncmp(route.pattern, "/admin/self", 11) == 0 &&
                        !admin_allowed(&route, &viewer) && !admin_allowed(&route, &operator));
    }
    //  Every route the admin API had in ingress, /admin/resources, /admin/stats,
    //  /admin/session, the five /admin/self routes, the four of recurring
    //  grants, settings/client-keys, the five of provider model settings and
    //  the two of completion probes.
    PROTO_CHECK(count == 94);
    PROTO_CHECK(admin_role_parse("owner") == ADMIN_OWNER &&
                admin_role_parse("viewer") == ADMIN_VIEWER);
    PROTO_CHECK(admin_role_parse("account") == ADMIN_ACCOUNT);
    PROTO_CHECK(admin_role_parse("root") == ADMIN_ANY && admin_role_parse(NULL) == ADMIN_ANY);
    PROTO_CHECK(strcmp(admin_role_name(ADMIN_OPERATOR), "operator") == 0);
}

void admin_api_test(bool verbose)
{
    if (verbose)
        printf(" * admin_api: ");
    proto_log_init("admin", PROTO_LOG_WARN);
    PROTO_CHECK(proto_crypto_init() == 0);
    s_test_match();
    s_test_fields();
    s_test_handle();
    s_test_roles();
    if (verbose)
        printf("OK\n");
}
