/*  admin_self: what the console reads for its charts, and the account
    holder's own routes.

    GET /admin/stats?minutes=N: the overview's figures over the last N
    minutes (requests, errors, latency and time-to-first-token percentiles,
    spend, per minute), spend per hour and per day, and the top models,
    accounts and providers, from the usage rows.

    /admin/self...: an account holder (role `account`, scoped to one account
    by admin_users.account_id) sees their own account, its usage and its
    keys, and creates and revokes its keys; nothing else. The account comes
    from the session, never from the request, so no path or body can name
    another one.
*/
#include "admin_handlers.h"
#include "admin_resource.h"
#include "proto_crypto.h"
#include "proto_log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_SQL_MAX 8192
#define S_MINUTES_DEFAULT 60
#define S_MINUTES_MAX 10080 //  a week

//  The statistics of usage rows since now - $1 minutes, of account $2 (or
//  every account when NULL). One statement, so the figures agree.
#define S_STATS_SQL                                                                                \
    "WITH w AS (SELECT u.* FROM usage u WHERE u.started_at > now() - $1::int * interval '1 "       \
    "minute' AND ($2::bigint IS NULL OR u.account_id = $2::bigint)), "                             \
    "d AS (SELECT u.* FROM usage u WHERE u.started_at > date_trunc('day', now()) - interval '13 "  \
    "days' AND ($2::bigint IS NULL OR u.account_id = $2::bigint)) "                                \
    "SELECT json_build_object('minutes', $1::int, 'now', now(), 'totals', (SELECT "                \
    "json_build_object('requests', count(*), 'errors', count(*) FILTER (WHERE status >= 400), "    \
    "'cost_micros', coalesce(sum(cost_micros), 0), 'tokens_in', coalesce(sum(tokens_in), 0), "     \
    "'tokens_out', coalesce(sum(tokens_out), 0), 'images', coalesce(sum(images), 0), "             \
    "'p50_ms', percentile_cont(0.5) WITHIN GROUP "                                                 \
    "(ORDER BY latency_ms), 'p99_ms', percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms), "  \
    "'ttft_p50_ms', percentile_cont(0.5) WITHIN GROUP (ORDER BY ttfb_ms), 'ttft_p99_ms', "         \
    "percentile_cont(0.99) WITHIN GROUP (ORDER BY ttfb_ms)) FROM w), "                             \
    "'series', coalesce((SELECT json_agg(json_build_object('t', extract(epoch FROM b)::bigint, "   \
    "'requests', n, 'errors', e, 'p50_ms', p50, 'p99_ms', p99, 'ttft_p50_ms', t50, "               \
    "'cost_micros', c) ORDER BY b) FROM (SELECT date_trunc('minute', started_at) b, count(*) n, "  \
    "count(*) FILTER (WHERE status >= 400) e, percentile_cont(0.5) WITHIN GROUP (ORDER BY "        \
    "latency_ms) p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) p99, "              \
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY ttfb_ms) t50, sum(cost_micros) c FROM w GROUP "   \
    "BY 1) s), '[]'::json), "                                                                      \
    "'spend_hourly', coalesce((SELECT json_agg(json_build_object('t', extract(epoch FROM b)"       \
    "::bigint, 'cost_micros', c, 'requests', n) ORDER BY b) FROM (SELECT date_trunc('hour', "      \
    "started_at) b, sum(cost_micros) c, count(*) n FROM d WHERE started_at > now() - interval "    \
    "'24 hours' GROUP BY 1) s), '[]'::json), "                                                     \
    "'spend_daily', coalesce((SELECT json_agg(json_build_object('t', extract(epoch FROM b)"        \
    "::bigint, 'cost_micros', c, 'requests', n) ORDER BY b) FROM (SELECT date_trunc('day', "       \
    "started_at) b, sum(cost_micros) c, count(*) n FROM d GROUP BY 1) s), '[]'::json), "           \
    "'top_models', coalesce((SELECT json_agg(x) FROM (SELECT model AS name, count(*) AS "          \
    "requests, sum(cost_micros) AS cost_micros FROM w GROUP BY model ORDER BY 2 DESC, 1 LIMIT "    \
    "5) x), '[]'::json), "                                                                         \
    "'top_accounts', coalesce((SELECT json_agg(x) FROM (SELECT a.name, count(*) AS requests, "     \
    "sum(w.cost_micros) AS cost_micros FROM w JOIN accounts a ON a.id = w.account_id GROUP BY "    \
    "a.name ORDER BY 2 DESC, 1 LIMIT 5) x), '[]'::json), "                                         \
    "'top_providers', coalesce((SELECT json_agg(x) FROM (SELECT p.name, count(*) AS requests, "    \
    "count(*) FILTER (WHERE w.status >= 400) AS errors FROM w JOIN providers p ON p.id = "         \
    "w.provider_id GROUP BY p.name ORDER BY 2 DESC, 1 LIMIT 5) x), '[]'::json))"

//  ?minutes= (1..a week, default an hour) as text (16 bytes).
static int s_minutes(admin_call_t *call, char *text)
{
    char value[16];
    bool present = false;
    if (admin_query_opt(call, "minutes", value, sizeof value, &present) != 0)
        return -1;
    long minutes = S_MINUTES_DEFAULT;
    if (present) {
        char *end;
        minutes = strtol(value, &end, 10);
        if (!*value || *end || minutes < 1 || minutes > S_MINUTES_MAX) {
            admin_invalid(call, "'minutes' must be an integer from 1 to %d", S_MINUTES_MAX);
            return -1;
        }
    }
    snprintf(text, 16, "%ld", minutes);
    return 0;
}

void admin_stats(admin_call_t *call)
{
    char minutes[16];
    if (s_minutes(call, minutes) == 0)
        admin_respond_query(call, 200, S_STATS_SQL, 2, (const char *[]){minutes, NULL}, "stats");
}

// ---------------------------------------------------------------------------
//  The account holder's own routes

//  The caller's account, or -1 after answering: these routes are for
//  account holders only.
static int s_own(admin_call_t *call, const char **account)
{
    if (call->who.role != ADMIN_ACCOUNT || !call->who.account_id[0]) {
        admin_error(call, 403, "permission_error",
                    "these routes are an account holder's own; staff use /admin/accounts");
        return -1;
    }
    *account = call->who.account_id;
    return 0;
}

//  GET /admin/self: the caller's account.
void admin_self(admin_call_t *call)
{
    const char *account;
    char sql[S_SQL_MAX];
    if (s_own(call, &account) != 0)
        return;
    admin_resource_by_id(&admin_accounts, sql, sizeof sql);
    admin_respond_query(call, 200, sql, 1, (const char *[]){account}, "account");
}

//  GET /admin/self/usage?minutes=: the overview's figures, of this account.
void admin_self_usage(admin_call_t *call)
{
    const char *account;
    char minutes[16];
    if (s_own(call, &account) == 0 && s_minutes(call, minutes) == 0)
        admin_respond_query(call, 200, S_STATS_SQL, 2, (const char *[]){minutes, account}, "stats");
}

//  GET /admin/self/keys: this account's keys.
void admin_self_keys(admin_call_t *call)
{
    const char *account;
    char object[S_SQL_MAX], sql[S_SQL_MAX + 512];
    if (s_own(call, &account) != 0)
        return;
    int rc = admin_resource_object(&admin_keys, object, sizeof object);
    assert(rc > 0);
    (void)rc;
    snprintf(sql, sizeof sql,
             "SELECT json_build_object('data', coalesce(json_agg(%s ORDER BY k.id), '[]'::json)) "
             "FROM %s WHERE k.account_id = $1::bigint",
             object, admin_keys.from);
    admin_respond_query(call, 200, sql, 1, (const char *[]){account}, "keys");
}

static const admin_field_t s_self_key_fields[] = {
    {.field = "name", .kind = ADMIN_F_TEXT, .min = 0, .max = 200},
    {.field = "models", .kind = ADMIN_F_NAMES, .nullable = true},
    {.field = "expires_at", .kind = ADMIN_F_TIME, .nullable = true},
    {.field = NULL}};

//  POST /admin/self/keys {name?, models?, expires_at?}: a key of this
//  account, shown once. The body is the generic create's, with the account
//  set from the session.
void admin_self_key_create(admin_call_t *call)
{
    const char *account;
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    char *id = NULL, sql[S_SQL_MAX];
    if (s_own(call, &account) != 0 || admin_read(call, s_self_key_fields, v, ADMIN_CREATE) != 0)
        goto done;
    json_t *body = json_deep_copy(call->body);
    json_object_set_new(body, "account", json_integer(strtoll(account, NULL, 10)));
    admin_resource_by_id(&admin_keys, sql, sizeof sql);
    if (admin_begin(call) == 0 && admin_resource_add(call, &admin_keys, NULL, body, "", &id) == 0 &&
        admin_after(call, sql, id) == 0 && admin_commit(call) == 0) {
        char *text = NULL;
        if (admin_sql_one(call, sql, 1, (const char *[]){id}, &text) == 1 && text) {
            json_t *object = json_loads(text, 0, NULL);
            assert(object);
            json_t *answer =
                json_pack("{s:O,s:s}", "id", json_object_get(object, "id"), "key", call->secret);
            json_object_update_missing(answer, object);
            json_decref(object);
            admin_respond_json(call, 201, answer);
            log_info(call->request->request_id, "admin: key %s made by account holder %s", id,
                     call->who.actor);
        }
        free(text);
    }
    json_decref(body);
done:
    free(id);
    admin_values_free(v, ADMIN_MAX_FIELDS);
}

//  POST /admin/self/keys/{id}/revoke: revokes one of this account's keys; a
//  key of another account is not found.
void admin_self_key_revoke(admin_call_t *call)
{
    const char *account;
    char sql[S_SQL_MAX], *found = NULL;
    if (s_own(call, &account) != 0 || admin_path_id(call, "key") != 0)
        return;
    admin_resource_by_id(&admin_keys, sql, sizeof sql);
    if (admin_begin(call) != 0 || admin_before(call, sql, call->params[0]) != 0)
        return;
    int rc = admin_sql_one(call,
                           "UPDATE api_keys SET status = 'revoked', updated_at = now() WHERE id = "
                           "$1::bigint AND account_id = $2::bigint RETURNING id",
                           2, (const char *[]){call->params[0], account}, &found);
    if (rc == 0)
        admin_not_found(call, "key not found");
    else if (rc == 1 && admin_after(call, sql, call->params[0]) == 0 && admin_commit(call) == 0)
        admin_respond_query(call, 200, sql, 1, call->params, "key");
    free(found);
}
