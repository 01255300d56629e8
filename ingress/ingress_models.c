#include "ingress_models.h"
#include "proto_check.h"
#include "ingress_parse.h"
#include "proto_msg.h"

#include <assert.h>
#include <czmq.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *text;          //  the list body
    uint64_t expires_ms; //  monotonic; rebuilt from then on
} s_entry_t;

struct _ingress_models_t {
    zhashx_t *entries;  //  "KEY_ID:PROTOCOL" -> s_entry_t
    uint64_t ttl_ms;    //  how long a list is served from the cache
    size_t max_entries; //  emptied when it would hold more
};

static void s_entry_destroy(void **item)
{
    s_entry_t *entry = *item;
    if (entry) {
        free(entry->text);
        free(entry);
    }
    *item = NULL;
}

ingress_models_t *ingress_models_new(uint64_t ttl_ms, size_t max_entries)
{
    ingress_models_t *self = calloc(1, sizeof *self);
    assert(self);
    self->entries = zhashx_new();
    assert(self->entries);
    zhashx_set_destructor(self->entries, s_entry_destroy);
    self->ttl_ms = ttl_ms;
    self->max_entries = max_entries ? max_entries : 1;
    return self;
}

void ingress_models_destroy(ingress_models_t **self_p)
{
    assert(self_p);
    ingress_models_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->entries);
    free(self);
    *self_p = NULL;
}

void ingress_models_reset(ingress_models_t *self)
{
    zhashx_purge(self->entries);
}

size_t ingress_models_size(ingress_models_t *self)
{
    return zhashx_size(self->entries);
}

//  One model in the shape of a protocol.
static json_t *s_entry(int protocol, const proto_model_t *model)
{
    if (protocol == PROTO_PROTOCOL_GEMINI) {
        char name[INGRESS_MODEL_MAX + 16];
        snprintf(name, sizeof name, "models/%s", model->name);
        return json_pack("{s:s, s:s, s:s, s:s, s:[s, s, s]}", "name", name, "baseModelId",
                         model->name, "version", "001", "displayName", model->name,
                         "supportedGenerationMethods", "generateContent", "streamGenerateContent",
                         "countTokens");
    }
    if (protocol == PROTO_PROTOCOL_ANTHROPIC) {
        char created[32];
        time_t seconds = (time_t)model->created_s;
        struct tm utc;
        gmtime_r(&seconds, &utc);
        strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &utc);
        return json_pack("{s:s, s:s, s:s, s:s}", "type", "model", "id", model->name, "display_name",
                         model->name, "created_at", created);
    }
    return json_pack("{s:s, s:s, s:I, s:s}", "id", model->name, "object", "model", "created",
                     (json_int_t)model->created_s, "owned_by", "tollgate");
}

static char *s_build(proto_catalog_t *catalog, const proto_api_key_t *key, int protocol)
{
    json_t *data = json_array();
    size_t count = proto_catalog_model_count(catalog);
    for (size_t i = 0; key && i < count; i++) {
        const proto_model_t *model = proto_catalog_model_at(catalog, i);
        if (model->active && proto_catalog_key_allows(catalog, key, model->name))
            json_array_append_new(data, s_entry(protocol, model));
    }
    //  Then the names providers list that no logical model has, where a
    //  provider's default prices make them servable (zero-config routing).
    count = proto_catalog_unlisted_count(catalog);
    for (size_t i = 0; key && i < count; i++) {
        const proto_model_t *model = proto_catalog_unlisted_at(catalog, i);
        if (proto_catalog_key_allows(catalog, key, model->name))
            json_array_append_new(data, s_entry(protocol, model));
    }
    json_t *root;
    if (protocol == PROTO_PROTOCOL_GEMINI)
        root = json_pack("{s:o}", "models", data);
    else if (protocol == PROTO_PROTOCOL_ANTHROPIC) {
        size_t size = json_array_size(data);
        json_t *first = json_object_get(json_array_get(data, 0), "id");
        json_t *last = json_object_get(json_array_get(data, size ? size - 1 : 0), "id");
        root = json_pack("{s:O, s:b, s:O?, s:O?}", "data", data, "has_more", 0, "first_id", first,
                         "last_id", last);
        json_decref(data);
    } else
        root = json_pack("{s:s, s:o}", "object", "list", "data", data);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    assert(text);
    return text;
}

const char *ingress_models_list(ingress_models_t *self, proto_catalog_t *catalog,
                                const proto_api_key_t *key, int protocol, uint64_t now_ms,
                                bool *hit)
{
    char name[48];
    snprintf(name, sizeof name, "%llu:%d", (unsigned long long)(key ? key->id : 0), protocol);
    s_entry_t *entry = zhashx_lookup(self->entries, name);
    if (hit)
        *hit = entry && now_ms < entry->expires_ms;
    if (entry && now_ms < entry->expires_ms)
        return entry->text;
    if (!entry) {
        //  Bounded memory whatever the number of keys polling: a full
        //  cache starts over (lists are cheap to rebuild, once per TTL).
        if (zhashx_size(self->entries) >= self->max_entries)
            zhashx_purge(self->entries);
        entry = calloc(1, sizeof *entry);
        assert(entry);
        zhashx_insert(self->entries, name, entry);
    }
    free(entry->text);
    entry->text = s_build(catalog, key, protocol);
    entry->expires_ms = now_ms + self->ttl_ms;
    return entry->text;
}

char *ingress_models_one(proto_catalog_t *catalog, const proto_api_key_t *key, int protocol,
                         const char *name)
{
    //  Gemini names models "models/NAME"; its SDKs send either form.
    if (protocol == PROTO_PROTOCOL_GEMINI && strncmp(name, "models/", 7) == 0)
        name += 7;
    const proto_model_t *model = proto_catalog_model_named(catalog, name);
    if (!key || !model || !model->active || !proto_catalog_key_allows(catalog, key, name))
        return NULL;
    json_t *entry = s_entry(protocol, model);
    char *text = json_dumps(entry, JSON_COMPACT);
    json_decref(entry);
    return text;
}

void ingress_models_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_models: ");
    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"accounts\":[{\"id\":1,\"name\":\"a\"},{\"id\":2,\"name\":\"b\","
        "\"allowed_models\":[\"m1\",\"m2\"]}],"
        "\"keys\":[{\"id\":10,\"account_id\":1,\"hash\":\"h10\"},"
        "{\"id\":11,\"account_id\":1,\"hash\":\"h11\",\"allowed_models\":[\"m2\"]},"
        "{\"id\":20,\"account_id\":2,\"hash\":\"h20\"}],"
        "\"models\":[{\"id\":1,\"name\":\"m1\"},{\"id\":2,\"name\":\"m2\"},"
        "{\"id\":3,\"name\":\"m3\"},{\"id\":4,\"name\":\"off\",\"status\":\"disabled\"}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    const proto_api_key_t *k10 = proto_catalog_key(catalog, 10);
    const proto_api_key_t *k11 = proto_catalog_key(catalog, 11);
    const proto_api_key_t *k20 = proto_catalog_key(catalog, 20);
    PROTO_CHECK(k10 && k11 && k20);

    ingress_models_t *models = ingress_models_new(1000, 2);
    bool hit = true;
    const char *list = ingress_models_list(models, catalog, k10, PROTO_PROTOCOL_OPENAI, 100, &hit);
    PROTO_CHECK(!hit);
    json_t *root = json_loads(list, 0, NULL);
    PROTO_CHECK(root && strcmp(json_string_value(json_object_get(root, "object")), "list") == 0);
    json_t *data = json_object_get(root, "data");
    //  Every active model the key and its account allow, no disabled one.
    PROTO_CHECK(json_array_size(data) == 3);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(json_array_get(data, 0), "id")), "m1") ==
                0);
    json_decref(root);
    PROTO_CHECK(!strstr(list, "\"off\""));
    //  The key's list and the account's list both apply.
    list = ingress_models_list(models, catalog, k11, PROTO_PROTOCOL_OPENAI, 100, &hit);
    PROTO_CHECK(!hit && strstr(list, "\"m2\"") && !strstr(list, "\"m1\"") &&
                !strstr(list, "\"m3\""));
    list = ingress_models_list(models, catalog, k20, PROTO_PROTOCOL_ANTHROPIC, 100, &hit);
    root = json_loads(list, 0, NULL);
    PROTO_CHECK(json_array_size(json_object_get(root, "data")) == 2);
    PROTO_CHECK(json_is_false(json_object_get(root, "has_more")));
    PROTO_CHECK(strcmp(json_string_value(json_object_get(root, "last_id")), "m2") == 0);
    json_decref(root);
    //  The cache held at most two lists: the third started it over.
    PROTO_CHECK(ingress_models_size(models) == 1);
    //  Served from the cache until the TTL, then rebuilt.
    ingress_models_list(models, catalog, k20, PROTO_PROTOCOL_ANTHROPIC, 1099, &hit);
    PROTO_CHECK(hit);
    ingress_models_list(models, catalog, k20, PROTO_PROTOCOL_ANTHROPIC, 1100, &hit);
    PROTO_CHECK(!hit);
    list = ingress_models_list(models, catalog, k10, PROTO_PROTOCOL_GEMINI, 100, &hit);
    PROTO_CHECK(strstr(list, "\"models/m3\"") && strstr(list, "\"models\":["));
    ingress_models_reset(models);
    PROTO_CHECK(ingress_models_size(models) == 0);

    char *one = ingress_models_one(catalog, k10, PROTO_PROTOCOL_OPENAI, "m3");
    PROTO_CHECK(one && strstr(one, "\"id\":\"m3\"") && strstr(one, "\"object\":\"model\""));
    free(one);
    one = ingress_models_one(catalog, k10, PROTO_PROTOCOL_GEMINI, "models/m1");
    PROTO_CHECK(one && strstr(one, "\"name\":\"models/m1\""));
    free(one);
    PROTO_CHECK(!ingress_models_one(catalog, k11, PROTO_PROTOCOL_OPENAI, "m1"));
    PROTO_CHECK(!ingress_models_one(catalog, k10, PROTO_PROTOCOL_OPENAI, "off"));
    PROTO_CHECK(!ingress_models_one(catalog, k10, PROTO_PROTOCOL_OPENAI, "nope"));
    ingress_models_destroy(&models);
    proto_catalog_destroy(&catalog);

    //  A name a priced provider lists and no logical model has is listed
    //  after the logical ones, where the key's lists allow it.
    catalog = proto_catalog_from_json(
        "{\"accounts\":[{\"id\":1,\"name\":\"a\"}],"
        "\"keys\":[{\"id\":10,\"account_id\":1,\"hash\":\"h10\"},"
        "{\"id\":11,\"account_id\":1,\"hash\":\"h11\",\"allowed_models\":[\"m1\"]}],"
        "\"providers\":[{\"id\":1,\"name\":\"p\",\"default_price_in_micros\":1,"
        "\"default_price_out_micros\":1},{\"id\":2,\"name\":\"q\"}],"
        "\"models\":[{\"id\":1,\"name\":\"m1\"}],"
        "\"provider_models\":[{\"provider_id\":1,\"name\":\"raw-1\",\"first_seen_s\":5},"
        "{\"provider_id\":1,\"name\":\"m1\"},{\"provider_id\":2,\"name\":\"raw-2\"}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    proto_catalog_add_unlisted(catalog, true);
    models = ingress_models_new(1000, 8);
    list = ingress_models_list(models, catalog, proto_catalog_key(catalog, 10),
                               PROTO_PROTOCOL_OPENAI, 100, NULL);
    root = json_loads(list, 0, NULL);
    data = json_object_get(root, "data");
    PROTO_CHECK(json_array_size(data) == 2);
    PROTO_CHECK(
        strcmp(json_string_value(json_object_get(json_array_get(data, 1), "id")), "raw-1") == 0);
    PROTO_CHECK(json_integer_value(json_object_get(json_array_get(data, 1), "created")) == 5);
    json_decref(root);
    PROTO_CHECK(!strstr(list, "raw-2")); //  its provider has no default prices
    list = ingress_models_list(models, catalog, proto_catalog_key(catalog, 11),
                               PROTO_PROTOCOL_OPENAI, 100, NULL);
    PROTO_CHECK(!strstr(list, "raw-1"));
    one = ingress_models_one(catalog, proto_catalog_key(catalog, 10), PROTO_PROTOCOL_GEMINI,
                             "models/raw-1");
    PROTO_CHECK(one && strstr(one, "\"name\":\"models/raw-1\""));
    free(one);
    PROTO_CHECK(!ingress_models_one(catalog, proto_catalog_key(catalog, 10), PROTO_PROTOCOL_OPENAI,
                                    "raw-2"));
    ingress_models_destroy(&models);
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK\n");
}
