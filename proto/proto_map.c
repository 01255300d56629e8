#include "proto_map.h"
#include "proto_text.h"
#include "proto_check.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <assert.h>
#include <czmq.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Everything one logical model resolved to.
typedef struct {
    uint64_t model_id;              //  models.id
    proto_map_pair_t *pairs;        //  allowed pairs, owned
    size_t pair_count;              //  entries
    size_t pair_capacity;           //  allocated
    proto_map_excluded_t *excluded; //  removed pairs, owned
    size_t excluded_count;          //  entries
    size_t excluded_capacity;       //  allocated
} s_model_t;

struct _proto_map_t {
    zhashx_t *models;         //  "ID" -> s_model_t (owned)
    zhashx_t *listed;         //  "PID\tNAME" -> non-NULL marker: provider lists name
    zhashx_t *has_list;       //  "PID" -> marker: provider has a fetched list
    proto_catalog_t *catalog; //  for proto_map_listing; borrowed, same lifetime as map
    bool zero_config;         //  zero-config routing on
};

const char *proto_map_source_name(proto_map_source_t source)
{
    switch (source) {
    case ROUTER_SOURCE_ROUTE:
        return "route";
    case ROUTER_SOURCE_INCLUDE:
        return "include";
    case ROUTER_SOURCE_RULE:
        return "rule";
    case ROUTER_SOURCE_ZERO:
        return "zero_config";
    }
    return "?";
}

static void s_model_free(void **item)
{
    s_model_t *model = *item;
    if (model) {
        free(model->pairs);
        free(model->excluded);
        free(model);
    }
    *item = NULL;
}

static void s_listed_key(char *out, size_t size, uint64_t provider_id, const char *model)
{
    snprintf(out, size, "%llu\t%s", (unsigned long long)provider_id, model);
}

//  Case-insensitive substring test (keywords).
static bool s_contains(const char *haystack, const char *needle)
{
    return *needle && strcasestr(haystack, needle) != NULL;
}

static s_model_t *s_model(proto_map_t *self, uint64_t model_id)
{
    char key[24];
    proto_text_u64(key, model_id);
    s_model_t *model = zhashx_lookup(self->models, key);
    if (!model) {
        model = calloc(1, sizeof *model);
        assert(model);
        model->model_id = model_id;
        zhashx_insert(self->models, key, model);
    }
    return model;
}

//  Adds a pair unless the same (provider, model) is already there from a
//  stronger or equal source (sources are added strongest first).
static void s_add(s_model_t *model, const proto_map_pair_t *pair)
{
    for (size_t i = 0; i < model->pair_count; i++)
        if (model->pairs[i].provider_id == pair->provider_id &&
            strcmp(model->pairs[i].upstream_model, pair->upstream_model) == 0) {
            if (model->pairs[i].source == pair->source && pair->priority > model->pairs[i].priority)
                model->pairs[i].priority = pair->priority;
            return;
        }
    if (model->pair_count == model->pair_capacity) {
        model->pair_capacity = model->pair_capacity ? model->pair_capacity * 2 : 8;
        model->pairs = realloc(model->pairs, model->pair_capacity * sizeof *model->pairs);
        assert(model->pairs);
    }
    model->pairs[model->pair_count++] = *pair;
}

static void s_exclude(s_model_t *model, uint64_t provider_id, const char *name, uint64_t rule_id,
                      const char *reason)
{
    if (model->excluded_count == model->excluded_capacity) {
        model->excluded_capacity = model->excluded_capacity ? model->excluded_capacity * 2 : 8;
        model->excluded =
            realloc(model->excluded, model->excluded_capacity * sizeof *model->excluded);
        assert(model->excluded);
    }
    proto_map_excluded_t *entry = &model->excluded[model->excluded_count++];
    memset(entry, 0, sizeof *entry);
    entry->provider_id = provider_id;
    snprintf(entry->upstream_model, sizeof entry->upstream_model, "%s", name);
    entry->rule_id = rule_id;
    snprintf(entry->reason, sizeof entry->reason, "%s", reason);
}

//  Does a matching rule take this listed name?
static bool s_rule_matches(const proto_mapping_rule_t *rule, pcre2_code *regex,
                           pcre2_match_data *match, const char *name)
{
    if (strcmp(rule->kind, "exact") == 0)
        return strcmp(name, rule->pattern) == 0;
    if (strcmp(rule->kind, "prefix") == 0)
        return strncmp(name, rule->pattern, strlen(rule->pattern)) == 0;
    if (strcmp(rule->kind, "keyword") == 0)
        return s_contains(name, rule->pattern);
    if (strcmp(rule->kind, "regex") == 0 && regex)
        return pcre2_match(regex, (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0, 0, match, NULL) >= 0;
    return false;
}

static bool s_is_matching_kind(const char *kind)
{
    return strcmp(kind, "exact") == 0 || strcmp(kind, "prefix") == 0 ||
           strcmp(kind, "keyword") == 0 || strcmp(kind, "regex") == 0;
}

//  Applies one matching rule to every listed model of its provider(s).
static void s_apply_rule(proto_map_t *self, proto_catalog_t *catalog, s_model_t *model,
                         const proto_mapping_rule_t *rule)
{
    pcre2_code *regex = NULL;
    pcre2_match_data *match = NULL;
    if (strcmp(rule->kind, "regex") == 0) {
        int code;
        PCRE2_SIZE offset;
        regex = pcre2_compile((PCRE2_SPTR)rule->pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code,
                              &offset, NULL);
        if (!regex) {
            char message[64], reason[96];
            pcre2_get_error_message(code, (PCRE2_UCHAR *)message, sizeof message);
            snprintf(reason, sizeof reason, "invalid regex at %zu: %s", (size_t)offset, message);
            s_exclude(model, rule->provider_id, rule->pattern, rule->id, reason);
            return;
        }
        match = pcre2_match_data_create_from_pattern(regex, NULL);
    }
    size_t count = proto_catalog_provider_model_count(catalog);
    for (size_t i = 0; i < count; i++) {
        const proto_provider_model_t *listed = proto_catalog_provider_model_at(catalog, i);
        if (rule->provider_id && listed->provider_id != rule->provider_id)
            continue;
        if (!s_rule_matches(rule, regex, match, listed->name))
            continue;
        proto_map_pair_t pair = {.provider_id = listed->provider_id,
                                 .priority = rule->priority,
                                 .weight = rule->weight,
                                 .source = ROUTER_SOURCE_RULE,
                                 .rule_id = rule->id,
                                 .active = true};
        snprintf(pair.upstream_model, sizeof pair.upstream_model, "%s", listed->name);
        s_add(model, &pair);
    }
    pcre2_match_data_free(match);
    pcre2_code_free(regex);
}

//  Removes list-derived pairs an exclusion rule names.
static void s_apply_exclusion(s_model_t *model, const proto_mapping_rule_t *rule)
{
    bool by_keyword = strcmp(rule->kind, "exclude_keyword") == 0;
    size_t kept = 0;
    for (size_t i = 0; i < model->pair_count; i++) {
        proto_map_pair_t *pair = &model->pairs[i];
        bool from_list = pair->source == ROUTER_SOURCE_RULE || pair->source == ROUTER_SOURCE_ZERO;
        bool hit = by_keyword ? s_contains(pair->upstream_model, rule->pattern)
                              : pair->provider_id == rule->provider_id;
        if (from_list && hit) {
            char reason[96];
            snprintf(reason, sizeof reason, "%s '%.60s'", rule->kind,
                     by_keyword ? rule->pattern : "");
            if (!by_keyword)
                snprintf(reason, sizeof reason, "exclude_provider");
            s_exclude(model, pair->provider_id, pair->upstream_model, rule->id, reason);
        } else
            model->pairs[kept++] = *pair;
    }
    model->pair_count = kept;
}

//  Resolves one logical model.
static void s_resolve(proto_map_t *self, proto_catalog_t *catalog, const proto_model_t *entry)
{
    s_model_t *model = s_model(self, entry->id);
    //  Routes come sorted by model; a scan is fine at catalog-load time.
    for (size_t i = 0; i < proto_catalog_route_count(catalog); i++) {
        const proto_route_t *route = proto_catalog_route_at(catalog, i);
        if (route->model_id != entry->id)
            continue;
        proto_map_pair_t pair = {.provider_id = route->provider_id,
                                 .priority = route->priority,
                                 .weight = route->weight,
                                 .source = ROUTER_SOURCE_ROUTE,
                                 .route_id = route->id,
                                 .active = route->active};
        snprintf(pair.upstream_model, sizeof pair.upstream_model, "%s", route->upstream_model);
        s_add(model, &pair);
    }
    size_t rules = proto_catalog_rule_count(catalog);
    bool positive = false;
    for (size_t i = 0; i < rules; i++) {
        const proto_mapping_rule_t *rule = proto_catalog_rule_at(catalog, i);
        if (rule->model_id != entry->id || strcmp(rule->kind, "include") != 0)
            continue;
        positive = true;
        for (size_t p = 0; p < proto_catalog_provider_count(catalog); p++) {
            const proto_provider_t *provider = proto_catalog_provider_at(catalog, p);
            if (rule->provider_id && provider->id != rule->provider_id)
                continue;
            proto_map_pair_t pair = {.provider_id = provider->id,
                                     .priority = rule->priority,
                                     .weight = rule->weight,
                                     .source = ROUTER_SOURCE_INCLUDE,
                                     .rule_id = rule->id,
                                     .active = true};
            snprintf(pair.upstream_model, sizeof pair.upstream_model, "%s",
                     *rule->pattern ? rule->pattern : entry->name);
            s_add(model, &pair);
        }
    }
    for (size_t i = 0; i < rules; i++) {
        const proto_mapping_rule_t *rule = proto_catalog_rule_at(catalog, i);
        if (rule->model_id == entry->id && s_is_matching_kind(rule->kind)) {
            positive = true;
            s_apply_rule(self, catalog, model, rule);
        }
    }
    if (!positive && model->pair_count == 0 && self->zero_config) {
        for (size_t i = 0; i < proto_catalog_provider_model_count(catalog); i++) {
            const proto_provider_model_t *listed = proto_catalog_provider_model_at(catalog, i);
            if (strcmp(listed->name, entry->name) != 0)
                continue;
            proto_map_pair_t pair = {.provider_id = listed->provider_id,
                                     .weight = 1,
                                     .source = ROUTER_SOURCE_ZERO,
                                     .active = true};
            snprintf(pair.upstream_model, sizeof pair.upstream_model, "%s", listed->name);
            s_add(model, &pair);
        }
    }
    for (size_t i = 0; i < rules; i++) {
        const proto_mapping_rule_t *rule = proto_catalog_rule_at(catalog, i);
        if (rule->model_id == entry->id && (strcmp(rule->kind, "exclude_keyword") == 0 ||
                                            strcmp(rule->kind, "exclude_provider") == 0))
            s_apply_exclusion(model, rule);
    }
}

proto_map_t *proto_map_build(proto_catalog_t *catalog, bool zero_config)
{
    proto_map_t *self = calloc(1, sizeof *self);
    assert(self);
    self->models = zhashx_new();
    zhashx_set_destructor(self->models, s_model_free);
    self->listed = zhashx_new();
    self->has_list = zhashx_new();
    self->catalog = catalog;
    self->zero_config = zero_config;
    static int marker = 1;
    for (size_t i = 0; i < proto_catalog_provider_model_count(catalog); i++) {
        const proto_provider_model_t *listed = proto_catalog_provider_model_at(catalog, i);
        char key[200];
        s_listed_key(key, sizeof key, listed->provider_id, listed->name);
        zhashx_update(self->listed, key, &marker);
        proto_text_u64(key, listed->provider_id);
        zhashx_update(self->has_list, key, &marker);
    }
    for (size_t i = 0; i < proto_catalog_model_count(catalog); i++)
        s_resolve(self, catalog, proto_catalog_model_at(catalog, i));
    return self;
}

void proto_map_destroy(proto_map_t **self_p)
{
    assert(self_p);
    proto_map_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->models);
    zhashx_destroy(&self->listed);
    zhashx_destroy(&self->has_list);
    free(self);
    *self_p = NULL;
}

static s_model_t *s_find(proto_map_t *self, uint64_t model_id)
{
    char key[24];
    proto_text_u64(key, model_id);
    return zhashx_lookup(self->models, key);
}

const proto_map_pair_t *proto_map_pairs(proto_map_t *self, uint64_t model_id, size_t *count)
{
    s_model_t *model = s_find(self, model_id);
    *count = model ? model->pair_count : 0;
    return model && model->pair_count ? model->pairs : NULL;
}

const proto_map_excluded_t *proto_map_excluded(proto_map_t *self, uint64_t model_id, size_t *count)
{
    s_model_t *model = s_find(self, model_id);
    *count = model ? model->excluded_count : 0;
    return model && model->excluded_count ? model->excluded : NULL;
}

bool proto_map_lists(proto_map_t *self, uint64_t provider_id, const char *model)
{
    char key[200];
    s_listed_key(key, sizeof key, provider_id, model);
    return zhashx_lookup(self->listed, key) != NULL;
}

bool proto_map_has_list(proto_map_t *self, uint64_t provider_id)
{
    char key[24];
    proto_text_u64(key, provider_id);
    return zhashx_lookup(self->has_list, key) != NULL;
}

bool proto_map_zero_config(proto_map_t *self)
{
    return self->zero_config;
}

size_t proto_map_listing(proto_map_t *self, const char *model, proto_map_pair_t *out, size_t max)
{
    size_t written = 0;
    if (!self->zero_config)
        return 0;
    for (size_t p = 0; p < proto_catalog_provider_count(self->catalog) && written < max; p++) {
        const proto_provider_t *provider = proto_catalog_provider_at(self->catalog, p);
        if (!proto_map_lists(self, provider->id, model))
            continue;
        proto_map_pair_t *pair = &out[written++];
        memset(pair, 0, sizeof *pair);
        pair->provider_id = provider->id;
        pair->weight = 1;
        pair->source = ROUTER_SOURCE_ZERO;
        pair->active = true;
        snprintf(pair->upstream_model, sizeof pair->upstream_model, "%s", model);
    }
    return written;
}

json_t *proto_map_json(proto_map_t *self)
{
    json_t *list = json_array();
    for (s_model_t *model = zhashx_first(self->models); model; model = zhashx_next(self->models))
        for (size_t i = 0; i < model->pair_count; i++) {
            const proto_map_pair_t *pair = &model->pairs[i];
            json_array_append_new(
                list, json_pack("{s:I, s:I, s:s, s:s, s:I, s:i, s:i, s:b}", "model_id",
                                (json_int_t)model->model_id, "provider_id",
                                (json_int_t)pair->provider_id, "upstream_model",
                                pair->upstream_model, "source", proto_map_source_name(pair->source),
                                "rule_id", (json_int_t)pair->rule_id, "priority", pair->priority,
                                "weight", pair->weight, "active", pair->active));
        }
    return list;
}

//  --------------------------------------------------------------------------
//  Self test

static const proto_map_pair_t *s_pair(proto_map_t *map, uint64_t model_id, uint64_t provider_id,
                                      const char *name)
{
    size_t count;
    const proto_map_pair_t *pairs = proto_map_pairs(map, model_id, &count);
    for (size_t i = 0; i < count; i++)
        if (pairs[i].provider_id == provider_id && strcmp(pairs[i].upstream_model, name) == 0)
            return &pairs[i];
    return NULL;
}

void proto_map_test(bool verbose)
{
    if (verbose)
        printf(" * proto_map: ");
    const char *fixture =
        "{\"providers\":[{\"id\":1,\"name\":\"oa\"},{\"id\":2,\"name\":\"relay\"},"
        "{\"id\":3,\"name\":\"an\",\"protocol\":\"anthropic\"}],"
        "\"models\":[{\"id\":10,\"name\":\"gpt-4o\"},{\"id\":11,\"name\":\"claude\"},"
        "{\"id\":12,\"name\":\"gpt-4o-mini\"},{\"id\":13,\"name\":\"fancy\"},"
        "{\"id\":14,\"name\":\"pinned\"},{\"id\":15,\"name\":\"broken\"}],"
        "\"routes\":[{\"id\":100,\"model_id\":14,\"provider_id\":2,\"upstream_model\":\"x-1\","
        "\"priority\":5}],"
        "\"mapping_rules\":["
        "{\"id\":1,\"model_id\":11,\"kind\":\"prefix\",\"pattern\":\"claude-3-5\"},"
        "{\"id\":2,\"model_id\":11,\"kind\":\"exclude_keyword\",\"pattern\":\"HAIKU\"},"
        "{\"id\":3,\"model_id\":13,\"kind\":\"regex\",\"pattern\":\"^gpt-4o(-\\\\d{4})?$\"},"
        "{\"id\":4,\"model_id\":13,\"kind\":\"exclude_provider\",\"provider_id\":2},"
        "{\"id\":5,\"model_id\":13,\"kind\":\"include\",\"pattern\":\"special\","
        "\"provider_id\":2,\"priority\":3},"
        "{\"id\":6,\"model_id\":13,\"kind\":\"keyword\",\"pattern\":\"4O-2\",\"provider_id\":1},"
        "{\"id\":7,\"model_id\":15,\"kind\":\"regex\",\"pattern\":\"([\"}],"
        "\"provider_models\":["
        "{\"provider_id\":1,\"name\":\"gpt-4o\"},{\"provider_id\":1,\"name\":\"gpt-4o-mini\"},"
        "{\"provider_id\":1,\"name\":\"gpt-4o-2024\"},"
        "{\"provider_id\":2,\"name\":\"gpt-4o\"},{\"provider_id\":2,\"name\":\"claude-3-5-sonnet\"}"
        ","
        "{\"provider_id\":3,\"name\":\"claude-3-5-sonnet\"},"
        "{\"provider_id\":3,\"name\":\"claude-3-5-haiku\"},"
        "{\"provider_id\":3,\"name\":\"claude-3-opus\"}]}";
    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(fixture, error, sizeof error);
    PROTO_CHECK(catalog);
    proto_map_t *map = proto_map_build(catalog, true);
    size_t count;

    //  Zero-config: gpt-4o has no rule; both providers listing it serve it.
    proto_map_pairs(map, 10, &count);
    PROTO_CHECK(count == 2 && s_pair(map, 10, 1, "gpt-4o") && s_pair(map, 10, 2, "gpt-4o"));
    PROTO_CHECK(s_pair(map, 10, 1, "gpt-4o")->source == ROUTER_SOURCE_ZERO);
    //  Prefix, then a case-insensitive keyword exclusion.
    proto_map_pairs(map, 11, &count);
    PROTO_CHECK(count == 2 && s_pair(map, 11, 2, "claude-3-5-sonnet") &&
                s_pair(map, 11, 3, "claude-3-5-sonnet") && !s_pair(map, 11, 3, "claude-3-5-haiku"));
    const proto_map_excluded_t *excluded = proto_map_excluded(map, 11, &count);
    PROTO_CHECK(count == 1 && excluded[0].rule_id == 2 &&
                strcmp(excluded[0].upstream_model, "claude-3-5-haiku") == 0);
    //  Regex, provider exclusion (not of the include), include, keyword.
    proto_map_pairs(map, 13, &count);
    PROTO_CHECK(s_pair(map, 13, 1, "gpt-4o") && s_pair(map, 13, 1, "gpt-4o-2024"));
    PROTO_CHECK(!s_pair(map, 13, 1, "gpt-4o-mini") && !s_pair(map, 13, 2, "gpt-4o"));
    PROTO_CHECK(s_pair(map, 13, 2, "special") &&
                s_pair(map, 13, 2, "special")->source == ROUTER_SOURCE_INCLUDE &&
                s_pair(map, 13, 2, "special")->priority == 3);
    PROTO_CHECK(count == 3);
    //  A route is explicit: it stays, and the model gets no zero-config pairs.
    proto_map_pairs(map, 14, &count);
    PROTO_CHECK(count == 1 && s_pair(map, 14, 2, "x-1")->source == ROUTER_SOURCE_ROUTE &&
                s_pair(map, 14, 2, "x-1")->priority == 5);
    //  A broken regex matches nothing and says why.
    PROTO_CHECK(proto_map_pairs(map, 15, &count) == NULL && count == 0);
    excluded = proto_map_excluded(map, 15, &count);
    PROTO_CHECK(count == 1 && strstr(excluded[0].reason, "invalid regex"));
    //  Names that are no logical model: zero-config by listing.
    proto_map_pair_t out[4];
    PROTO_CHECK(proto_map_listing(map, "claude-3-opus", out, 4) == 1 && out[0].provider_id == 3);
    PROTO_CHECK(proto_map_listing(map, "nope", out, 4) == 0);
    PROTO_CHECK(proto_map_lists(map, 1, "gpt-4o-mini") && !proto_map_lists(map, 3, "gpt-4o"));
    json_t *all = proto_map_json(map);
    PROTO_CHECK(json_array_size(all) == 9);
    json_decref(all);
    proto_map_destroy(&map);

    //  Zero-config off: gpt-4o has nowhere to go, listing finds nothing.
    map = proto_map_build(catalog, false);
    PROTO_CHECK(proto_map_pairs(map, 10, &count) == NULL);
    PROTO_CHECK(proto_map_listing(map, "claude-3-opus", out, 4) == 0);
    proto_map_destroy(&map);
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK\n");
}
