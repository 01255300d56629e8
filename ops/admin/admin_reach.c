#include "admin_reach.h"
#include "admin_handlers.h"
#include "admin_resource.h"
#include "proto_crypto.h"
#include "proto_log.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_HEADERS_MAX 32 //  extra headers per provider
#define S_PROXIES_MAX 16 //  proxies per provider (dispatch_reach.h)

//  Headers we set ourselves (protocol, authentication, framing): a second
//  value would confuse the upstream or leak a secret's slot.
static const char *const s_reserved[] = {
    "host",   "content-length", "content-type",        "transfer-encoding", "connection",
    "expect", "accept",         "authorization",       "x-api-key",         "x-goog-api-key",
    "te",     "upgrade",        "proxy-authorization", "anthropic-version", NULL};

static void s_set_text(admin_value_t *value, char *owned)
{
    free(value->owned);
    value->owned = owned;
    value->text = owned;
    value->present = true;
}

static bool s_token(const char *name)
{
    if (!*name || strlen(name) > 64)
        return false;
    for (const char *c = name; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("!#$%&'*+-.^_`|~", *c))
            return false;
    return true;
}

static int s_headers(admin_call_t *call, json_t *json, admin_value_t *value)
{
    if (!json_is_object(json) || json_object_size(json) > S_HEADERS_MAX) {
        admin_invalid(call, "'headers' must be an object of at most %d header names and values",
                      S_HEADERS_MAX);
        return -1;
    }
    const char *name;
    json_t *item;
    json_object_foreach(json, name, item)
    {
        char shown[64];
        if (!s_token(name)) {
            admin_invalid(call, "'headers': '%s' is not a header name",
                          admin_short(name, shown, sizeof shown));
            return -1;
        }
        for (int i = 0; s_reserved[i]; i++)
            if (strcasecmp(name, s_reserved[i]) == 0) {
                admin_invalid(call, "'headers': %s is set by Tollgate and cannot be given", name);
                return -1;
            }
        const char *text = json_string_value(item);
        if (!text || strlen(text) > 1000 || !admin_printable(text)) {
            admin_invalid(call,
                          "'headers': the value of %s must be a string of at most 1000 "
                          "printable characters",
                          name);
            return -1;
        }
    }
    s_set_text(value, json_dumps(json, JSON_COMPACT | JSON_SORT_KEYS));
    return 0;
}

//  scheme://[user[:password]@]host[:port][/], with no character that
//  needs quoting. Writes the URL with its user:password as "***" to hint.
static bool s_proxy_valid(const char *url, char *hint, size_t size)
{
    static const char *const schemes[] = {"http://",   "https://",   "socks4://", "socks4a://",
                                          "socks5://", "socks5h://", NULL};
    size_t scheme = 0;
    for (int i = 0; schemes[i] && !scheme; i++)
        if (strncasecmp(url, schemes[i], strlen(schemes[i])) == 0)
            scheme = strlen(schemes[i]);
    if (!scheme || strlen(url) > 500 || !url[scheme])
        return false;
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == '"' || *c == '\\' || *c == '\'' || *c == 0x7f ||
            *c == ',' || *c == '{' || *c == '}')
            return false;
    const char *rest = url + scheme;
    const char *at = strrchr(rest, '@');
    const char *slash = strchr(rest, '/');
    if (at && slash && slash < at)
        at = NULL; //  an @ in a path is not userinfo
    const char *host = at ? at + 1 : rest;
    if (!*host || *host == '/' || *host == ':')
        return false;
    snprintf(hint, size, "%.*s%s%s", (int)scheme, url, at ? "***@" : "", host);
    return true;
}

static char *s_bytea(const uint8_t *bytes, size_t size)
{
    char *text = malloc(size * 2 + 3);
    assert(text);
    strcpy(text, "\\x");
    for (size_t i = 0; i < size; i++)
        sprintf(text + 2 + i * 2, "%02x", bytes[i]);
    return text;
}

static int s_proxies(admin_call_t *call, json_t *json, const admin_field_t *fields,
                     admin_value_t *values)
{
    if (!json_is_array(json) || json_array_size(json) > S_PROXIES_MAX) {
        admin_invalid(call, "'proxies' must be an array of at most %d proxy URLs", S_PROXIES_MAX);
        return -1;
    }
    json_t *hints = json_array();
    size_t index;
    json_t *item;
    json_array_foreach(json, index, item)
    {
        char hint[600];
        const char *url = json_string_value(item);
        if (!url || !s_proxy_valid(url, hint, sizeof hint)) {
            json_decref(hints);
            //  The URL may hold a password: the error names its place, not it.
            admin_invalid(call,
                          "'proxies'[%zu] must be an http://, https://, socks4://, socks4a://, "
                          "socks5:// or socks5h:// URL with a host",
                          index);
            return -1;
        }
        json_array_append_new(hints, json_string(hint));
    }
    //  The hints as a text[] literal: every element quoted (the URLs hold no
    //  quote, backslash, comma or brace).
    size_t size = 3;
    json_array_foreach(hints, index, item) size += strlen(json_string_value(item)) + 3;
    char *literal = malloc(size);
    assert(literal);
    strcpy(literal, "{");
    json_array_foreach(hints, index, item)
    {
        strcat(literal, index ? ",\"" : "\"");
        strcat(literal, json_string_value(item));
        strcat(literal, "\"");
    }
    strcat(literal, "}");
    json_decref(hints);
    s_set_text(ADMIN_VALUE(fields, values, "proxy_hints"), literal);
    if (json_array_size(json) == 0) {
        //  No proxies: nothing sealed.
        ADMIN_VALUE(fields, values, "proxies_sealed")->present = true;
        ADMIN_VALUE(fields, values, "proxies_sealed")->text = NULL;
        ADMIN_VALUE(fields, values, "proxies_nonce")->present = true;
        ADMIN_VALUE(fields, values, "proxies_nonce")->text = NULL;
        return 0;
    }
    const char *key = proto_config_str(call->config, "secret_key");
    if (!key || !*key) {
        admin_error(call, 500, "api_error", "secret_key is not configured");
        return -1;
    }
    char *plain = json_dumps(json, JSON_COMPACT);
    size_t length = strlen(plain);
    size_t nonce_size = proto_crypto_nonce_size();
    uint8_t *nonce = malloc(nonce_size), *sealed = malloc(length + proto_crypto_overhead());
    assert(plain && nonce && sealed);
    int rc = proto_crypto_seal(key, plain, length, nonce, sealed);
    memset(plain, 0, length);
    free(plain);
    if (rc == 0) {
        s_set_text(ADMIN_VALUE(fields, values, "proxies_nonce"), s_bytea(nonce, nonce_size));
        s_set_text(ADMIN_VALUE(fields, values, "proxies_sealed"),
                   s_bytea(sealed, length + proto_crypto_overhead()));
    } else {
        log_error(NULL, "admin: secret_key is not 64 hex digits; cannot seal provider proxies");
        admin_error(call, 500, "api_error", "secret_key is not valid");
    }
    free(nonce);
    free(sealed);
    return rc;
}

//  Statuses 400..599 as an integer[] literal; bits marks them (bit s-400).
static int s_statuses(admin_call_t *call, const char *name, json_t *json, admin_value_t *value,
                      uint64_t bits[4])
{
    memset(bits, 0, 4 * sizeof *bits);
    if (!json_is_array(json) || json_array_size(json) > 200) {
        admin_invalid(call, "'%s' must be an array of HTTP statuses from 400 to 599", name);
        return -1;
    }
    char *literal = malloc(json_array_size(json) * 4 + 3);
    assert(literal);
    strcpy(literal, "{");
    size_t index;
    json_t *item;
    json_array_foreach(json, index, item)
    {
        json_int_t status = json_integer_value(item);
        if (!json_is_integer(item) || status < 400 || status > 599) {
            free(literal);
            admin_invalid(call, "'%s' must be an array of HTTP statuses from 400 to 599", name);
            return -1;
        }
        bits[(status - 400) / 64] |= 1ULL << ((status - 400) % 64);
        sprintf(literal + strlen(literal), "%s%d", index ? "," : "", (int)status);
    }
    strcat(literal, "}");
    s_set_text(value, literal);
    return 0;
}

//  The stored statuses of column of provider id, as bits.
static int s_stored(admin_call_t *call, const char *id, const char *column, uint64_t bits[4])
{
    memset(bits, 0, 4 * sizeof *bits);
    char sql[160], *text = NULL;
    snprintf(sql, sizeof sql, "SELECT array_to_json(%s)::text FROM providers WHERE id = $1::bigint",
             column);
    if (admin_sql_one(call, sql, 1, (const char *[]){id}, &text) < 0)
        return -1;
    json_t *array = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    size_t index;
    json_t *item;
    json_array_foreach(array, index, item)
    {
        json_int_t status = json_integer_value(item);
        if (status >= 400 && status <= 599)
            bits[(status - 400) / 64] |= 1ULL << ((status - 400) % 64);
    }
    json_decref(array);
    return 0;
}

int admin_reach_path(admin_call_t *call, const char *name, const char *path)
{
    bool ok = path && path[0] == '/' && strlen(path) <= 500;
    for (const char *c = path; ok && *c; c++)
        ok = (unsigned char)*c > ' ' && *c != 0x7f && *c != '"' && *c != '\\' && *c != '#';
    if (!ok) {
        admin_invalid(call,
                      "'%s' must be a path starting with / (at most 500 characters, no spaces; "
                      "{model} and {action} are filled in)",
                      name);
        return -1;
    }
    return 0;
}

int admin_reach_check(admin_call_t *call, const char *id, const admin_field_t *fields,
                      admin_value_t *values)
{
    admin_value_t *headers = ADMIN_VALUE(fields, values, "headers");
    if (headers->present && s_headers(call, headers->json, headers) != 0)
        return -1;
    admin_value_t *path = ADMIN_VALUE(fields, values, "path");
    if (path->present && path->text && admin_reach_path(call, "path", path->text) != 0)
        return -1;
    admin_value_t *proxies = ADMIN_VALUE(fields, values, "proxies");
    if (proxies->present && s_proxies(call, proxies->json, fields, values) != 0)
        return -1;
    admin_value_t *failover = ADMIN_VALUE(fields, values, "failover_statuses");
    admin_value_t *returned = ADMIN_VALUE(fields, values, "return_statuses");
    uint64_t failover_bits[4] = {0}, returned_bits[4] = {0};
    if (failover->present &&
        s_statuses(call, "failover_statuses", failover->json, failover, failover_bits) != 0)
        return -1;
    if (returned->present &&
        s_statuses(call, "return_statuses", returned->json, returned, returned_bits) != 0)
        return -1;
    if (!failover->present && !returned->present)
        return 0;
    //  A status cannot both fail over and be returned: against the stored
    //  list when a PATCH gives only one.
    if (id && !failover->present && s_stored(call, id, "failover_statuses", failover_bits) != 0)
        return -1;
    if (id && !returned->present && s_stored(call, id, "return_statuses", returned_bits) != 0)
        return -1;
    for (int i = 0; i < 200; i++)
        if ((failover_bits[i / 64] & returned_bits[i / 64]) & (1ULL << (i % 64))) {
            admin_invalid(call,
                          "'failover_statuses' and 'return_statuses' both list %d: a status "
                          "either fails over or is returned",
                          400 + i);
            return -1;
        }
    return 0;
}

// ---------------------------------------------------------------------------
//  Completion probes on demand (docs/routing.md section 6)

//  POST /admin/providers/{provider}/probe {model?}: asks the health
//  instances (NOTIFY tollgate_health, 'probe:ID[:MODEL]', sent at commit) to
//  send a 1-token completion through each of the provider's keys to each
//  of its models (or to the one named: its upstream name or a logical
//  model's). The answer does not wait: GET .../probes shows the results,
//  newer than `requested_at_ms`.
void admin_provider_probe(admin_call_t *call)
{
    static const admin_field_t fields[] = {
        {.field = "model", .kind = ADMIN_F_TEXT, .min = 1, .max = 127}, {.field = NULL}};
    admin_value_t values[2] = {{0}};
    char id[24];
    if (admin_read(call, fields, values, ADMIN_CREATE) != 0 ||
        admin_resolve(call, &admin_providers, call->params[0], id) != 0) {
        admin_values_free(values, 2);
        return;
    }
    const char *model = values[0].present ? values[0].text : NULL;
    if (model && strchr(model, ':') == model) {
        admin_invalid(call, "'model' must not start with ':'");
        admin_values_free(values, 2);
        return;
    }
    if (admin_begin(call) != 0) {
        admin_values_free(values, 2);
        return;
    }
    char *requested = NULL;
    int rc = admin_sql_one(call,
                           "SELECT (extract(epoch FROM now()) * 1000)::bigint::text FROM "
                           "(SELECT pg_notify('tollgate_health', 'probe:' || $1::bigint || "
                           "coalesce(':' || $2, ''))) n",
                           2, (const char *[]){id, model}, &requested);
    if (rc == 1 && requested) {
        snprintf(call->audit_target, sizeof call->audit_target, "%s", id);
        if (admin_commit(call) == 0)
            admin_respond_json(call, 202,
                               json_pack("{s:I, s:s?, s:I, s:b}", "provider_id",
                                         (json_int_t)strtoll(id, NULL, 10), "model", model,
                                         "requested_at_ms",
                                         (json_int_t)strtoll(requested, NULL, 10), "requested", 1));
    }
    free(requested);
    admin_values_free(values, 2);
}

//  GET /admin/providers/{provider}/probes: the last completion probe of each
//  (key, model) of the provider.
void admin_provider_probes(admin_call_t *call)
{
    char id[24];
    if (admin_resolve(call, &admin_providers, call->params[0], id) != 0)
        return;
    admin_respond_query(
        call, 200,
        "SELECT json_build_object('data', coalesce((SELECT json_agg(json_build_object("
        "'provider_id', r.provider_id, 'provider', p.name, 'provider_key_id', r.provider_key_id, "
        "'key', k.name, 'upstream_model', r.upstream_model, 'probed_at', r.probed_at, "
        "'probed_at_ms', (extract(epoch FROM r.probed_at) * 1000)::bigint, 'ok', r.ok, "
        "'status', r.status, 'error', r.error, 'latency_us', r.latency_us, 'on_demand', "
        "r.on_demand, 'cost_micros', r.cost_micros) ORDER BY r.upstream_model, r.provider_key_id) "
        "FROM provider_probes r "
        "LEFT JOIN provider_keys k ON k.id = r.provider_key_id WHERE r.provider_id = p.id), "
        "'[]'::json)) FROM providers p WHERE p.id = $1::bigint",
        1, (const char *[]){id}, "provider");
}
