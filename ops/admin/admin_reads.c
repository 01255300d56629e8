/*  admin_reads: what operators read from PostgreSQL besides the resources:
    usage rows and the ledger's reports (admin_report.h), the ledger check
    (proto_ledger_check.h), the request log with its timelines, the audit log,
    and the two run-time settings (request-log detail and log levels).
*/
#include "proto_ledger_check.h"
#include "admin_handlers.h"
#include "admin_report.h"
#include "admin_resource.h"
#include "proto_log.h"
#include "proto_trace.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_USAGE_LIMIT 100 //  usage rows when no limit is given
#define S_AUDIT_LIMIT 100 //  audit rows when no limit is given

#define S_USAGE_JSON                                                                               \
    "json_build_object('request_id', u.request_id, 'started_at', u.started_at, "                   \
    "'recorded_at', u.recorded_at, 'account_id', u.account_id, 'api_key_id', u.api_key_id, "       \
    "'model', u.model, 'provider_id', u.provider_id, 'provider_key_id', u.provider_key_id, "       \
    "'upstream_model', u.upstream_model, 'status', u.status, 'tokens_in', u.tokens_in, "           \
    "'tokens_out', u.tokens_out, 'tokens_cache_read', u.tokens_cache_read, "                       \
    "'tokens_cache_write', u.tokens_cache_write, "                                                 \
    "'tokens_cache_write_1h', u.tokens_cache_write_1h, 'cost_micros', u.cost_micros, "             \
    "'latency_ms', u.latency_ms, 'ttfb_ms', u.ttfb_ms, 'attempts', u.attempts, "                   \
    "'estimated', u.estimated, 'operator_loss', u.operator_loss, 'images', u.images)"

// ---------------------------------------------------------------------------
//  Usage and status

void admin_usage(admin_call_t *call)
{
    char ident[256], before[80], limit_text[24], account[24];
    const char *query = call->request->query;
    int has_account = admin_query_get(query, "account", ident, sizeof ident);
    int has_before = admin_query_get(query, "before", before, sizeof before);
    int has_limit = admin_query_get(query, "limit", limit_text, sizeof limit_text);
    long limit = S_USAGE_LIMIT;
    if (has_account < 0 || has_before < 0 || has_limit < 0) {
        admin_invalid(call, "malformed query string");
        return;
    }
    if (has_limit == 1) {
        char *end;
        limit = strtol(limit_text, &end, 10);
        if (!*limit_text || *end || limit < 1 || limit > ADMIN_LIMIT_MAX) {
            admin_invalid(call, "'limit' must be an integer from 1 to %d", ADMIN_LIMIT_MAX);
            return;
        }
    }
    if (has_account == 1 && admin_resolve(call, &admin_accounts, ident, account) != 0)
        return;
    snprintf(limit_text, sizeof limit_text, "%ld", limit);
    const char *params[] = {has_account == 1 ? account : NULL, has_before == 1 ? before : NULL,
                            limit_text};
    //  Newest first; next_before is set when the page is full, and is the
    //  value to pass as `before` for the next (older) page.
    admin_respond_query(call, 200,
                        "SELECT json_build_object('data', coalesce(json_agg(j ORDER BY started_at "
                        "DESC, request_id DESC), '[]'::json), 'next_before', CASE WHEN count(*) = "
                        "$3::bigint THEN min(started_at) END) FROM (SELECT u.started_at, "
                        "u.request_id, " S_USAGE_JSON " AS j FROM usage u WHERE ($1::bigint IS "
                        "NULL OR u.account_id = $1::bigint) AND ($2::timestamptz IS NULL OR "
                        "u.started_at < $2::timestamptz) ORDER BY u.started_at DESC, u.request_id "
                        "DESC LIMIT $3::bigint) s",
                        3, params, "usage");
}

//  The reports (admin_report.h) over the query string:
//  from, to (ISO times or epoch seconds), account, key, provider (ids or
//  names), model, by, errors, limit, cursor.
static int s_report_query(admin_call_t *call, admin_report_query_t *query, char *texts[4])
{
    const char *raw = call->request->query;
    char value[256];
    memset(query, 0, sizeof *query);
    static const char *const times[] = {"from", "to"};
    for (int i = 0; i < 2; i++) {
        int has = admin_query_get(raw, times[i], value, sizeof value);
        if (has < 0)
            return admin_invalid(call, "malformed query string"), -1;
        if (has == 0)
            continue;
        char *end;
        long long seconds = strtoll(value, &end, 10);
        int64_t us = 0;
        if (*value && !*end)
            us = (int64_t)seconds * 1000000;
        else {
            //  An ISO time: let PostgreSQL read it, as the rest of the API does.
            const char *params[] = {value};
            PGresult *result = PQexecParams(call->db,
                                            "SELECT (extract(epoch FROM $1::timestamptz) * "
                                            "1000000)::bigint",
                                            1, NULL, params, NULL, NULL, 0);
            bool good = PQresultStatus(result) == PGRES_TUPLES_OK;
            if (good)
                us = strtoll(PQgetvalue(result, 0, 0), NULL, 10);
            PQclear(result);
            if (!good)
                return admin_invalid(call, "'%s' must be an ISO time or epoch seconds", times[i]),
                       -1;
        }
        if (i == 0)
            query->from_us = us;
        else
            query->to_us = us;
    }
    static const struct {
        const char *name;             //  query parameter
        const admin_resource_t *kind; //  what it names, or NULL for a bare key id
    } refs[] = {{"account", &admin_accounts}, {"key", NULL}, {"provider", &admin_providers}};
    uint64_t *ids[] = {&query->account_id, &query->key_id, &query->provider_id};
    for (int i = 0; i < 3; i++) {
        int has = admin_query_get(raw, refs[i].name, value, sizeof value);
        if (has < 0)
            return admin_invalid(call, "malformed query string"), -1;
        if (has == 0)
            continue;
        char id[24];
        if (refs[i].kind) {
            if (admin_resolve(call, refs[i].kind, value, id) != 0)
                return -1;
        } else {
            char *end;
            unsigned long long number = strtoull(value, &end, 10);
            if (!*value || *end)
                return admin_invalid(call, "'key' must be a key id"), -1;
            snprintf(id, sizeof id, "%llu", number);
        }
        *ids[i] = strtoull(id, NULL, 10);
    }
    static const char *const strings[] = {"model", "by", "cursor", "limit"};
    for (int i = 0; i < 4; i++) {
        texts[i] = NULL;
        if (admin_query_get(raw, strings[i], value, sizeof value) == 1)
            texts[i] = strdup(value);
    }
    query->model = texts[0];
    query->group_by = texts[1];
    query->cursor = texts[2];
    if (texts[3]) {
        char *end;
        long limit = strtol(texts[3], &end, 10);
        if (!*texts[3] || *end || limit < 1 || limit > 10000)
            return admin_invalid(call, "'limit' must be an integer from 1 to 10000"), -1;
        query->limit = (size_t)limit;
    }
    if (admin_query_get(raw, "errors", value, sizeof value) == 1 && strcmp(value, "false") != 0)
        query->status_min = 400;
    return 0;
}

typedef int(s_report_fn)(PGconn *db, const admin_report_query_t *query, json_t **out, char *error,
                         size_t error_size);

static void s_report(admin_call_t *call, s_report_fn *report)
{
    admin_report_query_t query;
    char *texts[4] = {NULL, NULL, NULL, NULL};
    if (s_report_query(call, &query, texts) == 0) {
        json_t *out = NULL;
        char error[512];
        if (report(call->db, &query, &out, error, sizeof error) == 0)
            admin_respond_json(call, 200, out);
        else
            admin_invalid(call, "%s", error);
    }
    for (int i = 0; i < 4; i++)
        free(texts[i]);
}

void admin_spend_report(admin_call_t *call)
{
    s_report(call, admin_report_spend);
}

void admin_balances_report(admin_call_t *call)
{
    s_report(call, admin_report_balances);
}

void admin_usage_report(admin_call_t *call)
{
    s_report(call, admin_report_usage);
}

void admin_usage_csv(admin_call_t *call)
{
    admin_report_query_t query;
    char *texts[4] = {NULL, NULL, NULL, NULL};
    if (s_report_query(call, &query, texts) == 0) {
        char *text = NULL;
        size_t size = 0;
        FILE *out = open_memstream(&text, &size);
        char error[512];
        int64_t rows = admin_report_usage_csv(call->db, &query, out, error, sizeof error);
        fclose(out);
        if (rows >= 0) {
            call->content_type = "text/csv";
            admin_respond(call, 200, text);
            text = NULL;
        } else
            admin_invalid(call, "%s", error);
        free(text);
    }
    for (int i = 0; i < 4; i++)
        free(texts[i]);
}

//  `tollgate ledger check` over HTTP: 200 when every invariant holds, 409
//  with the report when one does not.
void admin_ledger_check(admin_call_t *call)
{
    char *report = NULL;
    int rc = proto_ledger_check_run(call->db, &report);
    json_t *answer = json_pack("{s:b, s:s}", "ok", rc == 0, "report", report ? report : "");
    free(report);
    admin_respond_json(call, rc == 0 ? 200 : 409, answer);
}

void admin_status(admin_call_t *call)
{
    admin_respond_query(call, 200,
                        "SELECT json_build_object('time', now(), 'counts', json_build_object("
                        "'accounts', (SELECT count(*) FROM accounts), "
                        "'api_keys', (SELECT count(*) FROM api_keys), "
                        "'providers', (SELECT count(*) FROM providers), "
                        "'provider_keys', (SELECT count(*) FROM provider_keys), "
                        "'models', (SELECT count(*) FROM models), "
                        "'routes', (SELECT count(*) FROM routes), "
                        "'usage', (SELECT count(*) FROM usage), "
                        "'journal_entries', (SELECT count(*) FROM journal_entries)))",
                        0, NULL, "status");
}

// ---------------------------------------------------------------------------
//  The audit log

void admin_audit_list(admin_call_t *call)
{
    char before[24], actor[256], action[128], limit[24];
    bool has_before = false, has_actor = false, has_action = false;
    if (admin_query_opt(call, "before", before, sizeof before, &has_before) != 0 ||
        admin_query_opt(call, "actor", actor, sizeof actor, &has_actor) != 0 ||
        admin_query_opt(call, "action", action, sizeof action, &has_action) != 0 ||
        admin_query_limit(call, S_AUDIT_LIMIT, limit) != 0)
        return;
    if (has_before && !admin_is_id(before)) {
        admin_invalid(call, "'before' must be an audit entry id (the next_before of a page)");
        return;
    }
    //  Newest first; next_before is the id to pass for the next (older)
    //  page, set when this page is full. An actor is "user:NAME",
    //  "token:NAME", "bootstrap", "anonymous", or a bare NAME for either of
    //  the first two; an action also matches its sub-actions ("provider").
    const char *params[] = {has_before ? before : NULL, has_actor ? actor : NULL,
                            has_action ? action : NULL, limit};
    admin_respond_query(
        call, 200,
        "SELECT json_build_object('data', coalesce(json_agg(j ORDER BY id DESC), '[]'::json), "
        "'next_before', CASE WHEN count(*) = $4::bigint THEN min(id) END) FROM (SELECT a.id, "
        "json_build_object('id', a.id, 'at', a.at, 'actor', a.actor, 'actor_kind', a.actor_kind, "
        "'role', a.role, 'client_ip', a.client_ip, 'request_id', a.request_id, 'action', "
        "a.action, 'method', a.method, 'route', a.route, 'target', a.target, 'request', "
        "a.request, 'before', a.before, 'after', a.after) AS j FROM audit_log a WHERE "
        "($1::bigint IS NULL OR a.id < $1::bigint) AND ($2::text IS NULL OR a.actor = $2 OR "
        "a.actor IN ('user:' || $2, 'token:' || $2)) AND ($3::text IS NULL OR a.action = $3 "
        "OR a.action LIKE $3 || '.%') ORDER BY a.id DESC LIMIT $4::bigint) s",
        4, params, "audit");
}

// ---------------------------------------------------------------------------
//  Request logs: usage rows with names, and what the capture stored

#define S_REQUEST_JSON                                                                             \
    "json_build_object('request_id', u.request_id, 'started_at', u.started_at, "                   \
    "'recorded_at', u.recorded_at, 'account_id', u.account_id, 'account', ra.name, "               \
    "'api_key_id', u.api_key_id, 'key_prefix', rk.key_prefix, 'model', u.model, "                  \
    "'provider_id', u.provider_id, 'provider', rp.name, 'provider_key_id', u.provider_key_id, "    \
    "'upstream_model', u.upstream_model, 'status', u.status, 'attempts', u.attempts, "             \
    "'latency_ms', u.latency_ms, 'ttfb_ms', u.ttfb_ms, 'tokens_in', u.tokens_in, "                 \
    "'tokens_out', u.tokens_out, 'tokens_cache_read', u.tokens_cache_read, "                       \
    "'tokens_cache_write', u.tokens_cache_write, "                                                 \
    "'tokens_cache_write_1h', u.tokens_cache_write_1h, 'cost_micros', u.cost_micros, "             \
    "'images', u.images, 'estimated', u.estimated, 'has_details', EXISTS (SELECT 1 FROM "          \
    "request_details d "                                                                           \
    "WHERE d.request_id = u.request_id))"
#define S_REQUEST_FROM                                                                             \
    " FROM usage u LEFT JOIN accounts ra ON ra.id = u.account_id LEFT JOIN api_keys rk ON "        \
    "rk.id = u.api_key_id LEFT JOIN providers rp ON rp.id = u.provider_id "

//  GET /admin/requests?account=&key=&model=&provider=&status=&errors=1&since=&before=&limit=
void admin_request_list(admin_call_t *call)
{
    char account_name[256], key[24], model[256], provider_name[256], status[8], errors[8];
    char since[80], before[80], limit[24], account[24] = "", provider[24] = "";
    bool has_account, has_key, has_model, has_provider, has_status, has_errors, has_since,
        has_before;
    if (admin_query_opt(call, "account", account_name, sizeof account_name, &has_account) ||
        admin_query_opt(call, "key", key, sizeof key, &has_key) ||
        admin_query_opt(call, "model", model, sizeof model, &has_model) ||
        admin_query_opt(call, "provider", provider_name, sizeof provider_name, &has_provider) ||
        admin_query_opt(call, "status", status, sizeof status, &has_status) ||
        admin_query_opt(call, "errors", errors, sizeof errors, &has_errors) ||
        admin_query_opt(call, "since", since, sizeof since, &has_since) ||
        admin_query_opt(call, "before", before, sizeof before, &has_before) ||
        admin_query_limit(call, S_USAGE_LIMIT, limit))
        return;
    if (has_key && !admin_is_id(key)) {
        admin_invalid(call, "'key' must be a client key id");
        return;
    }
    char *end = NULL;
    long code = has_status ? strtol(status, &end, 10) : 0;
    if (has_status && (!*status || *end || code < 100 || code > 599)) {
        admin_invalid(call, "'status' must be an HTTP status from 100 to 599");
        return;
    }
    if ((has_account && admin_resolve(call, &admin_accounts, account_name, account) != 0) ||
        (has_provider && admin_resolve(call, &admin_providers, provider_name, provider) != 0))
        return;
    bool only_errors = has_errors && (strcmp(errors, "1") == 0 || strcmp(errors, "true") == 0);
    const char *params[] = {
        has_account ? account : NULL,   has_key ? key : NULL,       has_model ? model : NULL,
        has_provider ? provider : NULL, has_status ? status : NULL, only_errors ? "true" : "false",
        has_since ? since : NULL,       has_before ? before : NULL, limit};
    admin_respond_query(
        call, 200,
        "SELECT json_build_object('data', coalesce(json_agg(j ORDER BY started_at "
        "DESC, request_id DESC), '[]'::json), 'next_before', CASE WHEN count(*) = "
        "$9::bigint THEN min(started_at) END) FROM (SELECT u.started_at, u.request_id, "
        "" S_REQUEST_JSON " AS j" S_REQUEST_FROM
        "WHERE ($1::bigint IS NULL OR u.account_id = $1::bigint) AND ($2::bigint IS "
        "NULL OR u.api_key_id = $2::bigint) AND ($3::text IS NULL OR u.model = $3) "
        "AND ($4::bigint IS NULL OR u.provider_id = $4::bigint) AND ($5::int IS NULL "
        "OR u.status = $5::int) AND (NOT $6::bool OR u.status >= 400) AND "
        "($7::timestamptz IS NULL OR u.started_at >= $7::timestamptz) AND "
        "($8::timestamptz IS NULL OR u.started_at < $8::timestamptz) ORDER BY "
        "u.started_at DESC, u.request_id DESC LIMIT $9::bigint) s",
        9, params, "requests");
}

//  GET /admin/requests/{id}: one request with the detail its capture kept.
void admin_request_get(admin_call_t *call)
{
    const char *id = call->params[0];
    if (strlen(id) > 128 || !admin_printable(id)) {
        admin_not_found(call, "request not found");
        return;
    }
    admin_respond_query(
        call, 200,
        "SELECT (" S_REQUEST_JSON "::jsonb || jsonb_build_object('details', (SELECT "
        "json_build_object('level', d.level, 'captured_at', d.captured_at, "
        "'client_protocol', d.client_protocol, 'request_headers', d.request_headers, "
        "'response_headers', d.response_headers, 'request_body', d.request_body, "
        "'response_body', d.response_body, 'request_truncated', d.request_truncated, "
        "'response_truncated', d.response_truncated) FROM request_details d WHERE "
        "d.request_id = u.request_id)) || jsonb_build_object('spans', " PROTO_TRACE_TIMELINE_SQL
        "))::json" S_REQUEST_FROM "WHERE u.request_id = $1",
        1, (const char *[]){id}, "request");
}

// ---------------------------------------------------------------------------
//  Settings: the request-log detail level

static const char *const s_log_levels[] = {"base", "headers", "full", NULL};

static const admin_field_t s_request_log_fields[] = {
    {.field = "level", .kind = ADMIN_F_ENUM, .choices = s_log_levels},
    {.field = "max_body_bytes", .kind = ADMIN_F_INT, .min = 0, .max = 16 * 1024 * 1024},
    {.field = "retention_days", .kind = ADMIN_F_INT, .min = 1, .max = 3650},
    {.field = NULL}};

#define S_REQUEST_LOG_DEFAULT                                                                      \
    "'{\"level\": \"base\", \"max_body_bytes\": 65536, \"retention_days\": 30}'::jsonb"
#define S_REQUEST_LOG_GET                                                                          \
    "SELECT (" S_REQUEST_LOG_DEFAULT " || coalesce((SELECT value FROM settings WHERE key = "       \
    "'request_log'), '{}'::jsonb))::json"

void admin_request_log_get(admin_call_t *call)
{
    admin_respond_query(call, 200, S_REQUEST_LOG_GET, 0, NULL, "settings");
}

//  PATCH /admin/settings/request-log: merges the given fields into the
//  stored value. The settings trigger tells every program.
void admin_request_log_patch(admin_call_t *call)
{
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    char *before = NULL;
    PGresult *result = NULL;
    if (admin_read(call, s_request_log_fields, v, ADMIN_CREATE) != 0)
        goto done;
    if (admin_present(s_request_log_fields, v) == 0) {
        admin_invalid(call, "nothing to change");
        goto done;
    }
    char *change = json_dumps(call->body, JSON_COMPACT);
    snprintf(call->audit_target, sizeof call->audit_target, "request_log");
    if (admin_begin(call) == 0 && admin_sql_one(call, S_REQUEST_LOG_GET, 0, NULL, &before) == 1 &&
        (result =
             admin_sql(call,
                       "INSERT INTO settings (key, value) VALUES ('request_log', "
                       "" S_REQUEST_LOG_DEFAULT " || $1::jsonb) ON CONFLICT (key) DO UPDATE SET "
                       "value = settings.value || $1::jsonb, updated_at = now()",
                       1, (const char *[]){change}))) {
        call->audit_before = json_loads(before, 0, NULL);
        char *after = NULL;
        if (admin_sql_one(call, S_REQUEST_LOG_GET, 0, NULL, &after) == 1 && after) {
            call->audit_after = json_loads(after, 0, NULL);
            if (admin_commit(call) == 0)
                admin_respond_text(call, 200, after);
        }
        free(after);
    }
    free(change);
done:
    PQclear(result);
    free(before);
    admin_values_free(v, ADMIN_MAX_FIELDS);
}

// ---------------------------------------------------------------------------
//  Settings: the log level every program follows at run time (settings
//  'log_level'; proto_service LISTENs and applies it within milliseconds)

static const char *const s_program_levels[] = {"debug", "info", "warn", "error", "default", NULL};
static const char *const s_program_names[] = {"ingress", "billing", "router", "dispatch",
                                              "health",  "ledger",  NULL};

static const admin_field_t s_log_level_fields[] = {
    {.field = "level", .kind = ADMIN_F_ENUM, .choices = s_program_levels, .required = true},
    {.field = "program", .kind = ADMIN_F_ENUM, .choices = s_program_names},
    {.field = NULL}};

#define S_LOG_LEVEL_GET                                                                            \
    "SELECT ('{\"level\": null, \"programs\": {}}'::jsonb || coalesce((SELECT value FROM "         \
    "settings WHERE key = 'log_level'), '{}'::jsonb))::json"

void admin_log_level_get(admin_call_t *call)
{
    admin_respond_query(call, 200, S_LOG_LEVEL_GET, 0, NULL, "settings");
}

//  PATCH /admin/settings/log-level {level, program?}: sets the level of
//  every program or of one; "default" goes back to the configured log_level.
void admin_log_level_patch(admin_call_t *call)
{
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    char *before = NULL, *after = NULL;
    PGresult *made = NULL, *result = NULL;
    if (admin_read(call, s_log_level_fields, v, ADMIN_CREATE) != 0)
        goto done;
    snprintf(call->audit_target, sizeof call->audit_target, "log_level");
    const char *params[] = {v[0].text, v[1].present ? v[1].text : NULL};
    if (admin_begin(call) == 0 && admin_sql_one(call, S_LOG_LEVEL_GET, 0, NULL, &before) == 1 &&
        (made = admin_sql(call,
                          "INSERT INTO settings (key, value) VALUES ('log_level', '{}') "
                          "ON CONFLICT (key) DO NOTHING",
                          0, NULL)) &&
        (result =
             admin_sql(call,
                       "UPDATE settings SET updated_at = now(), value = CASE "
                       "WHEN $2::text IS NULL AND $1 = 'default' THEN value - 'level' "
                       "WHEN $2::text IS NULL THEN value || jsonb_build_object('level', $1::text) "
                       "WHEN $1 = 'default' THEN value #- ARRAY['programs', $2::text] "
                       "ELSE jsonb_set(value, '{programs}', coalesce(value->'programs', "
                       "'{}'::jsonb) || jsonb_build_object($2::text, $1::text)) END "
                       "WHERE key = 'log_level'",
                       2, params))) {
        call->audit_before = json_loads(before, 0, NULL);
        if (admin_sql_one(call, S_LOG_LEVEL_GET, 0, NULL, &after) == 1 && after) {
            call->audit_after = json_loads(after, 0, NULL);
            if (admin_commit(call) == 0)
                admin_respond_text(call, 200, after);
        }
    }
done:
    PQclear(made);
    PQclear(result);
    free(before);
    free(after);
    admin_values_free(v, ADMIN_MAX_FIELDS);
}
