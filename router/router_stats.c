#include "router_stats.h"
#include "proto_text.h"
#include "proto_check.h"

#include <assert.h>
#include <jansson.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _router_stats_t {
    zhashx_t *entries; //  "PID:KID:MODEL" -> router_stat_t (owned)
};

static void s_free(void **item)
{
    free(*item);
    *item = NULL;
}

router_stats_t *router_stats_new(void)
{
    router_stats_t *self = calloc(1, sizeof *self);
    assert(self);
    self->entries = zhashx_new();
    zhashx_set_destructor(self->entries, s_free);
    return self;
}

void router_stats_destroy(router_stats_t **self_p)
{
    assert(self_p);
    if (!*self_p)
        return;
    zhashx_destroy(&(*self_p)->entries);
    free(*self_p);
    *self_p = NULL;
}

static void s_name(char *out, size_t size, uint64_t provider_id, uint64_t key_id, const char *model)
{
    size_t used = 0;
    proto_text_add_u64(out, size, &used, provider_id);
    proto_text_add(out, size, &used, ":");
    proto_text_add_u64(out, size, &used, key_id);
    proto_text_add(out, size, &used, ":");
    proto_text_add(out, size, &used, model ? model : "");
}

void router_stats_update(router_stats_t *self, uint64_t provider_id, uint64_t provider_key_id,
                         const char *upstream_model, const router_stat_t *stat)
{
    char name[200];
    s_name(name, sizeof name, provider_id, provider_key_id, upstream_model);
    router_stat_t *entry = zhashx_lookup(self->entries, name);
    if (!entry) {
        entry = malloc(sizeof *entry);
        assert(entry);
        zhashx_insert(self->entries, name, entry);
    }
    *entry = *stat;
}

bool router_stats_get(router_stats_t *self, uint64_t provider_id, uint64_t provider_key_id,
                      const char *upstream_model, uint64_t now_ms, uint64_t max_age_ms,
                      router_stat_t *out)
{
    char name[200];
    s_name(name, sizeof name, provider_id, provider_key_id, upstream_model);
    router_stat_t *entry = zhashx_lookup(self->entries, name);
    if (!entry) {
        s_name(name, sizeof name, provider_id, provider_key_id, "");
        entry = zhashx_lookup(self->entries, name);
    }
    if (!entry || (max_age_ms && entry->updated_ms + max_age_ms < now_ms))
        return false;
    *out = *entry;
    return true;
}

json_t *router_stats_list(router_stats_t *self, uint64_t now_ms, uint64_t max_age_ms)
{
    json_t *list = json_array();
    for (router_stat_t *entry = zhashx_first(self->entries); entry;
         entry = zhashx_next(self->entries)) {
        if (max_age_ms && entry->updated_ms + max_age_ms < now_ms)
            continue;
        json_array_append_new(
            list,
            json_pack(
                "{s:s, s:i, s:I, s:I, s:I, s:I}", "id", (const char *)zhashx_cursor(self->entries),
                "state", entry->state, "success_ppm", (json_int_t)entry->success_ppm, "latency_us",
                (json_int_t)entry->latency_us, "ttfb_us", (json_int_t)entry->ttfb_us, "age_ms",
                (json_int_t)(now_ms > entry->updated_ms ? now_ms - entry->updated_ms : 0)));
    }
    return list;
}

size_t router_stats_merge(router_stats_t *self, json_t *list, uint64_t now_ms)
{
    size_t index, taken = 0;
    json_t *item;
    json_array_foreach(list, index, item)
    {
        const char *id = json_string_value(json_object_get(item, "id"));
        unsigned long long provider_id, key_id;
        int consumed = 0;
        if (!id || sscanf(id, "%llu:%llu:%n", &provider_id, &key_id, &consumed) != 2 ||
            consumed <= 0 || strlen(id + consumed) >= 128)
            continue;
        json_int_t age = json_integer_value(json_object_get(item, "age_ms"));
        router_stat_t stat = {
            .state = (int)json_integer_value(json_object_get(item, "state")),
            .success_ppm = (uint32_t)json_integer_value(json_object_get(item, "success_ppm")),
            .latency_us = (uint64_t)json_integer_value(json_object_get(item, "latency_us")),
            .ttfb_us = (uint64_t)json_integer_value(json_object_get(item, "ttfb_us")),
            .updated_ms = age > 0 && (uint64_t)age < now_ms ? now_ms - (uint64_t)age : now_ms};
        if (stat.success_ppm > 1000000)
            stat.success_ppm = 1000000;
        router_stats_update(self, provider_id, key_id, id + consumed, &stat);
        taken++;
    }
    return taken;
}

void router_stats_test(bool verbose)
{
    if (verbose)
        printf(" * router_stats: ");
    router_stats_t *stats = router_stats_new();
    router_stat_t stat = {.state = 1, .success_ppm = 990000, .ttfb_us = 200000, .updated_ms = 100};
    router_stat_t out;
    PROTO_CHECK(!router_stats_get(stats, 1, 2, "m", 100, 0, &out));
    router_stats_update(stats, 1, 2, "", &stat);
    //  The key's probe stands in for a model without its own entry.
    PROTO_CHECK(router_stats_get(stats, 1, 2, "m", 100, 0, &out) && out.ttfb_us == 200000);
    stat.ttfb_us = 50000;
    router_stats_update(stats, 1, 2, "m", &stat);
    PROTO_CHECK(router_stats_get(stats, 1, 2, "m", 100, 0, &out) && out.ttfb_us == 50000);
    //  Old news is no news.
    PROTO_CHECK(!router_stats_get(stats, 1, 2, "m", 100000, 1000, &out));
    {
        //  What one router exports, another table merges, ages kept.
        router_stats_t *copy = router_stats_new();
        json_t *list = router_stats_list(stats, 150, 0);
        PROTO_CHECK(json_array_size(list) >= 1);
        PROTO_CHECK(router_stats_merge(copy, list, 1150) == json_array_size(list));
        router_stat_t got;
        PROTO_CHECK(router_stats_get(copy, 1, 2, "m", 1150, 0, &got));
        PROTO_CHECK(got.success_ppm == 990000 && got.ttfb_us == 50000 && got.updated_ms == 1100);
        json_decref(list);
        json_t *bad = json_loads("[{\"id\":\"x\"},{\"id\":7},{}]", 0, NULL);
        PROTO_CHECK(router_stats_merge(copy, bad, 1) == 0);
        json_decref(bad);
        router_stats_destroy(&copy);
    }
    router_stats_destroy(&stats);
    if (verbose)
        printf("OK\n");
}
