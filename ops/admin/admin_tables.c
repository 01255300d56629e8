/*  admin_tables: the resources of the admin API, one description each
    (admin_resource.h), and the few hooks that are really theirs.

    Columns are the JSON every endpoint answers with, as PostgreSQL builds
    it; the aliases are those of each `from`: p providers, k provider_keys
    or api_keys, m models, r routes or mapping_rules (rp their provider),
    a accounts, u admin_users, s admin_sessions, t admin_api_tokens.
*/
#include "admin_handlers.h"
#include "admin_reach.h"
#include "admin_resource.h"
#include "proto_crypto.h"
#include "proto_log.h"

#include <assert.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_HINT_MIN_SECRET 12  //  shorter secrets get no hint characters
#define S_TOKEN_PREFIX_LEN 12 //  "tgt_" and 8 hex digits shown in lists

static const char *const s_statuses[] = {"active", "disabled", NULL};
static const char *const s_key_statuses[] = {"active", "disabled", "revoked", NULL};
static const char *const s_protocols[] = {"openai", "openai-responses", "anthropic", "gemini",
                                          NULL};
static const char *const s_schedulings[] = {"priority", "key_priority", "weighted", "latency",
                                            "cost",     "reliability",  "balanced", NULL};
static const char *const s_rule_kinds[] = {
    "exact", "prefix", "keyword", "regex", "exclude_keyword", "include", "exclude_provider", NULL};
static const char *const s_roles[] = {"owner", "operator", "viewer", NULL};
static const char *const s_user_roles[] = {"owner", "operator", "viewer", "account", NULL};

#define S_PRIORITY(uses)                                                                           \
    {                                                                                              \
        .field = "priority", .column = "priority", .kind = ADMIN_F_INT, .use = (uses),             \
        .min = -ADMIN_INT_MAX, .max = ADMIN_INT_MAX                                                \
    }
#define S_WEIGHT(uses)                                                                             \
    {                                                                                              \
        .field = "weight", .column = "weight", .kind = ADMIN_F_INT, .use = (uses), .min = 0,       \
        .max = ADMIN_WEIGHT_MAX                                                                    \
    }
#define S_STATUS(allowed)                                                                          \
    {                                                                                              \
        .field = "status", .column = "status", .kind = ADMIN_F_ENUM, .use = ADMIN_PATCH,           \
        .choices = (allowed)                                                                       \
    }
#define S_SET(name, sql_cast)                                                                      \
    {                                                                                              \
        .field = name, .column = name, .kind = ADMIN_F_SET, .cast = sql_cast                       \
    }

//  Refuse, instead of dropping, what a conversion to another protocol
//  cannot carry (docs/conversion.md).
#define S_STRICT                                                                                   \
    {                                                                                              \
        .field = "strict_conversion", .column = "strict_conversion", .kind = ADMIN_F_BOOL,         \
        .use = ADMIN_PATCH                                                                         \
    }

//  Sets an ADMIN_F_SET value to a copy of text.
static void s_set(const admin_field_t *fields, admin_value_t *values, const char *name,
                  const char *text)
{
    admin_value_t *value = ADMIN_VALUE(fields, values, name);
    free(value->owned);
    value->owned = strdup(text);
    assert(value->owned);
    value->text = value->owned;
    value->present = true;
}

#define S_PRICE(name)                                                                              \
    {                                                                                              \
        .field = name, .column = name "_micros", .kind = ADMIN_F_MICROS, .use = ADMIN_BOTH,        \
        .min = 0, .max = ADMIN_PRICE_MAX, .micros = name "_micros"                                 \
    }

#define S_PRICE_OR_NULL(name)                                                                      \
    {                                                                                              \
        .field = name, .column = name "_micros", .kind = ADMIN_F_MICROS, .use = ADMIN_BOTH,        \
        .min = 0, .max = ADMIN_PRICE_MAX, .micros = name "_micros", .nullable = true               \
    }

// ---------------------------------------------------------------------------
//  Providers

static const admin_column_t s_provider_columns[] = {
    {"id", "p.id", ADMIN_COL_ID, "ID", NULL},
    {"name", "p.name", ADMIN_COL_TEXT, "NAME", NULL},
    {"protocol", "p.protocol", ADMIN_COL_TEXT, "PROTOCOL", NULL},
    {"base_url", "p.base_url", ADMIN_COL_TEXT, "BASE URL", NULL},
    {"priority", "p.priority", ADMIN_COL_INT, "PRIORITY", NULL},
    {"weight", "p.weight", ADMIN_COL_INT, "WEIGHT", NULL},
    {"status", "p.status", ADMIN_COL_TEXT, "STATUS", NULL},
    {"strict_conversion", "p.strict_conversion", ADMIN_COL_BOOL, NULL, NULL},
    {"headers", "p.headers", ADMIN_COL_JSON, NULL, NULL},
    {"proxies", "to_json(p.proxy_hints)", ADMIN_COL_LIST, NULL, NULL},
    {"path", "p.path", ADMIN_COL_TEXT, NULL, NULL},
    {"blocked_models", "to_json(p.blocked_models)", ADMIN_COL_LIST, NULL, NULL},
    {"failover_statuses", "to_json(p.failover_statuses)", ADMIN_COL_JSON, NULL, NULL},
    {"return_statuses", "to_json(p.return_statuses)", ADMIN_COL_JSON, NULL, NULL},
    {"account_id", "p.account_id", ADMIN_COL_ID, NULL, NULL},
    {"account", "(SELECT pa.name FROM accounts pa WHERE pa.id = p.account_id)", ADMIN_COL_TEXT,
     "ACCOUNT", NULL},
    {"default_price_in_micros", "p.default_price_in_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"default_price_out_micros", "p.default_price_out_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"default_price_cache_read_micros", "p.default_price_cache_read_micros", ADMIN_COL_MICROS, NULL,
     NULL},
    {"default_price_cache_write_micros", "p.default_price_cache_write_micros", ADMIN_COL_MICROS,
     NULL, NULL},
    {"default_price_request_micros", "p.default_price_request_micros", ADMIN_COL_MICROS, NULL,
     NULL},
    {"active_keys",
     "(SELECT count(*) FROM provider_keys pk WHERE pk.provider_id = p.id AND pk.status = "
     "'active')",
     ADMIN_COL_INT, "KEYS", NULL},
    {"created_at", "p.created_at", ADMIN_COL_TIME, NULL, NULL},
    {"updated_at", "p.updated_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_provider_fields[] = {
    {.field = "name",
     .column = "name",
     .kind = ADMIN_F_PNAME,
     .use = ADMIN_CREATE,
     .required = true},
    {.field = "protocol",
     .column = "protocol",
     .kind = ADMIN_F_ENUM,
     .use = ADMIN_CREATE,
     .choices = s_protocols,
     .required = true},
    {.field = "base_url",
     .column = "base_url",
     .kind = ADMIN_F_URL,
     .use = ADMIN_BOTH,
     .required = true},
    S_PRIORITY(ADMIN_BOTH),
    S_WEIGHT(ADMIN_BOTH),
    S_STATUS(s_statuses),
    S_STRICT,
    //  How it is reached (admin_reach.h).
    {.field = "headers",
     .column = "headers",
     .kind = ADMIN_F_ANY,
     .use = ADMIN_BOTH,
     .cast = "jsonb"},
    {.field = "proxies", .kind = ADMIN_F_ANY, .use = ADMIN_BOTH},
    {.field = "path",
     .column = "path",
     .kind = ADMIN_F_TEXT,
     .use = ADMIN_BOTH,
     .min = 1,
     .max = 500,
     .nullable = true},
    {.field = "blocked_models",
     .column = "blocked_models",
     .kind = ADMIN_F_NAMES,
     .use = ADMIN_BOTH},
    {.field = "failover_statuses",
     .column = "failover_statuses",
     .kind = ADMIN_F_ANY,
     .use = ADMIN_BOTH,
     .cast = "integer[]"},
    {.field = "return_statuses",
     .column = "return_statuses",
     .kind = ADMIN_F_ANY,
     .use = ADMIN_BOTH,
     .cast = "integer[]"},
    //  Bring your own key: the owning account.
    {.field = "account",
     .column = "account_id",
     .kind = ADMIN_F_REF,
     .use = ADMIN_BOTH,
     .nullable = true,
     .ref = &admin_accounts},
    //  What the models it lists cost when no logical model has their name
    //  (migration 0019); null: it adds no names (a name other providers' prices admit may still be
    //  served through it, charged at their highest).
    S_PRICE_OR_NULL("default_price_in"),
    S_PRICE_OR_NULL("default_price_out"),
    S_PRICE_OR_NULL("default_price_cache_read"),
    S_PRICE_OR_NULL("default_price_cache_write"),
    S_PRICE_OR_NULL("default_price_request"),
    S_SET("proxies_sealed", "bytea"),
    S_SET("proxies_nonce", "bytea"),
    S_SET("proxy_hints", "text[]"),
    {.field = NULL}};

//  Default input and output prices go together (the schema holds them so):
//  half a price would serve names at a price nobody chose. On an update the
//  one not given is the stored one.
static int s_provider_default_prices(admin_call_t *call, const char *id, admin_value_t *values)
{
    const admin_value_t *in = ADMIN_VALUE(s_provider_fields, values, "default_price_in");
    const admin_value_t *out = ADMIN_VALUE(s_provider_fields, values, "default_price_out");
    if (!in->present && !out->present)
        return 0;
    bool in_set = in->present ? in->text != NULL : false;
    bool out_set = out->present ? out->text != NULL : false;
    if (id && (!in->present || !out->present)) {
        char *stored = NULL;
        if (admin_sql_one(call,
                          in->present ? "SELECT (default_price_out_micros IS NOT NULL)::text "
                                        "FROM providers WHERE id = $1::bigint"
                                      : "SELECT (default_price_in_micros IS NOT NULL)::text "
                                        "FROM providers WHERE id = $1::bigint",
                          1, (const char *[]){id}, &stored) < 0)
            return -1;
        bool set = stored && strcmp(stored, "true") == 0;
        free(stored);
        if (in->present)
            out_set = set;
        else
            in_set = set;
    }
    if (in_set == out_set)
        return 0;
    admin_invalid(call,
                  "invalid value for '%s': default_price_in and default_price_out are "
                  "set together (both, or both null)",
                  in_set ? "default_price_out" : "default_price_in");
    return -1;
}

static int s_provider_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    (void)parent;
    if (admin_reach_check(call, NULL, s_provider_fields, values) != 0)
        return -1;
    return s_provider_default_prices(call, NULL, values);
}

//  A provider given to an account, or given back to the operator, takes its
//  keys' multipliers along where they are at the side's default: a key at
//  list price (1) goes to 0 with the provider to an account (the account
//  pays its provider, as a key made there starts at 0), a key at 0 back to
//  1 with the provider to the operator (else every account would be served
//  through it for free). A key given another multiplier keeps it; between
//  two accounts nothing changes. In the PATCH's transaction.
static int s_provider_owner_keys(admin_call_t *call, const char *id, admin_value_t *values)
{
    const admin_value_t *account = ADMIN_VALUE(s_provider_fields, values, "account");
    if (!account->present)
        return 0;
    //  Each key moved gets its own provider_key.update audit row (before
    //  and after its multiplier), in this transaction.
    PGresult *result = admin_sql(
        call,
        "UPDATE provider_keys k SET multiplier_ppm = CASE WHEN $2::bigint IS NULL THEN 1000000 "
        "ELSE 0 END, updated_at = now() FROM providers p WHERE p.id = $1::bigint AND "
        "k.provider_id = p.id AND (p.account_id IS NULL) <> ($2::bigint IS NULL) AND "
        "k.multiplier_ppm = CASE WHEN p.account_id IS NULL THEN 1000000 ELSE 0 END "
        "RETURNING k.id, json_build_object('id', k.id, 'provider_id', k.provider_id, "
        "'provider', p.name, 'name', k.name, 'multiplier_ppm', CASE WHEN p.account_id IS NULL "
        "THEN 1000000 ELSE 0 END), json_build_object('id', k.id, 'provider_id', k.provider_id, "
        "'provider', p.name, 'name', k.name, 'multiplier_ppm', k.multiplier_ppm)",
        2, (const char *[]){id, account->text});
    if (!result)
        return -1;
    int rows = PQntuples(result);
    int rc = 0;
    for (int row = 0; row < rows && rc == 0; row++)
        rc = admin_audit_also(call, "provider_key.update", PQgetvalue(result, row, 0),
                              PQgetvalue(result, row, 1), PQgetvalue(result, row, 2));
    if (rows > 0 && rc == 0)
        log_info(call->request->request_id,
                 "admin: provider %s %s: %d of its keys now at multiplier %s", id,
                 account->text ? "given to an account" : "given back to the operator", rows,
                 account->text ? "0" : "1");
    PQclear(result);
    return rc;
}

static int s_provider_check(admin_call_t *call, const char *id, admin_value_t *values)
{
    if (admin_reach_check(call, id, s_provider_fields, values) != 0 ||
        s_provider_default_prices(call, id, values) != 0)
        return -1;
    return s_provider_owner_keys(call, id, values);
}

const admin_resource_t admin_providers = {
    .name = "provider",
    .title = "provider",
    .collection = "/admin/providers",
    .item = "/admin/providers/{provider}",
    .table = "providers",
    .from = "providers p",
    .alias = "p",
    .name_column = "name",
    .order = "p.priority DESC, p.id",
    .columns = s_provider_columns,
    .fields = s_provider_fields,
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_CRUD,
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "status = 'disabled'",
    .remove_verb = "disable",
    .actions = {"provider.create", "provider.update", "provider.disable"},
    .updated_at = true,
    .prepare = s_provider_prepare,
    .check = s_provider_check,
};

// ---------------------------------------------------------------------------
//  Per (provider, upstream model): the protocol and path where they are not
//  the provider's (migration 0012)

static const admin_column_t s_model_setting_columns[] = {
    {"id", "ms.id", ADMIN_COL_ID, "ID", NULL},
    {"provider_id", "ms.provider_id", ADMIN_COL_ID, NULL, NULL},
    {"provider", "p.name", ADMIN_COL_TEXT, "PROVIDER", NULL},
    {"model", "ms.model", ADMIN_COL_TEXT, "MODEL", NULL},
    {"protocol", "ms.protocol", ADMIN_COL_TEXT, "PROTOCOL", NULL},
    {"path", "ms.path", ADMIN_COL_TEXT, "PATH", NULL},
    {"created_at", "ms.created_at", ADMIN_COL_TIME, NULL, NULL},
    {"updated_at", "ms.updated_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_model_setting_fields[] = {{.field = "model",
                                                        .column = "model",
                                                        .kind = ADMIN_F_TEXT,
                                                        .use = ADMIN_CREATE,
                                                        .min = 1,
                                                        .max = 127,
                                                        .required = true},
                                                       {.field = "protocol",
                                                        .column = "protocol",
                                                        .kind = ADMIN_F_ENUM,
                                                        .use = ADMIN_BOTH,
                                                        .choices = s_protocols,
                                                        .nullable = true},
                                                       {.field = "path",
                                                        .column = "path",
                                                        .kind = ADMIN_F_TEXT,
                                                        .use = ADMIN_BOTH,
                                                        .min = 1,
                                                        .max = 500,
                                                        .nullable = true},
                                                       {.field = NULL}};

static int s_model_setting_path(admin_call_t *call, admin_value_t *values)
{
    const admin_value_t *path = ADMIN_VALUE(s_model_setting_fields, values, "path");
    return path->present && path->text ? admin_reach_path(call, "path", path->text) : 0;
}

static int s_model_setting_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    (void)parent;
    return s_model_setting_path(call, values);
}

static int s_model_setting_check(admin_call_t *call, const char *id, admin_value_t *values)
{
    (void)id;
    return s_model_setting_path(call, values);
}

const admin_resource_t admin_model_settings = {
    .name = "provider_model",
    .title = "provider model setting",
    .collection = "/admin/providers/{provider}/model-settings",
    .item = "/admin/provider-model-settings/{id}",
    .table = "provider_model_settings",
    .from = "provider_model_settings ms JOIN providers p ON p.id = ms.provider_id",
    .alias = "ms",
    .order = "ms.provider_id, ms.model",
    .columns = s_model_setting_columns,
    .fields = s_model_setting_fields,
    .parent = &admin_providers,
    .parent_column = "provider_id",
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_BIT(ADMIN_OP_LIST) | ADMIN_BIT(ADMIN_OP_CREATE) | ADMIN_BIT(ADMIN_OP_GET) |
           ADMIN_BIT(ADMIN_OP_PATCH) | ADMIN_BIT(ADMIN_OP_DELETE),
    .remove = ADMIN_REMOVE_ROW,
    .remove_verb = "delete",
    .actions = {"provider_model.create", "provider_model.update", "provider_model.delete"},
    .updated_at = true,
    .prepare = s_model_setting_prepare,
    .check = s_model_setting_check,
};

// ---------------------------------------------------------------------------
//  Provider keys: the secret is sealed under secret_key before it reaches
//  the database, and never returned or logged

static const admin_column_t s_provider_key_columns[] = {
    {"id", "k.id", ADMIN_COL_ID, "ID", NULL},
    {"provider_id", "k.provider_id", ADMIN_COL_ID, NULL, NULL},
    {"provider", "p.name", ADMIN_COL_TEXT, "PROVIDER", NULL},
    {"name", "k.name", ADMIN_COL_TEXT, "NAME", NULL},
    {"secret_hint", "k.secret_hint", ADMIN_COL_TEXT, "SECRET", NULL},
    {"priority", "k.priority", ADMIN_COL_INT, "PRIORITY", NULL},
    {"weight", "k.weight", ADMIN_COL_INT, "WEIGHT", NULL},
    {"status", "k.status", ADMIN_COL_TEXT, "STATUS", NULL},
    {"disabled_reason", "k.disabled_reason", ADMIN_COL_TEXT, NULL, NULL},
    {"multiplier_ppm", "k.multiplier_ppm", ADMIN_COL_INT, NULL, NULL},
    {"capabilities", "to_json(k.capabilities)", ADMIN_COL_LIST, NULL, NULL},
    {"max_rps", "k.max_rps", ADMIN_COL_INT, NULL, NULL},
    {"max_concurrent", "k.max_concurrent", ADMIN_COL_INT, NULL, NULL},
    {"created_at", "k.created_at", ADMIN_COL_TIME, NULL, NULL},
    {"updated_at", "k.updated_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_provider_key_fields[] = {
    {.field = "secret",
     .kind = ADMIN_F_TEXT,
     .use = ADMIN_CREATE,
     .min = 1,
     .max = 8192,
     .required = true},
    {.field = "name",
     .column = "name",
     .kind = ADMIN_F_TEXT,
     .use = ADMIN_BOTH,
     .min = 0,
     .max = 200},
    S_PRIORITY(ADMIN_BOTH),
    S_WEIGHT(ADMIN_BOTH),
    {.field = "multiplier_ppm",
     .column = "multiplier_ppm",
     .kind = ADMIN_F_INT,
     .use = ADMIN_BOTH,
     .min = 0,
     .max = ADMIN_INT_MAX * INT64_C(1000)},
    S_STATUS(s_statuses),
    {.field = "disabled_reason",
     .column = "disabled_reason",
     .kind = ADMIN_F_TEXT,
     .use = ADMIN_PATCH,
     .min = 0,
     .max = 1000,
     .nullable = true},
    {.field = "capabilities", .column = "capabilities", .kind = ADMIN_F_TAGS, .use = ADMIN_PATCH},
    {.field = "max_rps",
     .column = "max_rps",
     .kind = ADMIN_F_INT,
     .use = ADMIN_PATCH,
     .min = 1,
     .max = ADMIN_INT_MAX,
     .nullable = true},
    {.field = "max_concurrent",
     .column = "max_concurrent",
     .kind = ADMIN_F_INT,
     .use = ADMIN_PATCH,
     .min = 1,
     .max = ADMIN_INT_MAX,
     .nullable = true},
    S_SET("secret_sealed", "bytea"),
    S_SET("secret_nonce", "bytea"),
    S_SET("secret_hint", NULL),
    {.field = NULL}};

//  "…" and the secret's last 4 characters, or just "…" for a secret so
//  short that 4 characters would give too much of it away.
static void s_secret_hint(const char *secret, char *hint, size_t size)
{
    size_t length = strlen(secret);
    snprintf(hint, size, "\u2026%s", length >= S_HINT_MIN_SECRET ? secret + length - 4 : "");
}

//  Bytes as a bytea hex literal ("\x…"). Caller frees.
static char *s_bytea(const uint8_t *bytes, size_t size)
{
    char *text = malloc(size * 2 + 3);
    assert(text);
    strcpy(text, "\\x");
    for (size_t i = 0; i < size; i++)
        sprintf(text + 2 + i * 2, "%02x", bytes[i]);
    return text;
}

//  Seals the secret under secret_key into secret_sealed and secret_nonce.
static int s_provider_key_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    const admin_field_t *fields = s_provider_key_fields;
    //  A key of an account's own provider is at multiplier 0 unless given
    //  one: the account pays its provider, not our prices.
    if (!ADMIN_VALUE(fields, values, "multiplier_ppm")->present) {
        char *owned = NULL;
        if (admin_sql_one(call,
                          "SELECT (account_id IS NOT NULL)::text FROM providers "
                          "WHERE id = $1::bigint",
                          1, (const char *[]){parent}, &owned) < 0)
            return -1;
        if (owned && strcmp(owned, "true") == 0)
            s_set(fields, values, "multiplier_ppm", "0");
        free(owned);
    }
    const char *secret = ADMIN_VALUE(fields, values, "secret")->text;
    const char *key = proto_config_str(call->config, "secret_key");
    if (!key || !*key) {
        admin_error(call, 500, "api_error", "secret_key is not configured");
        return -1;
    }
    size_t length = strlen(secret);
    size_t nonce_size = proto_crypto_nonce_size();
    size_t sealed_size = length + proto_crypto_overhead();
    uint8_t *nonce = malloc(nonce_size), *sealed = malloc(sealed_size);
    assert(nonce && sealed);
    int rc = proto_crypto_seal(key, secret, length, nonce, sealed);
    if (rc == 0) {
        char hint[16];
        s_secret_hint(secret, hint, sizeof hint);
        char *nonce_hex = s_bytea(nonce, nonce_size), *sealed_hex = s_bytea(sealed, sealed_size);
        s_set(fields, values, "secret_nonce", nonce_hex);
        s_set(fields, values, "secret_sealed", sealed_hex);
        s_set(fields, values, "secret_hint", hint);
        free(nonce_hex);
        free(sealed_hex);
    } else {
        log_error(NULL, "admin: secret_key is not 64 hex digits; cannot seal provider secrets");
        admin_error(call, 500, "api_error", "secret_key is not valid");
    }
    free(nonce);
    free(sealed);
    return rc;
}

const admin_resource_t admin_provider_keys = {
    .name = "provider_key",
    .title = "provider key",
    .collection = "/admin/providers/{provider}/keys",
    .item = "/admin/provider-keys/{id}",
    .table = "provider_keys",
    .from = "provider_keys k JOIN providers p ON p.id = k.provider_id",
    .alias = "k",
    .order = "k.priority DESC, k.id",
    .columns = s_provider_key_columns,
    .fields = s_provider_key_fields,
    .parent = &admin_providers,
    .parent_column = "provider_id",
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_CRUD,
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "status = 'disabled'",
    .remove_verb = "disable",
    .actions = {"provider_key.create", "provider_key.update", "provider_key.disable"},
    .updated_at = true,
    .prepare = s_provider_key_prepare,
};

// ---------------------------------------------------------------------------
//  Models and their routes

static const admin_column_t s_route_columns[] = {
    {"id", "r.id", ADMIN_COL_ID, "ID", NULL},
    {"model_id", "r.model_id", ADMIN_COL_ID, NULL, NULL},
    {"provider_id", "r.provider_id", ADMIN_COL_ID, NULL, NULL},
    {"provider", "rp.name", ADMIN_COL_TEXT, "PROVIDER", NULL},
    {"upstream_model", "r.upstream_model", ADMIN_COL_TEXT, "UPSTREAM MODEL", NULL},
    {"priority", "r.priority", ADMIN_COL_INT, "PRIORITY", NULL},
    {"weight", "r.weight", ADMIN_COL_INT, "WEIGHT", NULL},
    {"status", "r.status", ADMIN_COL_TEXT, "STATUS", NULL},
    {"created_at", "r.created_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_route_fields[] = {{.field = "provider",
                                                .column = "provider_id",
                                                .kind = ADMIN_F_REF,
                                                .use = ADMIN_CREATE,
                                                .required = true,
                                                .ref = &admin_providers},
                                               {.field = "upstream_model",
                                                .column = "upstream_model",
                                                .kind = ADMIN_F_TEXT,
                                                .use = ADMIN_BOTH,
                                                .min = 1,
                                                .max = 127},
                                               S_PRIORITY(ADMIN_BOTH),
                                               S_WEIGHT(ADMIN_BOTH),
                                               S_STATUS(s_statuses),
                                               {.field = NULL}};

//  A route's upstream model is the model's own name unless given.
static int s_route_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    const admin_field_t *fields = s_route_fields;
    if (ADMIN_VALUE(fields, values, "upstream_model")->present)
        return 0;
    char *name = NULL;
    if (admin_sql_one(call, "SELECT name FROM models WHERE id = $1::bigint", 1,
                      (const char *[]){parent}, &name) != 1 ||
        !name) {
        free(name);
        if (!call->response)
            admin_not_found(call, "model not found");
        return -1;
    }
    int rc = 0;
    if (strlen(name) > 127) {
        admin_invalid(call, "the model name is too long to be an upstream model; give "
                            "'upstream_model'");
        rc = -1;
    } else
        s_set(fields, values, "upstream_model", name);
    free(name);
    return rc;
}

const admin_resource_t admin_routes = {
    .name = "route",
    .title = "route",
    .collection = "/admin/models/{model*}/routes",
    .item = "/admin/routes/{id}",
    .table = "routes",
    .from = "routes r JOIN providers rp ON rp.id = r.provider_id",
    .alias = "r",
    .order = "r.priority DESC, r.id",
    .columns = s_route_columns,
    .fields = s_route_fields,
    .parent = &admin_models,
    .parent_column = "model_id",
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_BIT(ADMIN_OP_LIST) | ADMIN_BIT(ADMIN_OP_CREATE) | ADMIN_BIT(ADMIN_OP_PATCH) |
           ADMIN_BIT(ADMIN_OP_DELETE),
    .remove = ADMIN_REMOVE_ROW,
    .remove_verb = "delete",
    .actions = {"route.create", "route.update", "route.delete"},
    .prepare = s_route_prepare,
};

static const admin_column_t s_model_columns[] = {
    {"id", "m.id", ADMIN_COL_ID, NULL, NULL},
    {"name", "m.name", ADMIN_COL_TEXT, "NAME", NULL},
    {"status", "m.status", ADMIN_COL_TEXT, "STATUS", NULL},
    {"price_in_micros", "m.price_in_micros", ADMIN_COL_MICROS, "IN/1M", NULL},
    {"price_out_micros", "m.price_out_micros", ADMIN_COL_MICROS, "OUT/1M", NULL},
    {"price_cache_read_micros", "m.price_cache_read_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"price_cache_write_micros", "m.price_cache_write_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"price_cache_write_1h_micros", "m.price_cache_write_1h_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"price_request_micros", "m.price_request_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"price_image_micros", "m.price_image_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"long_context_threshold", "m.long_context_threshold", ADMIN_COL_INT, NULL, NULL},
    {"long_price_in_micros", "m.long_price_in_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"long_price_out_micros", "m.long_price_out_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"max_output_tokens", "m.max_output_tokens", ADMIN_COL_INT, NULL, NULL},
    {"scheduling", "m.scheduling", ADMIN_COL_TEXT, NULL, NULL},
    {"capabilities", "to_json(m.capabilities)", ADMIN_COL_LIST, NULL, NULL},
    {"strict_conversion", "m.strict_conversion", ADMIN_COL_BOOL, NULL, NULL},
    {"force_capabilities", "to_json(m.force_capabilities)", ADMIN_COL_LIST, NULL, NULL},
    {"routes", NULL, ADMIN_COL_CHILD, "ROUTES", &admin_routes},
    {"created_at", "m.created_at", ADMIN_COL_TIME, NULL, NULL},
    {"updated_at", "m.updated_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_model_fields[] = {
    {.field = "name",
     .column = "name",
     .kind = ADMIN_F_TEXT,
     .use = ADMIN_CREATE,
     .min = 1,
     .max = 200,
     .required = true},
    S_PRICE("price_in"),
    S_PRICE("price_out"),
    S_PRICE("price_cache_read"),
    S_PRICE("price_cache_write"),
    //  null: the 5-minute price
    S_PRICE_OR_NULL("price_cache_write_1h"),
    S_PRICE("price_request"),
    //  per generated image (POST /v1/images/generations); null: the model
    //  makes no images
    S_PRICE_OR_NULL("price_image"),
    //  The long-context tier: above this many prompt tokens (cache
    //  included) the long prices apply; null lifts the tier.
    {.field = "long_context_threshold",
     .column = "long_context_threshold",
     .kind = ADMIN_F_INT,
     .use = ADMIN_BOTH,
     .min = 1,
     .max = ADMIN_INT_MAX * INT64_C(1000),
     .nullable = true},
    //  null: the normal price
    S_PRICE_OR_NULL("long_price_in"),
    S_PRICE_OR_NULL("long_price_out"),
    //  The most output tokens a request may ask (docs/billing.md): the
    //  reservation when a request gives no max_tokens; null: unknown.
    {.field = "max_output_tokens",
     .column = "max_output_tokens",
     .kind = ADMIN_F_INT,
     .use = ADMIN_BOTH,
     .min = 1,
     .max = ADMIN_INT_MAX * INT64_C(1000),
     .nullable = true},
    {.field = "force_capabilities",
     .column = "force_capabilities",
     .kind = ADMIN_F_TAGS,
     .use = ADMIN_BOTH},
    {.field = "routes", .kind = ADMIN_F_ANY, .use = ADMIN_CREATE},
    S_STATUS(s_statuses),
    {.field = "scheduling",
     .column = "scheduling",
     .kind = ADMIN_F_ENUM,
     .use = ADMIN_PATCH,
     .choices = s_schedulings},
    {.field = "capabilities", .column = "capabilities", .kind = ADMIN_F_TAGS, .use = ADMIN_PATCH},
    S_STRICT,
    {.field = NULL}};

//  Long prices belong to a tier: without a threshold they would never
//  apply, so they are refused rather than kept unused; lifting the
//  threshold (null) lifts the tier's prices with it. `threshold` is the
//  model's current one ("" when none, NULL on create).
static int s_model_long_context(admin_call_t *call, const char *current_threshold,
                                bool current_long_prices, admin_value_t *values)
{
    const admin_field_t *fields = s_model_fields;
    admin_value_t *threshold = ADMIN_VALUE(fields, values, "long_context_threshold");
    admin_value_t *prices[] = {ADMIN_VALUE(fields, values, "long_price_in"),
                               ADMIN_VALUE(fields, values, "long_price_out")};
    const char *names[] = {"long_price_in", "long_price_out"};
    bool tier =
        threshold->present ? threshold->text != NULL : current_threshold && *current_threshold;
    for (int i = 0; i < 2; i++) {
        if (prices[i]->present && prices[i]->text && !tier) {
            admin_invalid(call,
                          "'%s' needs 'long_context_threshold' (the prompt size above which "
                          "it applies)",
                          names[i]);
            return -1;
        }
        if (threshold->present && !threshold->text && !prices[i]->present && current_long_prices) {
            prices[i]->present = true;
            prices[i]->text = NULL;
        }
    }
    return 0;
}

static int s_model_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    json_t *routes = ADMIN_VALUE(s_model_fields, values, "routes")->json;
    if (routes && !json_is_array(routes) && !json_is_null(routes)) {
        admin_invalid(call, "'routes' must be an array");
        return -1;
    }
    return s_model_long_context(call, NULL, false, values);
}

static int s_model_check(admin_call_t *call, const char *id, admin_value_t *values)
{
    char *current = NULL;
    int found = admin_sql_one(call,
                              "SELECT coalesce(long_context_threshold::text, '') || "
                              "CASE WHEN long_price_in_micros IS NULL AND long_price_out_micros "
                              "IS NULL THEN '' ELSE '+' END FROM models WHERE id = $1::bigint "
                              "FOR UPDATE",
                              1, (const char *[]){id}, &current);
    int rc = -1;
    if (found == 0)
        admin_not_found(call, "model not found");
    else if (found == 1 && current) {
        size_t length = strlen(current);
        bool long_prices = length && current[length - 1] == '+';
        if (long_prices)
            current[length - 1] = '\0';
        rc = s_model_long_context(call, current, long_prices, values);
    }
    free(current);
    return rc;
}

//  A model may come with its routes, made in the same transaction.
static int s_model_created(admin_call_t *call, const char *id, const char *parent,
                           admin_value_t *values)
{
    json_t *routes = ADMIN_VALUE(s_model_fields, values, "routes")->json;
    size_t index;
    json_t *route;
    json_array_foreach(routes, index, route)
    {
        char where[32], *route_id = NULL;
        snprintf(where, sizeof where, "routes[%zu]: ", index);
        if (admin_resource_add(call, &admin_routes, id, route, where, &route_id) != 0)
            return -1;
        free(route_id);
    }
    return 0;
}

const admin_resource_t admin_models = {
    .name = "model",
    .title = "model",
    .collection = "/admin/models",
    .item = "/admin/models/{model*}",
    .table = "models",
    .from = "models m",
    .alias = "m",
    .name_column = "name",
    .order = "m.name",
    .columns = s_model_columns,
    .fields = s_model_fields,
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_CRUD,
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "status = 'disabled'",
    .remove_verb = "disable",
    .actions = {"model.create", "model.update", "model.disable"},
    .updated_at = true,
    .prepare = s_model_prepare,
    .created = s_model_created,
    .check = s_model_check,
};

// ---------------------------------------------------------------------------
//  Mapping rules

static const admin_column_t s_rule_columns[] = {
    {"id", "r.id", ADMIN_COL_ID, "ID", NULL},
    {"model_id", "r.model_id", ADMIN_COL_ID, NULL, NULL},
    {"model", "m.name", ADMIN_COL_TEXT, NULL, NULL},
    {"kind", "r.kind", ADMIN_COL_TEXT, "KIND", NULL},
    {"pattern", "r.pattern", ADMIN_COL_TEXT, "PATTERN", NULL},
    {"provider_id", "r.provider_id", ADMIN_COL_ID, NULL, NULL},
    {"provider", "rp.name", ADMIN_COL_TEXT, "PROVIDER", NULL},
    {"priority", "r.priority", ADMIN_COL_INT, "PRIORITY", NULL},
    {"weight", "r.weight", ADMIN_COL_INT, "WEIGHT", NULL},
    {"created_at", "r.created_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_rule_fields[] = {{.field = "kind",
                                               .column = "kind",
                                               .kind = ADMIN_F_ENUM,
                                               .use = ADMIN_CREATE,
                                               .choices = s_rule_kinds,
                                               .required = true},
                                              {.field = "pattern",
                                               .column = "pattern",
                                               .kind = ADMIN_F_TEXT,
                                               .use = ADMIN_CREATE,
                                               .min = 0,
                                               .max = 1000},
                                              {.field = "provider",
                                               .column = "provider_id",
                                               .kind = ADMIN_F_REF,
                                               .use = ADMIN_CREATE,
                                               .nullable = true,
                                               .ref = &admin_providers},
                                              S_PRIORITY(ADMIN_CREATE),
                                              S_WEIGHT(ADMIN_CREATE),
                                              {.field = NULL}};

//  Rules that match names need a pattern; exclude_provider needs a
//  provider; include takes the model's own name when the pattern is empty.
//  A regular expression is compiled by the routers (PCRE2): one that does
//  not compile matches nothing and explain says why.
static int s_rule_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    const admin_field_t *fields = s_rule_fields;
    const char *kind = ADMIN_VALUE(fields, values, "kind")->text;
    const char *pattern = ADMIN_VALUE(fields, values, "pattern")->text;
    bool needs_pattern = strcmp(kind, "include") != 0 && strcmp(kind, "exclude_provider") != 0;
    if (needs_pattern && (!pattern || !*pattern)) {
        admin_invalid(call, "a rule of kind '%s' needs a 'pattern'", kind);
        return -1;
    }
    if (strcmp(kind, "exclude_provider") == 0 && !ADMIN_VALUE(fields, values, "provider")->text) {
        admin_invalid(call, "a rule of kind 'exclude_provider' needs a 'provider'");
        return -1;
    }
    return 0;
}

const admin_resource_t admin_rules = {
    .name = "rule",
    .title = "rule",
    .collection = "/admin/models/{model*}/rules",
    .item = "/admin/rules/{id}",
    .table = "mapping_rules",
    .from = "mapping_rules r JOIN models m ON m.id = r.model_id LEFT JOIN providers rp ON "
            "rp.id = r.provider_id",
    .alias = "r",
    .order = "r.id",
    .columns = s_rule_columns,
    .fields = s_rule_fields,
    .parent = &admin_models,
    .parent_column = "model_id",
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_BIT(ADMIN_OP_LIST) | ADMIN_BIT(ADMIN_OP_CREATE) | ADMIN_BIT(ADMIN_OP_DELETE),
    .remove = ADMIN_REMOVE_ROW,
    .remove_verb = "delete",
    .actions = {"rule.create", NULL, "rule.delete"},
    .prepare = s_rule_prepare,
};

// ---------------------------------------------------------------------------
//  Accounts

static const admin_column_t s_account_columns[] = {
    {"id", "a.id", ADMIN_COL_ID, "ID", NULL},
    {"name", "a.name", ADMIN_COL_TEXT, "NAME", NULL},
    {"status", "a.status", ADMIN_COL_TEXT, "STATUS", NULL},
    {"balance_micros", "a.balance_micros", ADMIN_COL_MICROS, "BALANCE", NULL},
    {"currency", "a.currency", ADMIN_COL_TEXT, "CUR", NULL},
    {"allowed_models", "to_json(a.allowed_models)", ADMIN_COL_LIST, NULL, NULL},
    {"rpm_limit", "a.rpm_limit", ADMIN_COL_INT, NULL, NULL},
    {"tpm_limit", "a.tpm_limit", ADMIN_COL_INT, NULL, NULL},
    {"concurrency_limit", "a.concurrency_limit", ADMIN_COL_INT, NULL, NULL},
    {"daily_spend_micros", "a.daily_spend_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"monthly_spend_micros", "a.monthly_spend_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"force_capabilities", "to_json(a.force_capabilities)", ADMIN_COL_LIST, NULL, NULL},
    {"multiplier_ppm", "a.multiplier_ppm", ADMIN_COL_INT, NULL, NULL},
    {"created_at", "a.created_at", ADMIN_COL_TIME, NULL, NULL},
    {"updated_at", "a.updated_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

#define S_LIMIT(name, most)                                                                        \
    {                                                                                              \
        .field = name, .column = name, .kind = ADMIN_F_INT, .use = ADMIN_BOTH, .min = 1,           \
        .max = (most), .nullable = true                                                            \
    }
#define S_SPEND(name)                                                                              \
    {                                                                                              \
        .field = name, .column = name "_micros", .kind = ADMIN_F_MICROS, .use = ADMIN_BOTH,        \
        .min = 0, .max = ADMIN_MONEY_MAX, .nullable = true, .micros = name "_micros"               \
    }

//  Parts per million of list price: 1000000 = list price, 0 = free tier.
#define S_MULTIPLIER                                                                               \
    {                                                                                              \
        .field = "multiplier_ppm", .column = "multiplier_ppm", .kind = ADMIN_F_INT,                \
        .use = ADMIN_BOTH, .min = 0, .max = ADMIN_INT_MAX * INT64_C(1000)                          \
    }

static const admin_field_t s_account_fields[] = {{.field = "name",
                                                  .column = "name",
                                                  .kind = ADMIN_F_TEXT,
                                                  .use = ADMIN_BOTH,
                                                  .min = 1,
                                                  .max = 200,
                                                  .required = true},
                                                 {.field = "balance",
                                                  .kind = ADMIN_F_MICROS,
                                                  .use = ADMIN_CREATE,
                                                  .min = 0,
                                                  .max = ADMIN_MONEY_MAX,
                                                  .micros = "balance_micros"},
                                                 {.field = "currency",
                                                  .column = "currency",
                                                  .kind = ADMIN_F_TEXT,
                                                  .use = ADMIN_CREATE,
                                                  .min = 1,
                                                  .max = 12},
                                                 {.field = "status",
                                                  .column = "status",
                                                  .kind = ADMIN_F_ENUM,
                                                  .use = ADMIN_BOTH,
                                                  .choices = s_statuses},
                                                 S_LIMIT("rpm_limit", ADMIN_INT_MAX),
                                                 S_LIMIT("tpm_limit", ADMIN_INT_MAX *INT64_C(1000)),
                                                 S_LIMIT("concurrency_limit", ADMIN_INT_MAX),
                                                 S_SPEND("daily_spend"),
                                                 S_SPEND("monthly_spend"),
                                                 {.field = "allowed_models",
                                                  .column = "allowed_models",
                                                  .kind = ADMIN_F_NAMES,
                                                  .use = ADMIN_BOTH,
                                                  .nullable = true},
                                                 {.field = "force_capabilities",
                                                  .column = "force_capabilities",
                                                  .kind = ADMIN_F_NAMES,
                                                  .use = ADMIN_BOTH},
                                                 S_MULTIPLIER,
                                                 {.field = NULL}};

//  An opening balance is money like any other: it arrives by journal entry.
static int s_account_created(admin_call_t *call, const char *id, const char *parent,
                             admin_value_t *values)
{
    const char *balance = ADMIN_VALUE(s_account_fields, values, "balance")->text;
    char entry[24];
    if (!balance || strcmp(balance, "0") == 0)
        return 0;
    if (admin_journal(call, id, balance, "topup", "initial balance", entry) != 0)
        return -1;
    log_info(call->request->request_id, "admin: account %s opened with %s micros (entry %s)", id,
             balance, entry);
    return 0;
}

const admin_resource_t admin_accounts = {
    .name = "account",
    .title = "account",
    .collection = "/admin/accounts",
    .item = "/admin/accounts/{account*}",
    .table = "accounts",
    .from = "accounts a",
    .alias = "a",
    .name_column = "name",
    .order = "a.name",
    .columns = s_account_columns,
    .fields = s_account_fields,
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_CRUD,
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "status = 'disabled'",
    .remove_verb = "disable",
    .actions = {"account.create", "account.update", "account.disable"},
    .updated_at = true,
    .created = s_account_created,
};

// ---------------------------------------------------------------------------
//  Recurring credit grants: the ledger grants each period once
//  (ledger/ledger_grants.h); here they are made, listed and removed.

static const char *const s_periods[] = {"day", "week", "month", NULL};

static const admin_column_t s_grant_columns[] = {
    {"id", "g.id", ADMIN_COL_ID, "ID", NULL},
    {"account_id", "g.account_id", ADMIN_COL_ID, NULL, NULL},
    {"account", "a.name", ADMIN_COL_TEXT, "ACCOUNT", NULL},
    {"amount_micros", "g.amount_micros", ADMIN_COL_MICROS, "AMOUNT", NULL},
    {"every", "g.every", ADMIN_COL_TEXT, "EVERY", NULL},
    {"starts_at", "g.starts_at", ADMIN_COL_TIME, "STARTS", NULL},
    {"status", "CASE WHEN g.removed_at IS NULL THEN 'active' ELSE 'removed' END", ADMIN_COL_TEXT,
     "STATUS", NULL},
    {"granted_periods", "(SELECT count(*) FROM credit_grant_periods c WHERE c.grant_id = g.id)",
     ADMIN_COL_INT, "GRANTED", NULL},
    {"granted_micros",
     "(SELECT count(*) FROM credit_grant_periods c WHERE c.grant_id = g.id) * g.amount_micros",
     ADMIN_COL_MICROS, NULL, NULL},
    {"last_period",
     "(SELECT max(c.period_start) FROM credit_grant_periods c WHERE c.grant_id = g.id)",
     ADMIN_COL_TIME, "LAST PERIOD", NULL},
    {"reason", "g.reason", ADMIN_COL_TEXT, NULL, NULL},
    {"created_by", "g.created_by", ADMIN_COL_TEXT, NULL, NULL},
    {"created_at", "g.created_at", ADMIN_COL_TIME, NULL, NULL},
    {"removed_at", "g.removed_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_grant_fields[] = {
    {.field = "amount",
     .kind = ADMIN_F_MICROS,
     .column = "amount_micros",
     .use = ADMIN_CREATE,
     .min = 1,
     .max = ADMIN_MONEY_MAX,
     .micros = "amount_micros",
     .required = true},
    {.field = "every",
     .column = "every",
     .kind = ADMIN_F_ENUM,
     .use = ADMIN_CREATE,
     .choices = s_periods,
     .required = true},
    {.field = "starts_at", .column = "starts_at", .kind = ADMIN_F_TIME, .use = ADMIN_CREATE},
    {.field = "reason",
     .column = "reason",
     .kind = ADMIN_F_TEXT,
     .use = ADMIN_CREATE,
     .min = 0,
     .max = 1000},
    S_SET("created_by", NULL),
    {.field = NULL}};

static int s_grant_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    s_set(s_grant_fields, values, "created_by", call->who.actor);
    return 0;
}

const admin_resource_t admin_grants = {
    .name = "grant",
    .title = "grant",
    .collection = "/admin/accounts/{account*}/grants",
    .item = "/admin/grants/{id}",
    .table = "credit_grants",
    .from = "credit_grants g JOIN accounts a ON a.id = g.account_id",
    .alias = "g",
    .order = "g.id",
    .columns = s_grant_columns,
    .fields = s_grant_fields,
    .parent = &admin_accounts,
    .parent_column = "account_id",
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_BIT(ADMIN_OP_LIST) | ADMIN_BIT(ADMIN_OP_CREATE) | ADMIN_BIT(ADMIN_OP_GET) |
           ADMIN_BIT(ADMIN_OP_DELETE),
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "removed_at = coalesce(removed_at, now())",
    .remove_verb = "remove",
    .actions = {"grant.create", NULL, "grant.remove"},
    .prepare = s_grant_prepare,
};

// ---------------------------------------------------------------------------
//  Client API keys: returned once, by their create; only their SHA-256 is kept

static const admin_column_t s_key_columns[] = {
    {"id", "k.id", ADMIN_COL_ID, "ID", NULL},
    {"account_id", "k.account_id", ADMIN_COL_ID, NULL, NULL},
    {"account", "a.name", ADMIN_COL_TEXT, "ACCOUNT", NULL},
    {"name", "k.name", ADMIN_COL_TEXT, "NAME", NULL},
    {"prefix", "k.key_prefix", ADMIN_COL_TEXT, "PREFIX", NULL},
    {"status", "k.status", ADMIN_COL_TEXT, "STATUS", NULL},
    {"models", "to_json(k.allowed_models)", ADMIN_COL_LIST, "MODELS", NULL},
    {"expires_at", "k.expires_at", ADMIN_COL_TIME, "EXPIRES", NULL},
    {"force_capabilities", "to_json(k.force_capabilities)", ADMIN_COL_LIST, NULL, NULL},
    {"rpm_limit", "k.rpm_limit", ADMIN_COL_INT, NULL, NULL},
    {"tpm_limit", "k.tpm_limit", ADMIN_COL_INT, NULL, NULL},
    {"concurrency_limit", "k.concurrency_limit", ADMIN_COL_INT, NULL, NULL},
    {"daily_spend_micros", "k.daily_spend_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"monthly_spend_micros", "k.monthly_spend_micros", ADMIN_COL_MICROS, NULL, NULL},
    {"created_at", "k.created_at", ADMIN_COL_TIME, NULL, NULL},
    {"updated_at", "k.updated_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_key_fields[] = {{.field = "account",
                                              .column = "account_id",
                                              .kind = ADMIN_F_REF,
                                              .use = ADMIN_CREATE,
                                              .required = true,
                                              .ref = &admin_accounts},
                                             {.field = "name",
                                              .column = "name",
                                              .kind = ADMIN_F_TEXT,
                                              .use = ADMIN_BOTH,
                                              .min = 0,
                                              .max = 200},
                                             {.field = "models",
                                              .column = "allowed_models",
                                              .kind = ADMIN_F_NAMES,
                                              .use = ADMIN_BOTH,
                                              .nullable = true},
                                             {.field = "expires_at",
                                              .column = "expires_at",
                                              .kind = ADMIN_F_TIME,
                                              .use = ADMIN_BOTH,
                                              .nullable = true},
                                             {.field = "status",
                                              .column = "status",
                                              .kind = ADMIN_F_ENUM,
                                              .use = ADMIN_PATCH,
                                              .choices = s_key_statuses},
                                             {.field = "force_capabilities",
                                              .column = "force_capabilities",
                                              .kind = ADMIN_F_NAMES,
                                              .use = ADMIN_BOTH},
                                             S_LIMIT("rpm_limit", ADMIN_INT_MAX),
                                             S_LIMIT("tpm_limit", ADMIN_INT_MAX *INT64_C(1000)),
                                             S_LIMIT("concurrency_limit", ADMIN_INT_MAX),
                                             S_SPEND("daily_spend"),
                                             S_SPEND("monthly_spend"),
                                             S_SET("key_hash", NULL),
                                             S_SET("key_prefix", NULL),
                                             {.field = NULL}};

//  The key is made here, in C, and goes into the answer only: it is never
//  sent to PostgreSQL, where a failed statement could log it.
//  The prefix is settings 'client_keys' read in the same transaction, so a
//  change of prefix applies to the next key whichever admin makes it.
static int s_key_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    char hash[PROTO_CRYPTO_HASH_HEX + 1];
    char prefix[PROTO_CRYPTO_KEY_PREFIX_MAX + PROTO_CRYPTO_SHOWN_HEX + 1];
    char *setting = NULL;
    if (admin_sql_one(call, "SELECT value ->> 'prefix' FROM settings WHERE key = 'client_keys'", 0,
                      NULL, &setting) < 0)
        return -1;
    const char *key_prefix =
        proto_crypto_key_prefix_valid(setting) ? setting : PROTO_CRYPTO_KEY_PREFIX_DEFAULT;
    proto_crypto_new_api_key_with(key_prefix, call->secret, sizeof call->secret);
    snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(key_prefix) + PROTO_CRYPTO_SHOWN_HEX),
             call->secret);
    free(setting);
    proto_crypto_hash_hex(call->secret, strlen(call->secret), hash);
    s_set(s_key_fields, values, "key_hash", hash);
    s_set(s_key_fields, values, "key_prefix", prefix);
    return 0;
}

static void s_key_reveal(admin_call_t *call, json_t *answer)
{
    json_object_set_new(answer, "key", json_string(call->secret));
}

//  A revoked key may have leaked; it never comes back.
static int s_key_check(admin_call_t *call, const char *id, admin_value_t *values)
{
    char *status = NULL;
    int found = admin_sql_one(call, "SELECT status FROM api_keys WHERE id = $1::bigint FOR UPDATE",
                              1, (const char *[]){id}, &status);
    const admin_value_t *wanted = ADMIN_VALUE(s_key_fields, values, "status");
    int rc = found == 1 ? 0 : -1;
    if (found == 0)
        admin_not_found(call, "key not found");
    else if (found == 1 && status && strcmp(status, "revoked") == 0 && wanted->present &&
             strcmp(wanted->text, "revoked") != 0) {
        admin_conflict(call, "the key is revoked; create a new one");
        rc = -1;
    }
    free(status);
    return rc;
}

const admin_resource_t admin_keys = {
    .name = "key",
    .title = "key",
    .collection = "/admin/keys",
    .item = "/admin/keys/{id}",
    .table = "api_keys",
    .from = "api_keys k JOIN accounts a ON a.id = k.account_id",
    .alias = "k",
    .order = "k.id",
    .columns = s_key_columns,
    .fields = s_key_fields,
    .filter = "account",
    .filter_column = "k.account_id",
    .filter_ref = &admin_accounts,
    .read = ADMIN_VIEWER,
    .change = ADMIN_OPERATOR,
    .ops = ADMIN_CRUD,
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "status = 'revoked'",
    .remove_verb = "revoke",
    .actions = {"key.create", "key.update", "key.revoke"},
    .updated_at = true,
    .prepare = s_key_prepare,
    .reveal = s_key_reveal,
    .check = s_key_check,
};

// ---------------------------------------------------------------------------
//  Admin users, their sessions, and scoped API tokens

static const admin_column_t s_user_columns[] = {
    {"id", "u.id", ADMIN_COL_ID, "ID", NULL},
    {"username", "u.username", ADMIN_COL_TEXT, "USERNAME", NULL},
    {"role", "u.role", ADMIN_COL_TEXT, "ROLE", NULL},
    {"status", "u.status", ADMIN_COL_TEXT, "STATUS", NULL},
    {"created_at", "u.created_at", ADMIN_COL_TIME, NULL, NULL},
    {"updated_at", "u.updated_at", ADMIN_COL_TIME, NULL, NULL},
    {"account_id", "u.account_id", ADMIN_COL_ID, NULL, NULL},
    {"account", "ua.name", ADMIN_COL_TEXT, "ACCOUNT", NULL},
    {"last_login_at", "u.last_login_at", ADMIN_COL_TIME, "LAST LOGIN", NULL},
    {"active_sessions",
     "(SELECT count(*) FROM admin_sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL "
     "AND s.expires_at > now())",
     ADMIN_COL_INT, "SESSIONS", NULL},
    {0}};

static const admin_field_t s_user_fields[] = {
    {.field = "username",
     .column = "username",
     .kind = ADMIN_F_UNAME,
     .use = ADMIN_CREATE,
     .required = true},
    {.field = "password", .kind = ADMIN_F_ANY, .use = ADMIN_BOTH, .required = true},
    {.field = "role",
     .column = "role",
     .kind = ADMIN_F_ENUM,
     .use = ADMIN_BOTH,
     .choices = s_user_roles,
     .required = true},
    {.field = "account",
     .column = "account_id",
     .kind = ADMIN_F_REF,
     .use = ADMIN_CREATE,
     .ref = &admin_accounts},
    S_STATUS(s_statuses),
    S_SET("password_hash", NULL),
    {.field = NULL}};

//  argon2id runs here, on a worker thread and before the transaction opens.
//  An account holder (role account) is an account's own login: they see
//  only that account, and only account holders have one.
static int s_user_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    const admin_field_t *fields = s_user_fields;
    bool holder = strcmp(ADMIN_VALUE(fields, values, "role")->text, "account") == 0;
    if (holder != (ADMIN_VALUE(fields, values, "account")->text != NULL)) {
        admin_invalid(call, holder ? "'account' is required for the account role"
                                   : "'account' is only for the account role");
        return -1;
    }
    char hash[crypto_pwhash_STRBYTES];
    json_t *password = ADMIN_VALUE(fields, values, "password")->json;
    if (admin_password_hash(call, "password", password, hash) != 0)
        return -1;
    s_set(fields, values, "password_hash", hash);
    sodium_memzero(hash, sizeof hash);
    return 0;
}

const admin_resource_t admin_users = {
    .name = "user",
    .title = "admin user",
    .collection = "/admin/users",
    .item = "/admin/users/{user}",
    .table = "admin_users",
    .from = "admin_users u LEFT JOIN accounts ua ON ua.id = u.account_id",
    .alias = "u",
    .name_column = "username",
    .order = "u.username",
    .columns = s_user_columns,
    .fields = s_user_fields,
    .read = ADMIN_OWNER,
    .change = ADMIN_OWNER,
    .ops = ADMIN_CRUD,
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "status = 'disabled'",
    .remove_verb = "disable",
    .actions = {"user.create", "user.update", "user.disable"},
    .updated_at = true,
    .prepare = s_user_prepare,
    .own = {[ADMIN_OP_PATCH] = admin_user_change, [ADMIN_OP_DELETE] = admin_user_change},
};

static const admin_column_t s_session_columns[] = {
    {"id", "s.id", ADMIN_COL_ID, "ID", NULL},
    {"user_id", "s.user_id", ADMIN_COL_ID, NULL, NULL},
    {"username", "u.username", ADMIN_COL_TEXT, "USER", NULL},
    {"role", "u.role", ADMIN_COL_TEXT, "ROLE", NULL},
    {"created_at", "s.created_at", ADMIN_COL_TIME, "CREATED", NULL},
    {"expires_at", "s.expires_at", ADMIN_COL_TIME, "EXPIRES", NULL},
    {"last_used_at", "s.last_used_at", ADMIN_COL_TIME, "LAST USED", NULL},
    {"revoked_at", "s.revoked_at", ADMIN_COL_TIME, NULL, NULL},
    {"client_ip", "s.client_ip", ADMIN_COL_TEXT, "FROM", NULL},
    {0}};

const admin_resource_t admin_sessions = {
    .name = "session",
    .title = "session",
    .collection = "/admin/sessions",
    .item = "/admin/sessions/{id}",
    .table = "admin_sessions",
    .from = "admin_sessions s JOIN admin_users u ON u.id = s.user_id",
    .alias = "s",
    .order = "s.id DESC",
    .columns = s_session_columns,
    .read = ADMIN_OWNER,
    .change = ADMIN_OWNER,
    .ops = ADMIN_BIT(ADMIN_OP_LIST) | ADMIN_BIT(ADMIN_OP_DELETE),
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "revoked_at = coalesce(revoked_at, now())",
    .remove_verb = "revoke",
    .actions = {NULL, NULL, "session.revoke"},
    .own = {[ADMIN_OP_LIST] = admin_session_list},
};

static const admin_column_t s_token_columns[] = {
    {"id", "t.id", ADMIN_COL_ID, "ID", NULL},
    {"name", "t.name", ADMIN_COL_TEXT, "NAME", NULL},
    {"prefix", "t.token_prefix", ADMIN_COL_TEXT, "PREFIX", NULL},
    {"role", "t.role", ADMIN_COL_TEXT, "ROLE", NULL},
    {"status",
     "CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked' WHEN t.expires_at <= now() THEN "
     "'expired' ELSE 'active' END",
     ADMIN_COL_TEXT, "STATUS", NULL},
    {"created_by", "t.created_by", ADMIN_COL_TEXT, "BY", NULL},
    {"expires_at", "t.expires_at", ADMIN_COL_TIME, "EXPIRES", NULL},
    {"revoked_at", "t.revoked_at", ADMIN_COL_TIME, NULL, NULL},
    {"last_used_at", "t.last_used_at", ADMIN_COL_TIME, "LAST USED", NULL},
    {"created_at", "t.created_at", ADMIN_COL_TIME, NULL, NULL},
    {0}};

static const admin_field_t s_token_fields[] = {{.field = "name",
                                                .column = "name",
                                                .kind = ADMIN_F_TEXT,
                                                .use = ADMIN_CREATE,
                                                .min = 1,
                                                .max = 200,
                                                .required = true},
                                               {.field = "role",
                                                .column = "role",
                                                .kind = ADMIN_F_ENUM,
                                                .use = ADMIN_CREATE,
                                                .choices = s_roles,
                                                .required = true},
                                               {.field = "expires_at",
                                                .column = "expires_at",
                                                .kind = ADMIN_F_TIME,
                                                .use = ADMIN_CREATE,
                                                .nullable = true},
                                               S_SET("token_hash", NULL),
                                               S_SET("token_prefix", NULL),
                                               S_SET("created_by", NULL),
                                               {.field = NULL}};

//  A token has no more power than its maker, and expires in the future.
//  The database keeps its SHA-256 and a display prefix.
static int s_token_prepare(admin_call_t *call, const char *parent, admin_value_t *values)
{
    const admin_field_t *fields = s_token_fields;
    if (admin_role_parse(ADMIN_VALUE(fields, values, "role")->text) > call->who.role) {
        admin_error(call, 403, "permission_error", "a token cannot have more power than its maker");
        return -1;
    }
    const char *expires = ADMIN_VALUE(fields, values, "expires_at")->text;
    char *past = NULL;
    if (expires && admin_sql_one(call, "SELECT $1::timestamptz <= now()", 1,
                                 (const char *[]){expires}, &past) != 1)
        return -1;
    bool in_past = past && strcmp(past, "t") == 0;
    free(past);
    if (in_past) {
        admin_invalid(call, "'expires_at' must be in the future");
        return -1;
    }
    char hash[PROTO_CRYPTO_HASH_HEX + 1], prefix[S_TOKEN_PREFIX_LEN + 1];
    admin_new_token("tgt_", call->secret, sizeof call->secret);
    proto_crypto_hash_hex(call->secret, strlen(call->secret), hash);
    snprintf(prefix, sizeof prefix, "%.*s", S_TOKEN_PREFIX_LEN, call->secret);
    s_set(fields, values, "token_hash", hash);
    s_set(fields, values, "token_prefix", prefix);
    s_set(fields, values, "created_by", call->who.actor);
    return 0;
}

static void s_token_reveal(admin_call_t *call, json_t *answer)
{
    json_object_set_new(answer, "token", json_string(call->secret));
}

const admin_resource_t admin_tokens = {
    .name = "token",
    .title = "token",
    .collection = "/admin/tokens",
    .item = "/admin/tokens/{id}",
    .table = "admin_api_tokens",
    .from = "admin_api_tokens t",
    .alias = "t",
    .order = "t.id",
    .columns = s_token_columns,
    .fields = s_token_fields,
    .read = ADMIN_OWNER,
    .change = ADMIN_OWNER,
    .ops = ADMIN_BIT(ADMIN_OP_LIST) | ADMIN_BIT(ADMIN_OP_CREATE) | ADMIN_BIT(ADMIN_OP_DELETE),
    .remove = ADMIN_REMOVE_SET,
    .remove_set = "revoked_at = coalesce(revoked_at, now())",
    .remove_verb = "revoke",
    .actions = {"token.create", NULL, "token.revoke"},
    .prepare = s_token_prepare,
    .reveal = s_token_reveal,
};

const admin_resource_t *const admin_resources[] = {
    &admin_providers, &admin_provider_keys,  &admin_models, &admin_routes,   &admin_rules,
    &admin_accounts,  &admin_keys,           &admin_users,  &admin_sessions, &admin_tokens,
    &admin_grants,    &admin_model_settings, NULL};
