#include "proto_catalog.h"
#include "proto_crypto.h"
#include "proto_log.h"
#include "proto_msg.h"

#include <assert.h>
#include <fnmatch.h>
#include <stddef.h>
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct _proto_catalog_t {
    proto_account_t *accounts;               //  by id, ascending
    size_t account_count;                    //  entries
    proto_api_key_t *keys;                   //  by id, ascending
    size_t key_count;                        //  entries
    proto_provider_t *providers;             //  by id, ascending
    size_t provider_count;                   //  entries
    proto_provider_key_t *provider_keys;     //  by id, ascending
    size_t provider_key_count;               //  entries
    proto_model_t *models;                   //  by id, ascending
    size_t model_count;                      //  entries
    proto_route_t *routes;                   //  by model, then priority desc, then id
    size_t route_count;                      //  entries
    proto_mapping_rule_t *rules;             //  by model, then id
    size_t rule_count;                       //  entries
    proto_provider_model_t *provider_models; //  by provider, then name
    size_t provider_model_count;             //  entries
    proto_model_setting_t *model_settings;   //  by provider, then model
    size_t model_setting_count;              //  entries
    zhashx_t *keys_by_hash;                  //  hash -> proto_api_key_t*
    zhashx_t *models_by_name;                //  name -> proto_model_t*
    proto_model_t *unlisted;                 //  names providers list, by name
    size_t unlisted_count;                   //  entries
    zhashx_t *unlisted_by_name;              //  name -> proto_model_t*
    proto_snapshot_t snapshot;               //  what PostgreSQL had committed when read
};

int proto_protocol_parse(const char *name)
{
    if (strcmp(name, "openai") == 0)
        return PROTO_PROTOCOL_OPENAI;
    if (strcmp(name, "openai-responses") == 0)
        return PROTO_PROTOCOL_OPENAI_RESPONSES;
    if (strcmp(name, "anthropic") == 0)
        return PROTO_PROTOCOL_ANTHROPIC;
    if (strcmp(name, "gemini") == 0)
        return PROTO_PROTOCOL_GEMINI;
    return PROTO_PROTOCOL_NONE;
}

const char *proto_protocol_name(int protocol)
{
    switch (protocol) {
    case PROTO_PROTOCOL_OPENAI:
        return "openai";
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        return "openai-responses";
    case PROTO_PROTOCOL_ANTHROPIC:
        return "anthropic";
    case PROTO_PROTOCOL_GEMINI:
        return "gemini";
    case PROTO_PROTOCOL_OPENAI_EMBEDDINGS:
        return "openai-embeddings";
    case PROTO_PROTOCOL_OPENAI_IMAGES:
        return "openai-images";
    default:
        return "none";
    }
}

proto_catalog_t *proto_catalog_new_empty(void)
{
    proto_catalog_t *self = calloc(1, sizeof *self);
    assert(self);
    self->keys_by_hash = zhashx_new();
    self->models_by_name = zhashx_new();
    return self;
}

static void s_free_list(proto_model_list_t *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->names[i]);
    free(list->names);
}

static void s_free_tags(proto_tags_t *tags)
{
    for (size_t i = 0; i < tags->count; i++)
        free(tags->names[i]);
    free(tags->names);
}

void proto_catalog_destroy(proto_catalog_t **self_p)
{
    assert(self_p);
    proto_catalog_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->account_count; i++) {
        free(self->accounts[i].name);
        free(self->accounts[i].currency);
        s_free_list(&self->accounts[i].models);
        s_free_tags(&self->accounts[i].force_capabilities);
    }
    for (size_t i = 0; i < self->key_count; i++) {
        free(self->keys[i].name);
        free(self->keys[i].prefix);
        free(self->keys[i].status);
        s_free_list(&self->keys[i].models);
        s_free_tags(&self->keys[i].force_capabilities);
    }
    for (size_t i = 0; i < self->provider_count; i++) {
        free(self->providers[i].name);
        free(self->providers[i].base_url);
        free(self->providers[i].path);
        s_free_tags(&self->providers[i].headers);
        //  Proxy URLs may carry credentials: wiped like secrets.
        for (size_t p = 0; p < self->providers[i].proxies.count; p++)
            memset(self->providers[i].proxies.names[p], 0,
                   strlen(self->providers[i].proxies.names[p]));
        s_free_tags(&self->providers[i].proxies);
        s_free_tags(&self->providers[i].blocked_models);
    }
    for (size_t i = 0; i < self->provider_key_count; i++) {
        if (self->provider_keys[i].secret) {
            //  Scrub opened secrets before the memory goes back to malloc.
            memset(self->provider_keys[i].secret, 0, strlen(self->provider_keys[i].secret));
            free(self->provider_keys[i].secret);
        }
        free(self->provider_keys[i].hint);
        free(self->provider_keys[i].disabled_reason);
        free(self->provider_keys[i].name);
        s_free_tags(&self->provider_keys[i].capabilities);
    }
    for (size_t i = 0; i < self->model_count; i++) {
        free(self->models[i].name);
        free(self->models[i].scheduling);
        s_free_tags(&self->models[i].capabilities);
        s_free_tags(&self->models[i].force_capabilities);
    }
    for (size_t i = 0; i < self->unlisted_count; i++) {
        free(self->unlisted[i].name);
        free(self->unlisted[i].scheduling);
    }
    free(self->unlisted);
    zhashx_destroy(&self->unlisted_by_name);
    for (size_t i = 0; i < self->route_count; i++)
        free(self->routes[i].upstream_model);
    for (size_t i = 0; i < self->rule_count; i++) {
        free(self->rules[i].kind);
        free(self->rules[i].pattern);
    }
    for (size_t i = 0; i < self->provider_model_count; i++)
        free(self->provider_models[i].name);
    for (size_t i = 0; i < self->model_setting_count; i++) {
        free(self->model_settings[i].model);
        free(self->model_settings[i].path);
    }
    free(self->model_settings);
    free(self->rules);
    free(self->provider_models);
    free(self->accounts);
    free(self->keys);
    free(self->providers);
    free(self->provider_keys);
    free(self->models);
    free(self->routes);
    zhashx_destroy(&self->keys_by_hash);
    zhashx_destroy(&self->models_by_name);
    proto_snapshot_clear(&self->snapshot);
    free(self);
    *self_p = NULL;
}

bool proto_catalog_saw_transaction(const proto_catalog_t *self, uint64_t txid)
{
    return proto_snapshot_saw(&self->snapshot, txid);
}

//  --------------------------------------------------------------------------
//  Loading

static PGresult *s_query(PGconn *db, const char *sql, char *error, size_t error_size)
{
    PGresult *result = PQexec(db, sql);
    if (PQresultStatus(result) != PGRES_TUPLES_OK) {
        snprintf(error, error_size, "loading configuration: %s", PQerrorMessage(db));
        size_t length = strlen(error);
        if (length && error[length - 1] == '\n')
            error[length - 1] = '\0';
        PQclear(result);
        return NULL;
    }
    return result;
}

static char *s_text(PGresult *result, int row, int column)
{
    return strdup(PQgetvalue(result, row, column));
}

static int64_t s_int(PGresult *result, int row, int column, int64_t null_value)
{
    if (PQgetisnull(result, row, column))
        return null_value;
    return strtoll(PQgetvalue(result, row, column), NULL, 10);
}

//  Parses a JSON array of names (array_to_json of a text[]); NULL = any.
static void s_model_list(PGresult *result, int row, int column, proto_model_list_t *list)
{
    memset(list, 0, sizeof *list);
    list->any = true;
    if (PQgetisnull(result, row, column))
        return;
    json_t *array = json_loads(PQgetvalue(result, row, column), 0, NULL);
    if (json_is_array(array)) {
        list->any = false;
        list->count = json_array_size(array);
        list->names = calloc(list->count ? list->count : 1, sizeof *list->names);
        for (size_t i = 0; i < list->count; i++) {
            const char *name = json_string_value(json_array_get(array, i));
            list->names[i] = strdup(name ? name : "");
        }
    }
    json_decref(array);
}

//  Parses a JSON array of tags (array_to_json of a text[]).
static void s_tags(PGresult *result, int row, int column, proto_tags_t *tags)
{
    memset(tags, 0, sizeof *tags);
    if (PQgetisnull(result, row, column))
        return;
    json_t *array = json_loads(PQgetvalue(result, row, column), 0, NULL);
    if (json_is_array(array) && json_array_size(array)) {
        tags->names = calloc(json_array_size(array), sizeof *tags->names);
        assert(tags->names);
        for (size_t i = 0; i < json_array_size(array); i++) {
            const char *name = json_string_value(json_array_get(array, i));
            if (name)
                tags->names[tags->count++] = strdup(name);
        }
    }
    json_decref(array);
}

static void s_limits(PGresult *result, int row, int first, proto_limits_t *limits)
{
    limits->rpm = s_int(result, row, first, 0);
    limits->tpm = s_int(result, row, first + 1, 0);
    limits->concurrency = s_int(result, row, first + 2, 0);
    limits->daily_micros = s_int(result, row, first + 3, -1);
    limits->monthly_micros = s_int(result, row, first + 4, -1);
}

#define S_LIMIT_COLUMNS                                                                            \
    "rpm_limit, tpm_limit, concurrency_limit, daily_spend_micros, monthly_spend_micros"

static int s_load_accounts(proto_catalog_t *self, PGconn *db, char *error, size_t error_size)
{
    PGresult *result = s_query(db,
                               "SELECT id, name, status, balance_micros, currency, "
                               "array_to_json(allowed_models)::text, " S_LIMIT_COLUMNS
                               ", array_to_json(force_capabilities)::text, multiplier_ppm"
                               " FROM accounts ORDER BY id",
                               error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    self->accounts = calloc((size_t)rows + 1, sizeof *self->accounts);
    for (int row = 0; row < rows; row++) {
        proto_account_t *account = &self->accounts[self->account_count++];
        account->id = (uint64_t)s_int(result, row, 0, 0);
        account->name = s_text(result, row, 1);
        account->active = strcmp(PQgetvalue(result, row, 2), "active") == 0;
        account->balance_micros = s_int(result, row, 3, 0);
        account->currency = s_text(result, row, 4);
        s_model_list(result, row, 5, &account->models);
        s_limits(result, row, 6, &account->limits);
        s_tags(result, row, 11, &account->force_capabilities);
        account->multiplier_ppm = s_int(result, row, 12, 1000000);
    }
    PQclear(result);
    return 0;
}

static int s_load_keys(proto_catalog_t *self, PGconn *db, char *error, size_t error_size)
{
    PGresult *result =
        s_query(db,
                "SELECT id, account_id, name, key_hash, key_prefix, status, "
                "array_to_json(allowed_models)::text, "
                "coalesce((extract(epoch FROM expires_at) * 1000000)::bigint, 0), " S_LIMIT_COLUMNS
                ", array_to_json(force_capabilities)::text FROM api_keys ORDER BY id",
                error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    self->keys = calloc((size_t)rows + 1, sizeof *self->keys);
    for (int row = 0; row < rows; row++) {
        proto_api_key_t *key = &self->keys[self->key_count++];
        key->id = (uint64_t)s_int(result, row, 0, 0);
        key->account_id = (uint64_t)s_int(result, row, 1, 0);
        key->name = s_text(result, row, 2);
        snprintf(key->hash, sizeof key->hash, "%s", PQgetvalue(result, row, 3));
        key->prefix = s_text(result, row, 4);
        key->status = s_text(result, row, 5);
        s_model_list(result, row, 6, &key->models);
        key->expires_us = s_int(result, row, 7, 0);
        s_limits(result, row, 8, &key->limits);
        s_tags(result, row, 13, &key->force_capabilities);
        zhashx_insert(self->keys_by_hash, key->hash, key);
    }
    PQclear(result);
    return 0;
}

//  Sets bit (status - 400) of bits for every status in a JSON array.
static void s_status_bits(json_t *array, uint64_t bits[4])
{
    memset(bits, 0, 4 * sizeof *bits);
    size_t index;
    json_t *item;
    json_array_foreach(array, index, item)
    {
        json_int_t status = json_integer_value(item);
        if (status >= 400 && status <= 599)
            bits[(status - 400) / 64] |= 1ULL << ((status - 400) % 64);
    }
}

//  Extra headers from a JSON object {name: value} as "Name: value" lines.
static void s_header_lines(json_t *object, proto_tags_t *headers)
{
    memset(headers, 0, sizeof *headers);
    if (!json_is_object(object) || !json_object_size(object))
        return;
    headers->names = calloc(json_object_size(object), sizeof *headers->names);
    assert(headers->names);
    const char *name;
    json_t *value;
    json_object_foreach(object, name, value)
    {
        if (!json_is_string(value))
            continue;
        char *line = NULL;
        if (asprintf(&line, "%s: %s", name, json_string_value(value)) < 0)
            continue;
        headers->names[headers->count++] = line;
    }
}

//  A JSON array of strings into tags.
static void s_json_strings(json_t *array, proto_tags_t *tags)
{
    memset(tags, 0, sizeof *tags);
    if (!json_is_array(array) || !json_array_size(array))
        return;
    tags->names = calloc(json_array_size(array), sizeof *tags->names);
    assert(tags->names);
    for (size_t i = 0; i < json_array_size(array); i++)
        if (json_is_string(json_array_get(array, i)))
            tags->names[tags->count++] = strdup(json_string_value(json_array_get(array, i)));
}

static char *s_open_secret(PGresult *result, int row, const char *secret_key);

//  A provider's default prices, -1 where not set: none at all unless both
//  input and output are set (the schema holds them together); cache prices
//  default to the input price, the request price to 0.
static void s_default_prices(proto_provider_t *provider, int64_t in, int64_t out,
                             int64_t cache_read, int64_t cache_write, int64_t request)
{
    bool priced = in >= 0 && out >= 0;
    provider->default_price_in_micros = priced ? in : -1;
    provider->default_price_out_micros = priced ? out : -1;
    provider->default_price_cache_read_micros = priced ? (cache_read >= 0 ? cache_read : in) : -1;
    provider->default_price_cache_write_micros =
        priced ? (cache_write >= 0 ? cache_write : in) : -1;
    provider->default_price_request_micros = priced ? (request >= 0 ? request : 0) : -1;
}

static int s_load_providers(proto_catalog_t *self, PGconn *db, const char *secret_key, char *error,
                            size_t error_size)
{
    //  Columns 2 and 3 are the sealed proxies and their nonce, where
    //  s_open_secret expects them.
    PGresult *result = s_query(db,
                               "SELECT id, name, proxies_sealed, proxies_nonce, protocol, "
                               "base_url, priority, weight, status, strict_conversion, "
                               "headers::text, path, array_to_json(blocked_models)::text, "
                               "array_to_json(failover_statuses)::text, "
                               "array_to_json(return_statuses)::text, "
                               "cardinality(proxy_hints), account_id, default_price_in_micros, "
                               "default_price_out_micros, default_price_cache_read_micros, "
                               "default_price_cache_write_micros, default_price_request_micros "
                               "FROM providers ORDER BY id",
                               error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    int rc = 0;
    self->providers = calloc((size_t)rows + 1, sizeof *self->providers);
    for (int row = 0; row < rows; row++) {
        proto_provider_t *provider = &self->providers[self->provider_count++];
        provider->id = (uint64_t)s_int(result, row, 0, 0);
        provider->name = s_text(result, row, 1);
        provider->protocol = proto_protocol_parse(PQgetvalue(result, row, 4));
        provider->base_url = s_text(result, row, 5);
        size_t length = strlen(provider->base_url);
        while (length && provider->base_url[length - 1] == '/')
            provider->base_url[--length] = '\0';
        provider->priority = (int)s_int(result, row, 6, 0);
        provider->weight = (int)s_int(result, row, 7, 1);
        provider->active = strcmp(PQgetvalue(result, row, 8), "active") == 0;
        provider->strict = strcmp(PQgetvalue(result, row, 9), "t") == 0;
        json_t *headers = json_loads(PQgetvalue(result, row, 10), 0, NULL);
        s_header_lines(headers, &provider->headers);
        json_decref(headers);
        provider->path = PQgetisnull(result, row, 11) ? NULL : s_text(result, row, 11);
        s_tags(result, row, 12, &provider->blocked_models);
        json_t *statuses = json_loads(PQgetvalue(result, row, 13), 0, NULL);
        s_status_bits(statuses, provider->failover);
        json_decref(statuses);
        statuses = json_loads(PQgetvalue(result, row, 14), 0, NULL);
        s_status_bits(statuses, provider->returned);
        json_decref(statuses);
        provider->proxy_count = (size_t)s_int(result, row, 15, 0);
        provider->account_id = (uint64_t)s_int(result, row, 16, 0);
        s_default_prices(provider, s_int(result, row, 17, -1), s_int(result, row, 18, -1),
                         s_int(result, row, 19, -1), s_int(result, row, 20, -1),
                         s_int(result, row, 21, -1));
        if (secret_key && !PQgetisnull(result, row, 2)) {
            char *opened = s_open_secret(result, row, secret_key);
            json_t *proxies = opened ? json_loads(opened, 0, NULL) : NULL;
            if (opened) {
                memset(opened, 0, strlen(opened));
                free(opened);
            }
            if (!json_is_array(proxies) && rc == 0) {
                snprintf(error, error_size,
                         "the proxies of provider %llu cannot be decrypted: is secret_key the "
                         "one they were stored with?",
                         (unsigned long long)provider->id);
                rc = -1;
            }
            s_json_strings(proxies, &provider->proxies);
            json_decref(proxies);
        }
    }
    PQclear(result);
    return rc;
}

static int s_load_model_settings(proto_catalog_t *self, PGconn *db, char *error, size_t error_size)
{
    PGresult *result =
        s_query(db,
                "SELECT id, provider_id, model, protocol, path "
                "FROM provider_model_settings ORDER BY provider_id, model COLLATE \"C\"",
                error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    self->model_settings = calloc((size_t)rows + 1, sizeof *self->model_settings);
    for (int row = 0; row < rows; row++) {
        proto_model_setting_t *setting = &self->model_settings[self->model_setting_count++];
        setting->id = (uint64_t)s_int(result, row, 0, 0);
        setting->provider_id = (uint64_t)s_int(result, row, 1, 0);
        setting->model = s_text(result, row, 2);
        setting->protocol =
            PQgetisnull(result, row, 3) ? 0 : proto_protocol_parse(PQgetvalue(result, row, 3));
        setting->path = PQgetisnull(result, row, 4) ? NULL : s_text(result, row, 4);
    }
    PQclear(result);
    return 0;
}

static char *s_open_secret(PGresult *result, int row, const char *secret_key)
{
    size_t sealed_size = 0, nonce_size = 0;
    unsigned char *sealed =
        PQunescapeBytea((const unsigned char *)PQgetvalue(result, row, 2), &sealed_size);
    unsigned char *nonce =
        PQunescapeBytea((const unsigned char *)PQgetvalue(result, row, 3), &nonce_size);
    char *secret = NULL;
    if (sealed && nonce && nonce_size == proto_crypto_nonce_size())
        secret = proto_crypto_open(secret_key, nonce, sealed, sealed_size);
    PQfreemem(sealed);
    PQfreemem(nonce);
    return secret;
}

static int s_load_provider_keys(proto_catalog_t *self, PGconn *db, const char *secret_key,
                                char *error, size_t error_size)
{
    PGresult *result = s_query(db,
                               "SELECT id, provider_id, secret_sealed, secret_nonce, "
                               "secret_hint, priority, weight, status, multiplier_ppm, "
                               "array_to_json(capabilities)::text, max_rps, max_concurrent, "
                               "coalesce(disabled_reason, ''), name "
                               "FROM provider_keys ORDER BY id",
                               error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    self->provider_keys = calloc((size_t)rows + 1, sizeof *self->provider_keys);
    int rc = 0;
    for (int row = 0; row < rows; row++) {
        proto_provider_key_t *key = &self->provider_keys[self->provider_key_count++];
        key->id = (uint64_t)s_int(result, row, 0, 0);
        key->provider_id = (uint64_t)s_int(result, row, 1, 0);
        key->hint = s_text(result, row, 4);
        key->priority = (int)s_int(result, row, 5, 0);
        key->weight = (int)s_int(result, row, 6, 1);
        key->active = strcmp(PQgetvalue(result, row, 7), "active") == 0;
        key->multiplier_ppm = s_int(result, row, 8, 1000000);
        s_tags(result, row, 9, &key->capabilities);
        key->max_rps = s_int(result, row, 10, 0);
        key->max_concurrent = s_int(result, row, 11, 0);
        key->disabled_reason = s_text(result, row, 12);
        key->name = s_text(result, row, 13);
        if (secret_key) {
            key->secret = s_open_secret(result, row, secret_key);
            if (!key->secret && rc == 0) {
                //  A secret that will not open means the wrong secret_key:
                //  every call with it would fail, so refuse the whole load.
                snprintf(error, error_size,
                         "provider key %llu cannot be decrypted: is secret_key the one it was "
                         "stored with?",
                         (unsigned long long)key->id);
                rc = -1;
            }
        }
    }
    PQclear(result);
    return rc;
}

static int s_load_models(proto_catalog_t *self, PGconn *db, char *error, size_t error_size)
{
    PGresult *result = s_query(
        db,
        "SELECT id, name, status, price_in_micros, price_out_micros, price_cache_read_micros, "
        "price_cache_write_micros, coalesce(price_cache_write_1h_micros, "
        "price_cache_write_micros), "
        "price_request_micros, "
        "long_context_threshold, long_price_in_micros, long_price_out_micros, scheduling, "
        "extract(epoch FROM created_at)::bigint, array_to_json(capabilities)::text, "
        "strict_conversion, array_to_json(force_capabilities)::text, max_output_tokens, "
        "price_image_micros FROM models ORDER BY id",
        error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    self->models = calloc((size_t)rows + 1, sizeof *self->models);
    for (int row = 0; row < rows; row++) {
        proto_model_t *model = &self->models[self->model_count++];
        model->id = (uint64_t)s_int(result, row, 0, 0);
        model->name = s_text(result, row, 1);
        model->active = strcmp(PQgetvalue(result, row, 2), "active") == 0;
        model->price_in_micros = s_int(result, row, 3, 0);
        model->price_out_micros = s_int(result, row, 4, 0);
        model->price_cache_read_micros = s_int(result, row, 5, 0);
        model->price_cache_write_micros = s_int(result, row, 6, 0);
        model->price_cache_write_1h_micros = s_int(result, row, 7, 0);
        model->price_request_micros = s_int(result, row, 8, 0);
        model->long_context_threshold = s_int(result, row, 9, 0);
        model->long_price_in_micros = s_int(result, row, 10, model->price_in_micros);
        model->long_price_out_micros = s_int(result, row, 11, model->price_out_micros);
        model->scheduling = s_text(result, row, 12);
        model->created_s = s_int(result, row, 13, 0);
        s_tags(result, row, 14, &model->capabilities);
        model->strict = strcmp(PQgetvalue(result, row, 15), "t") == 0;
        s_tags(result, row, 16, &model->force_capabilities);
        model->max_output_tokens = s_int(result, row, 17, 0);
        model->price_image_micros = s_int(result, row, 18, -1);
        zhashx_insert(self->models_by_name, model->name, model);
    }
    PQclear(result);
    return 0;
}

static int s_load_routes(proto_catalog_t *self, PGconn *db, char *error, size_t error_size)
{
    PGresult *result = s_query(db,
                               "SELECT id, model_id, provider_id, upstream_model, priority, "
                               "weight, status FROM routes "
                               "ORDER BY model_id, priority DESC, id",
                               error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    self->routes = calloc((size_t)rows + 1, sizeof *self->routes);
    for (int row = 0; row < rows; row++) {
        proto_route_t *route = &self->routes[self->route_count++];
        route->id = (uint64_t)s_int(result, row, 0, 0);
        route->model_id = (uint64_t)s_int(result, row, 1, 0);
        route->provider_id = (uint64_t)s_int(result, row, 2, 0);
        route->upstream_model = s_text(result, row, 3);
        route->priority = (int)s_int(result, row, 4, 0);
        route->weight = (int)s_int(result, row, 5, 1);
        route->active = strcmp(PQgetvalue(result, row, 6), "active") == 0;
    }
    PQclear(result);
    return 0;
}

//  True when migration 0002 (routing) is applied: its tables are read only
//  then, so programs keep working against a database that lacks them.
static bool s_has_routing_schema(PGconn *db)
{
    PGresult *result = PQexec(db, "SELECT to_regclass('provider_models') IS NOT NULL");
    bool present = PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1 &&
                   strcmp(PQgetvalue(result, 0, 0), "t") == 0;
    PQclear(result);
    return present;
}

static int s_load_rules(proto_catalog_t *self, PGconn *db, bool routing, char *error,
                        size_t error_size)
{
    PGresult *result = s_query(db,
                               routing ? "SELECT id, model_id, kind, pattern, "
                                         "coalesce(provider_id, 0), priority, weight "
                                         "FROM mapping_rules ORDER BY model_id, id"
                                       : "SELECT id, model_id, kind, pattern, "
                                         "coalesce(provider_id, 0), 0, 1 "
                                         "FROM mapping_rules ORDER BY model_id, id",
                               error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    self->rules = calloc((size_t)rows + 1, sizeof *self->rules);
    for (int row = 0; row < rows; row++) {
        proto_mapping_rule_t *rule = &self->rules[self->rule_count++];
        rule->id = (uint64_t)s_int(result, row, 0, 0);
        rule->model_id = (uint64_t)s_int(result, row, 1, 0);
        rule->kind = s_text(result, row, 2);
        rule->pattern = s_text(result, row, 3);
        rule->provider_id = (uint64_t)s_int(result, row, 4, 0);
        rule->priority = (int)s_int(result, row, 5, 0);
        rule->weight = (int)s_int(result, row, 6, 1);
    }
    PQclear(result);
    return 0;
}

static int s_load_provider_models(proto_catalog_t *self, PGconn *db, char *error, size_t error_size)
{
    PGresult *result =
        s_query(db,
                "SELECT provider_id, model, extract(epoch FROM first_seen_at)::bigint "
                "FROM provider_models ORDER BY provider_id, model",
                error, error_size);
    if (!result)
        return -1;
    int rows = PQntuples(result);
    self->provider_models = calloc((size_t)rows + 1, sizeof *self->provider_models);
    for (int row = 0; row < rows; row++) {
        proto_provider_model_t *entry = &self->provider_models[self->provider_model_count++];
        entry->provider_id = (uint64_t)s_int(result, row, 0, 0);
        entry->name = s_text(result, row, 1);
        entry->first_seen_s = s_int(result, row, 2, 0);
    }
    PQclear(result);
    return 0;
}

//  The transaction's snapshot, read by its first statement: REPEATABLE READ
//  takes the snapshot there, so every table below (balances included) is
//  read as of exactly these committed transactions.
static int s_load_snapshot(proto_catalog_t *self, PGconn *db, char *error, size_t error_size)
{
    PGresult *result = s_query(db, "SELECT pg_current_snapshot()::text", error, error_size);
    if (!result)
        return -1;
    int rc = proto_snapshot_parse(&self->snapshot, PQgetvalue(result, 0, 0));
    if (rc != 0)
        snprintf(error, error_size, "loading configuration: snapshot '%s' not understood",
                 PQgetvalue(result, 0, 0));
    PQclear(result);
    return rc;
}

proto_catalog_t *proto_catalog_load(PGconn *db, const char *secret_key, char *error,
                                    size_t error_size)
{
    proto_catalog_t *self = proto_catalog_new_empty();
    //  One REPEATABLE READ transaction: every table from the same moment.
    PGresult *begin = PQexec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    bool began = PQresultStatus(begin) == PGRES_COMMAND_OK;
    PQclear(begin);
    int rc = began ? 0 : -1;
    if (!began)
        snprintf(error, error_size, "loading configuration: %s", PQerrorMessage(db));
    if (rc == 0)
        rc = s_load_snapshot(self, db, error, error_size);
    if (rc == 0)
        rc = s_load_accounts(self, db, error, error_size);
    if (rc == 0)
        rc = s_load_keys(self, db, error, error_size);
    if (rc == 0)
        rc = s_load_providers(self, db, secret_key, error, error_size);
    if (rc == 0)
        rc = s_load_model_settings(self, db, error, error_size);
    if (rc == 0)
        rc = s_load_provider_keys(self, db, secret_key, error, error_size);
    if (rc == 0)
        rc = s_load_models(self, db, error, error_size);
    if (rc == 0)
        rc = s_load_routes(self, db, error, error_size);
    bool routing = rc == 0 && s_has_routing_schema(db);
    if (rc == 0)
        rc = s_load_rules(self, db, routing, error, error_size);
    if (rc == 0 && routing)
        rc = s_load_provider_models(self, db, error, error_size);
    if (began)
        PQclear(PQexec(db, "COMMIT"));
    if (rc != 0)
        proto_catalog_destroy(&self);
    return self;
}

//  --------------------------------------------------------------------------
//  From JSON (tests and tools)

static char *s_json_str(json_t *object, const char *name, const char *fallback)
{
    const char *value = json_string_value(json_object_get(object, name));
    return strdup(value ? value : fallback);
}

static int64_t s_json_int(json_t *object, const char *name, int64_t fallback)
{
    json_t *value = json_object_get(object, name);
    return json_is_integer(value) ? (int64_t)json_integer_value(value) : fallback;
}

static bool s_json_active(json_t *object)
{
    const char *status = json_string_value(json_object_get(object, "status"));
    return !status || strcmp(status, "active") == 0;
}

static void s_json_tags(json_t *object, const char *name, proto_tags_t *tags)
{
    memset(tags, 0, sizeof *tags);
    json_t *array = json_object_get(object, name);
    if (!json_is_array(array) || !json_array_size(array))
        return;
    tags->names = calloc(json_array_size(array), sizeof *tags->names);
    assert(tags->names);
    for (size_t i = 0; i < json_array_size(array); i++)
        if (json_is_string(json_array_get(array, i)))
            tags->names[tags->count++] = strdup(json_string_value(json_array_get(array, i)));
}

static void s_json_list(json_t *object, const char *name, proto_model_list_t *list)
{
    memset(list, 0, sizeof *list);
    list->any = true;
    json_t *array = json_object_get(object, name);
    if (!json_is_array(array))
        return;
    list->any = false;
    list->names = calloc(json_array_size(array) + 1, sizeof *list->names);
    assert(list->names);
    for (size_t i = 0; i < json_array_size(array); i++)
        if (json_is_string(json_array_get(array, i)))
            list->names[list->count++] = strdup(json_string_value(json_array_get(array, i)));
}

static int s_by_id(const void *a, const void *b, size_t offset)
{
    uint64_t left = *(const uint64_t *)((const char *)a + offset);
    uint64_t right = *(const uint64_t *)((const char *)b + offset);
    return left < right ? -1 : left > right;
}
#define S_ID_COMPARE(type)                                                                         \
    static int s_compare_##type(const void *a, const void *b)                                      \
    {                                                                                              \
        return s_by_id(a, b, offsetof(type, id));                                                  \
    }
S_ID_COMPARE(proto_account_t)
S_ID_COMPARE(proto_api_key_t)
S_ID_COMPARE(proto_provider_t)
S_ID_COMPARE(proto_provider_key_t)
S_ID_COMPARE(proto_model_t)

//  The loader's orders: routes by model, priority desc, id; rules by model,
//  id; provider models by provider, name.
static int s_compare_route(const void *a, const void *b)
{
    const proto_route_t *left = a, *right = b;
    if (left->model_id != right->model_id)
        return left->model_id < right->model_id ? -1 : 1;
    if (left->priority != right->priority)
        return left->priority > right->priority ? -1 : 1;
    return left->id < right->id ? -1 : left->id > right->id;
}

static int s_compare_rule(const void *a, const void *b)
{
    const proto_mapping_rule_t *left = a, *right = b;
    if (left->model_id != right->model_id)
        return left->model_id < right->model_id ? -1 : 1;
    return left->id < right->id ? -1 : left->id > right->id;
}

static int s_compare_provider_model(const void *a, const void *b)
{
    const proto_provider_model_t *left = a, *right = b;
    if (left->provider_id != right->provider_id)
        return left->provider_id < right->provider_id ? -1 : 1;
    return strcmp(left->name, right->name);
}

static int s_compare_model_setting(const void *a, const void *b)
{
    const proto_model_setting_t *left = a, *right = b;
    if (left->provider_id != right->provider_id)
        return left->provider_id < right->provider_id ? -1 : 1;
    return strcmp(left->model, right->model);
}

//  Allocates self->NAME for the array `key` of root; sets count. Evaluates
//  to the array.
static json_t *s_json_array(json_t *root, const char *key, void **items, size_t item_size)
{
    json_t *array = json_object_get(root, key);
    size_t count = json_is_array(array) ? json_array_size(array) : 0;
    *items = calloc(count + 1, item_size);
    assert(*items);
    return json_is_array(array) ? array : NULL;
}

//  Limits in a JSON catalog: rpm, tpm, concurrency, daily_micros and
//  monthly_micros on the object, as the columns are named (caps -1 = none).
static void s_json_limits(json_t *item, proto_limits_t *limits)
{
    limits->rpm = s_json_int(item, "rpm", 0);
    limits->tpm = s_json_int(item, "tpm", 0);
    limits->concurrency = s_json_int(item, "concurrency", 0);
    limits->daily_micros = s_json_int(item, "daily_micros", -1);
    limits->monthly_micros = s_json_int(item, "monthly_micros", -1);
}

//  The providers of a JSON catalog, with how each is reached.
static void s_json_providers(proto_catalog_t *self, json_t *root)
{
    size_t i;
    json_t *item;
    json_t *array =
        s_json_array(root, "providers", (void **)&self->providers, sizeof *self->providers);
    json_array_foreach(array, i, item)
    {
        proto_provider_t *provider = &self->providers[self->provider_count++];
        provider->id = (uint64_t)s_json_int(item, "id", 0);
        provider->name = s_json_str(item, "name", "");
        char *protocol = s_json_str(item, "protocol", "openai");
        provider->protocol = proto_protocol_parse(protocol);
        free(protocol);
        provider->base_url = s_json_str(item, "base_url", "http://127.0.0.1");
        provider->priority = (int)s_json_int(item, "priority", 0);
        provider->weight = (int)s_json_int(item, "weight", 1);
        provider->active = s_json_active(item);
        provider->strict = json_is_true(json_object_get(item, "strict_conversion"));
        s_header_lines(json_object_get(item, "headers"), &provider->headers);
        s_json_strings(json_object_get(item, "proxies"), &provider->proxies);
        provider->proxy_count = provider->proxies.count;
        const char *path = json_string_value(json_object_get(item, "path"));
        provider->path = path ? strdup(path) : NULL;
        s_json_strings(json_object_get(item, "blocked_models"), &provider->blocked_models);
        s_status_bits(json_object_get(item, "failover_statuses"), provider->failover);
        s_status_bits(json_object_get(item, "return_statuses"), provider->returned);
        provider->account_id = (uint64_t)s_json_int(item, "account_id", 0);
        s_default_prices(provider, s_json_int(item, "default_price_in_micros", -1),
                         s_json_int(item, "default_price_out_micros", -1),
                         s_json_int(item, "default_price_cache_read_micros", -1),
                         s_json_int(item, "default_price_cache_write_micros", -1),
                         s_json_int(item, "default_price_request_micros", -1));
    }
}

static void s_json_models(proto_catalog_t *self, json_t *root)
{
    size_t i;
    json_t *item;
    json_t *array = s_json_array(root, "models", (void **)&self->models, sizeof *self->models);
    json_array_foreach(array, i, item)
    {
        proto_model_t *model = &self->models[self->model_count++];
        model->id = (uint64_t)s_json_int(item, "id", 0);
        model->name = s_json_str(item, "name", "");
        model->active = s_json_active(item);
        model->price_in_micros = s_json_int(item, "price_in_micros", 0);
        model->price_out_micros = s_json_int(item, "price_out_micros", 0);
        //  Every price the database loader reads, with its defaults.
        model->price_cache_read_micros = s_json_int(item, "price_cache_read_micros", 0);
        model->price_cache_write_micros = s_json_int(item, "price_cache_write_micros", 0);
        model->price_cache_write_1h_micros =
            s_json_int(item, "price_cache_write_1h_micros", model->price_cache_write_micros);
        model->price_request_micros = s_json_int(item, "price_request_micros", 0);
        model->long_context_threshold = s_json_int(item, "long_context_threshold", 0);
        model->created_s = s_json_int(item, "created_s", 0);
        model->long_price_in_micros =
            s_json_int(item, "long_price_in_micros", model->price_in_micros);
        model->long_price_out_micros =
            s_json_int(item, "long_price_out_micros", model->price_out_micros);
        model->scheduling = s_json_str(item, "scheduling", "priority");
        s_json_tags(item, "capabilities", &model->capabilities);
        model->strict = json_is_true(json_object_get(item, "strict_conversion"));
        s_json_tags(item, "force_capabilities", &model->force_capabilities);
        model->max_output_tokens = s_json_int(item, "max_output_tokens", 0);
        model->price_image_micros = s_json_int(item, "price_image_micros", -1);
    }
}

proto_catalog_t *proto_catalog_from_json(const char *text, char *error, size_t error_size)
{
    json_error_t problem;
    json_t *root = json_loads(text, 0, &problem);
    if (!json_is_object(root)) {
        snprintf(error, error_size, "catalog JSON: %s", root ? "not an object" : problem.text);
        json_decref(root);
        return NULL;
    }
    proto_catalog_t *self = proto_catalog_new_empty();
    size_t i;
    json_t *item;
    json_t *array =
        s_json_array(root, "accounts", (void **)&self->accounts, sizeof *self->accounts);
    json_array_foreach(array, i, item)
    {
        proto_account_t *account = &self->accounts[self->account_count++];
        account->id = (uint64_t)s_json_int(item, "id", 0);
        account->name = s_json_str(item, "name", "");
        account->active = s_json_active(item);
        account->balance_micros = s_json_int(item, "balance_micros", 0);
        account->currency = s_json_str(item, "currency", "USD");
        s_json_list(item, "allowed_models", &account->models);
        s_json_limits(item, &account->limits);
        account->multiplier_ppm = s_json_int(item, "multiplier_ppm", 1000000);
    }
    array = s_json_array(root, "keys", (void **)&self->keys, sizeof *self->keys);
    json_array_foreach(array, i, item)
    {
        proto_api_key_t *key = &self->keys[self->key_count++];
        key->id = (uint64_t)s_json_int(item, "id", 0);
        key->account_id = (uint64_t)s_json_int(item, "account_id", 0);
        key->name = s_json_str(item, "name", "");
        char *hash = s_json_str(item, "hash", "");
        snprintf(key->hash, sizeof key->hash, "%s", hash);
        free(hash);
        key->prefix = s_json_str(item, "prefix", "");
        key->status = s_json_str(item, "status", "active");
        s_json_list(item, "allowed_models", &key->models);
        s_json_limits(item, &key->limits);
    }
    s_json_providers(self, root);
    array = s_json_array(root, "provider_keys", (void **)&self->provider_keys,
                         sizeof *self->provider_keys);
    json_array_foreach(array, i, item)
    {
        proto_provider_key_t *key = &self->provider_keys[self->provider_key_count++];
        key->id = (uint64_t)s_json_int(item, "id", 0);
        key->provider_id = (uint64_t)s_json_int(item, "provider_id", 0);
        key->secret =
            json_is_string(json_object_get(item, "secret")) ? s_json_str(item, "secret", "") : NULL;
        key->hint = s_json_str(item, "hint", "");
        key->priority = (int)s_json_int(item, "priority", 0);
        key->weight = (int)s_json_int(item, "weight", 1);
        key->active = s_json_active(item);
        key->multiplier_ppm = s_json_int(item, "multiplier_ppm", 1000000);
        s_json_tags(item, "capabilities", &key->capabilities);
        key->max_rps = s_json_int(item, "max_rps", 0);
        key->max_concurrent = s_json_int(item, "max_concurrent", 0);
        key->disabled_reason = s_json_str(item, "disabled_reason", "");
        key->name = s_json_str(item, "name", "");
    }
    s_json_models(self, root);
    array = s_json_array(root, "routes", (void **)&self->routes, sizeof *self->routes);
    json_array_foreach(array, i, item)
    {
        proto_route_t *route = &self->routes[self->route_count++];
        route->id = (uint64_t)s_json_int(item, "id", 0);
        route->model_id = (uint64_t)s_json_int(item, "model_id", 0);
        route->provider_id = (uint64_t)s_json_int(item, "provider_id", 0);
        route->upstream_model = s_json_str(item, "upstream_model", "");
        route->priority = (int)s_json_int(item, "priority", 0);
        route->weight = (int)s_json_int(item, "weight", 1);
        route->active = s_json_active(item);
    }
    array = s_json_array(root, "mapping_rules", (void **)&self->rules, sizeof *self->rules);
    json_array_foreach(array, i, item)
    {
        proto_mapping_rule_t *rule = &self->rules[self->rule_count++];
        rule->id = (uint64_t)s_json_int(item, "id", 0);
        rule->model_id = (uint64_t)s_json_int(item, "model_id", 0);
        rule->kind = s_json_str(item, "kind", "exact");
        rule->pattern = s_json_str(item, "pattern", "");
        rule->provider_id = (uint64_t)s_json_int(item, "provider_id", 0);
        rule->priority = (int)s_json_int(item, "priority", 0);
        rule->weight = (int)s_json_int(item, "weight", 1);
    }
    array = s_json_array(root, "provider_models", (void **)&self->provider_models,
                         sizeof *self->provider_models);
    json_array_foreach(array, i, item)
    {
        proto_provider_model_t *entry = &self->provider_models[self->provider_model_count++];
        entry->provider_id = (uint64_t)s_json_int(item, "provider_id", 0);
        entry->name = s_json_str(item, "name", "");
        entry->first_seen_s = s_json_int(item, "first_seen_s", 0);
    }
    array = s_json_array(root, "model_settings", (void **)&self->model_settings,
                         sizeof *self->model_settings);
    json_array_foreach(array, i, item)
    {
        proto_model_setting_t *setting = &self->model_settings[self->model_setting_count++];
        setting->id = (uint64_t)s_json_int(item, "id", 0);
        setting->provider_id = (uint64_t)s_json_int(item, "provider_id", 0);
        setting->model = s_json_str(item, "model", "");
        const char *protocol = json_string_value(json_object_get(item, "protocol"));
        setting->protocol = protocol ? proto_protocol_parse(protocol) : 0;
        const char *path = json_string_value(json_object_get(item, "path"));
        setting->path = path ? strdup(path) : NULL;
    }
    const char *snapshot = json_string_value(json_object_get(root, "snapshot"));
    if (snapshot && proto_snapshot_parse(&self->snapshot, snapshot) != 0)
        log_warn(NULL, "catalog JSON: snapshot '%s' not understood; none kept", snapshot);
    json_decref(root);
    qsort(self->accounts, self->account_count, sizeof *self->accounts, s_compare_proto_account_t);
    qsort(self->keys, self->key_count, sizeof *self->keys, s_compare_proto_api_key_t);
    qsort(self->providers, self->provider_count, sizeof *self->providers,
          s_compare_proto_provider_t);
    qsort(self->provider_keys, self->provider_key_count, sizeof *self->provider_keys,
          s_compare_proto_provider_key_t);
    qsort(self->models, self->model_count, sizeof *self->models, s_compare_proto_model_t);
    qsort(self->routes, self->route_count, sizeof *self->routes, s_compare_route);
    qsort(self->rules, self->rule_count, sizeof *self->rules, s_compare_rule);
    qsort(self->provider_models, self->provider_model_count, sizeof *self->provider_models,
          s_compare_provider_model);
    qsort(self->model_settings, self->model_setting_count, sizeof *self->model_settings,
          s_compare_model_setting);
    //  The name indexes point into the arrays: build them after sorting.
    for (i = 0; i < self->key_count; i++)
        zhashx_insert(self->keys_by_hash, self->keys[i].hash, &self->keys[i]);
    for (i = 0; i < self->model_count; i++)
        zhashx_insert(self->models_by_name, self->models[i].name, &self->models[i]);
    return self;
}

//  --------------------------------------------------------------------------
//  Lookups

#define S_BSEARCH(array, count, wanted)                                                            \
    do {                                                                                           \
        size_t low = 0, high = (count);                                                            \
        while (low < high) {                                                                       \
            size_t middle = (low + high) / 2;                                                      \
            if ((array)[middle].id == (wanted))                                                    \
                return &(array)[middle];                                                           \
            if ((array)[middle].id < (wanted))                                                     \
                low = middle + 1;                                                                  \
            else                                                                                   \
                high = middle;                                                                     \
        }                                                                                          \
        return NULL;                                                                               \
    } while (0)

const proto_api_key_t *proto_catalog_key_by_hash(proto_catalog_t *self, const char *hash)
{
    const proto_api_key_t *key = zhashx_lookup(self->keys_by_hash, hash);
    //  The table lookup finds the candidate; the final word is a
    //  constant-time comparison of the whole hash.
    if (key && !proto_crypto_equal(key->hash, hash))
        return NULL;
    return key;
}

const proto_api_key_t *proto_catalog_key(proto_catalog_t *self, uint64_t id)
{
    S_BSEARCH(self->keys, self->key_count, id);
}

const proto_account_t *proto_catalog_account(proto_catalog_t *self, uint64_t id)
{
    S_BSEARCH(self->accounts, self->account_count, id);
}

const proto_model_t *proto_catalog_model(proto_catalog_t *self, uint64_t id)
{
    S_BSEARCH(self->models, self->model_count, id);
}

const proto_provider_t *proto_catalog_provider(proto_catalog_t *self, uint64_t id)
{
    S_BSEARCH(self->providers, self->provider_count, id);
}

const proto_provider_key_t *proto_catalog_provider_key(proto_catalog_t *self, uint64_t id)
{
    S_BSEARCH(self->provider_keys, self->provider_key_count, id);
}

const proto_model_t *proto_catalog_model_by_name(proto_catalog_t *self, const char *name)
{
    return zhashx_lookup(self->models_by_name, name);
}

const proto_model_t *proto_catalog_model_named(proto_catalog_t *self, const char *name)
{
    const proto_model_t *model = zhashx_lookup(self->models_by_name, name);
    if (!model && self->unlisted_by_name)
        model = zhashx_lookup(self->unlisted_by_name, name);
    return model;
}

//  The provider a `provider/model` name pins, as routing reads it: the part
//  before the first '/' is a provider's name. NULL when it is not.
static const proto_provider_t *s_pinned_provider(proto_catalog_t *self, const char *name)
{
    const char *slash = strchr(name, '/');
    if (!slash || slash == name || (size_t)(slash - name) >= 128)
        return NULL;
    char provider[128];
    snprintf(provider, sizeof provider, "%.*s", (int)(slash - name), name);
    return proto_catalog_provider_by_name(self, provider);
}

const proto_model_t *proto_catalog_model_for_client(proto_catalog_t *self, const char *name)
{
    const proto_model_t *model = proto_catalog_model_named(self, name);
    if (model || !strchr(name, '/'))
        return model;
    if (!s_pinned_provider(self, name))
        return NULL;
    return proto_catalog_model_named(self, strchr(name, '/') + 1);
}

//  True when the provider's default prices make the names it lists
//  servable for everyone: it is the operator's, active and priced.
static bool s_prices_unlisted(const proto_provider_t *provider)
{
    return provider && provider->active && !provider->account_id &&
           provider->default_price_in_micros >= 0;
}

//  Raises *model's prices to the provider's default ones where lower.
static void s_raise_prices(proto_model_t *model, const proto_provider_t *provider)
{
#define S_RAISE(field, from)                                                                       \
    if (model->field < provider->from)                                                             \
        model->field = provider->from;
    S_RAISE(price_in_micros, default_price_in_micros)
    S_RAISE(price_out_micros, default_price_out_micros)
    S_RAISE(price_cache_read_micros, default_price_cache_read_micros)
    S_RAISE(price_cache_write_micros, default_price_cache_write_micros)
    S_RAISE(price_request_micros, default_price_request_micros)
#undef S_RAISE
    //  No long-context tier and no 1-hour cache price of its own: both are
    //  the normal ones (as the catalog fills them in for models).
    model->price_cache_write_1h_micros = model->price_cache_write_micros;
    model->long_price_in_micros = model->price_in_micros;
    model->long_price_out_micros = model->price_out_micros;
}

static int s_unlisted_by_name(const void *a, const void *b)
{
    return strcmp(((const proto_model_t *)a)->name, ((const proto_model_t *)b)->name);
}

//  The unlisted entry for `name`, added when new (the array has room for
//  every listed name). Entries are sorted and indexed once all are in.
static proto_model_t *s_unlisted_entry(proto_catalog_t *self, zhashx_t *seen, const char *name,
                                       int64_t first_seen_s)
{
    proto_model_t *model = zhashx_lookup(seen, name);
    if (model) {
        if (first_seen_s < model->created_s)
            model->created_s = first_seen_s;
        return model;
    }
    model = &self->unlisted[self->unlisted_count++];
    model->name = strdup(name);
    assert(model->name);
    model->active = true;
    model->unlisted = true;
    model->scheduling = strdup("");
    assert(model->scheduling);
    model->created_s = first_seen_s;
    model->price_image_micros = -1; //  billed per token only: makes no images
    zhashx_insert(seen, model->name, model);
    return model;
}

void proto_catalog_add_unlisted(proto_catalog_t *self, bool zero_config)
{
    assert(!self->unlisted_by_name); //  once, before the catalog is shared
    self->unlisted_by_name = zhashx_new();
    assert(self->unlisted_by_name);
    if (!zero_config || !self->provider_model_count)
        return;
    self->unlisted = calloc(self->provider_model_count, sizeof *self->unlisted);
    assert(self->unlisted);
    zhashx_t *seen = zhashx_new(); //  name -> entry, while entries may still move
    assert(seen);
    for (size_t i = 0; i < self->provider_model_count; i++) {
        const proto_provider_model_t *listed = &self->provider_models[i];
        const proto_provider_t *provider = proto_catalog_provider(self, listed->provider_id);
        //  Routing keeps names under 128 bytes; a logical model's name is
        //  that model, whatever the providers list.
        if (!s_prices_unlisted(provider) || strlen(listed->name) >= 128 ||
            zhashx_lookup(self->models_by_name, listed->name) ||
            proto_provider_blocks(provider, listed->name) || s_pinned_provider(self, listed->name))
            continue;
        s_raise_prices(s_unlisted_entry(self, seen, listed->name, listed->first_seen_s), provider);
    }
    zhashx_destroy(&seen);
    qsort(self->unlisted, self->unlisted_count, sizeof *self->unlisted, s_unlisted_by_name);
    for (size_t i = 0; i < self->unlisted_count; i++)
        zhashx_insert(self->unlisted_by_name, self->unlisted[i].name, &self->unlisted[i]);
}

const proto_model_t *proto_catalog_serving_price(proto_catalog_t *self, const proto_model_t *model,
                                                 uint64_t provider_id, proto_model_t *scratch)
{
    if (model && !model->unlisted)
        return model;
    //  Only the providers whose prices admitted the name (active, the
    //  operator's): any other charges the highest, never more than admitted.
    const proto_provider_t *provider = proto_catalog_provider(self, provider_id);
    if (!s_prices_unlisted(provider))
        return model;
    if (model)
        *scratch = *model;
    else {
        //  Gone from the catalog since admission (the provider's list was
        //  fetched again without it, a logical model was deleted): what it
        //  lists still costs its default prices, never nothing.
        memset(scratch, 0, sizeof *scratch);
        scratch->active = true;
        scratch->unlisted = true;
        scratch->price_image_micros = -1;
    }
    scratch->price_in_micros = 0;
    scratch->price_out_micros = 0;
    scratch->price_cache_read_micros = 0;
    scratch->price_cache_write_micros = 0;
    scratch->price_request_micros = 0;
    s_raise_prices(scratch, provider);
    return scratch;
}

size_t proto_catalog_unlisted_count(proto_catalog_t *self)
{
    return self->unlisted_count;
}

const proto_model_t *proto_catalog_unlisted_at(proto_catalog_t *self, size_t index)
{
    return index < self->unlisted_count ? &self->unlisted[index] : NULL;
}

size_t proto_catalog_model_count(proto_catalog_t *self)
{
    return self->model_count;
}

const proto_model_t *proto_catalog_model_at(proto_catalog_t *self, size_t index)
{
    return index < self->model_count ? &self->models[index] : NULL;
}

size_t proto_catalog_route_count(proto_catalog_t *self)
{
    return self->route_count;
}

const proto_route_t *proto_catalog_route_at(proto_catalog_t *self, size_t index)
{
    return index < self->route_count ? &self->routes[index] : NULL;
}

size_t proto_catalog_provider_key_count(proto_catalog_t *self)
{
    return self->provider_key_count;
}

const proto_provider_key_t *proto_catalog_provider_key_at(proto_catalog_t *self, size_t index)
{
    return index < self->provider_key_count ? &self->provider_keys[index] : NULL;
}

size_t proto_catalog_key_count(proto_catalog_t *self)
{
    return self->key_count;
}

bool proto_model_list_allows(const proto_model_list_t *list, const char *model)
{
    if (list->any)
        return true;
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->names[i], model) == 0)
            return true;
    return false;
}

const char *proto_catalog_key_problem(proto_catalog_t *self, const proto_api_key_t *key,
                                      uint64_t now_us)
{
    if (!key)
        return "unknown";
    if (strcmp(key->status, "active") != 0)
        return strcmp(key->status, "revoked") == 0 ? "revoked" : "disabled";
    if (key->expires_us > 0 && (uint64_t)key->expires_us <= now_us)
        return "expired";
    const proto_account_t *account = proto_catalog_account(self, key->account_id);
    if (!account || !account->active)
        return "account_disabled";
    return NULL;
}

bool proto_catalog_key_allows(proto_catalog_t *self, const proto_api_key_t *key, const char *model)
{
    //  A pin (`provider/model`) is its logical model: the lists name those.
    const proto_model_t *entry = proto_catalog_model_for_client(self, model);
    if (!entry || !entry->active)
        return false;
    const proto_account_t *account = proto_catalog_account(self, key->account_id);
    return account && proto_model_list_allows(&key->models, entry->name) &&
           proto_model_list_allows(&account->models, entry->name);
}

size_t proto_catalog_provider_count(proto_catalog_t *self)
{
    return self->provider_count;
}

const proto_provider_t *proto_catalog_provider_at(proto_catalog_t *self, size_t index)
{
    return index < self->provider_count ? &self->providers[index] : NULL;
}

size_t proto_catalog_rule_count(proto_catalog_t *self)
{
    return self->rule_count;
}

const proto_mapping_rule_t *proto_catalog_rule_at(proto_catalog_t *self, size_t index)
{
    return index < self->rule_count ? &self->rules[index] : NULL;
}

size_t proto_catalog_provider_model_count(proto_catalog_t *self)
{
    return self->provider_model_count;
}

const proto_provider_model_t *proto_catalog_provider_model_at(proto_catalog_t *self, size_t index)
{
    return index < self->provider_model_count ? &self->provider_models[index] : NULL;
}

const proto_model_setting_t *proto_catalog_model_setting(proto_catalog_t *self,
                                                         uint64_t provider_id, const char *model)
{
    proto_model_setting_t wanted = {.provider_id = provider_id, .model = (char *)model};
    return bsearch(&wanted, self->model_settings, self->model_setting_count,
                   sizeof *self->model_settings, s_compare_model_setting);
}

int proto_provider_status_policy(const proto_provider_t *provider, int status)
{
    if (status < 400 || status > 599)
        return -1;
    uint64_t bit = 1ULL << ((status - 400) % 64);
    if (provider->failover[(status - 400) / 64] & bit)
        return 1;
    if (provider->returned[(status - 400) / 64] & bit)
        return 0;
    return -1;
}

bool proto_provider_blocks(const proto_provider_t *provider, const char *model)
{
    for (size_t i = 0; i < provider->blocked_models.count; i++)
        if (fnmatch(provider->blocked_models.names[i], model, FNM_CASEFOLD) == 0)
            return true;
    return false;
}

const proto_provider_t *proto_catalog_provider_by_name(proto_catalog_t *self, const char *name)
{
    //  A handful of providers: a scan is cheaper than keeping an index.
    for (size_t i = 0; i < self->provider_count; i++)
        if (strcmp(self->providers[i].name, name) == 0)
            return &self->providers[i];
    return NULL;
}

bool proto_tags_has(const proto_tags_t *tags, const char *tag)
{
    for (size_t i = 0; i < tags->count; i++)
        if (strcasecmp(tags->names[i], tag) == 0)
            return true;
    return false;
}
