#include "router_stats.h"

#include <assert.h>
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
    snprintf(out, size, "%llu:%llu:%s", (unsigned long long)provider_id, (unsigned long long)key_id,
             model ? model : "");
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

void router_stats_test(bool verbose)
{
    if (verbose)
        printf(" * router_stats: ");
    router_stats_t *stats = router_stats_new();
    router_stat_t stat = {.state = 1, .success_ppm = 990000, .ttfb_us = 200000, .updated_ms = 100};
    router_stat_t out;
    assert(!router_stats_get(stats, 1, 2, "m", 100, 0, &out));
    router_stats_update(stats, 1, 2, "", &stat);
    //  The key's probe stands in for a model without its own entry.
    assert(router_stats_get(stats, 1, 2, "m", 100, 0, &out) && out.ttfb_us == 200000);
    stat.ttfb_us = 50000;
    router_stats_update(stats, 1, 2, "m", &stat);
    assert(router_stats_get(stats, 1, 2, "m", 100, 0, &out) && out.ttfb_us == 50000);
    //  Old news is no news.
    assert(!router_stats_get(stats, 1, 2, "m", 100000, 1000, &out));
    router_stats_destroy(&stats);
    if (verbose)
        printf("OK\n");
}
