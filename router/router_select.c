#include "router_select.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void router_rng_seed(router_rng_t *rng, uint64_t seed)
{
    rng->state = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

uint64_t router_rng_next(router_rng_t *rng)
{
    uint64_t x = rng->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng->state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

//  One candidate before ordering.
typedef struct {
    proto_candidate_t candidate; //  what goes on the wire
    int priority[3];             //  route, provider, key priority
    int weight;                  //  route weight x key weight
    uint64_t draw;               //  weighted-random sort key within a tier
} s_option_t;

static int s_compare(const void *a, const void *b)
{
    const s_option_t *left = a, *right = b;
    for (int i = 0; i < 3; i++)
        if (left->priority[i] != right->priority[i])
            return left->priority[i] > right->priority[i] ? -1 : 1;
    if (left->draw != right->draw)
        return left->draw > right->draw ? -1 : 1;
    return 0;
}

//  Weighted random order by "exponential keys": each option draws
//  u^(1/weight) and the largest comes first (Efraimidis-Spirakis). We keep it
//  in integers: compare -ln(u)/w by drawing u uniformly and scaling, which
//  for small weights is close enough; done in double only for the sort key.
static uint64_t s_draw(router_rng_t *rng, int weight)
{
    if (weight <= 0)
        return 0; //  weight 0: only when nothing else is left
    double u = ((double)(router_rng_next(rng) >> 11) + 1.0) / 9007199254740993.0;
    //  key = u^(1/w) in (0,1]; map to an integer for a stable compare.
    double key = pow(u, 1.0 / weight);
    return (uint64_t)(key * 18446744073709549568.0);
}

int router_select(proto_catalog_t *catalog, const char *model_name, router_rng_t *rng,
                  proto_candidate_t *out, size_t max)
{
    const proto_model_t *model = proto_catalog_model_by_name(catalog, model_name);
    if (!model || !model->active)
        return -1;
    s_option_t options[PROTO_MSG_CANDIDATES_MAX];
    size_t count = 0;
    size_t routes = proto_catalog_route_count(catalog);
    size_t keys = proto_catalog_provider_key_count(catalog);
    for (size_t r = 0; r < routes; r++) {
        const proto_route_t *route = proto_catalog_route_at(catalog, r);
        if (route->model_id != model->id || !route->active)
            continue;
        const proto_provider_t *provider = proto_catalog_provider(catalog, route->provider_id);
        if (!provider || !provider->active)
            continue;
        for (size_t k = 0; k < keys && count < PROTO_MSG_CANDIDATES_MAX; k++) {
            const proto_provider_key_t *key = proto_catalog_provider_key_at(catalog, k);
            if (key->provider_id != provider->id || !key->active)
                continue;
            s_option_t *option = &options[count++];
            memset(option, 0, sizeof *option);
            option->candidate.provider_id = provider->id;
            option->candidate.provider_key_id = key->id;
            option->candidate.upstream_protocol = (uint32_t)provider->protocol;
            snprintf(option->candidate.upstream_model, sizeof option->candidate.upstream_model,
                     "%s", route->upstream_model);
            option->priority[0] = route->priority;
            option->priority[1] = provider->priority;
            option->priority[2] = key->priority;
            option->weight = route->weight * provider->weight * key->weight;
            option->draw = s_draw(rng, option->weight);
        }
    }
    qsort(options, count, sizeof options[0], s_compare);
    size_t written = count < max ? count : max;
    for (size_t i = 0; i < written; i++)
        out[i] = options[i].candidate;
    return (int)written;
}

//  --------------------------------------------------------------------------
//  Self test, on a catalog built from SQL-free fixtures through the loader's
//  own structures is not possible (the catalog is opaque), so the test runs
//  against PostgreSQL in tests/; here we check the ordering pieces.

void router_select_test(bool verbose)
{
    if (verbose)
        printf(" * router_select: ");
    router_rng_t rng;
    router_rng_seed(&rng, 42);
    //  Weighted draws: weight 3 wins about three times as often as weight 1.
    int wins = 0;
    const int rounds = 100000;
    for (int i = 0; i < rounds; i++)
        if (s_draw(&rng, 3) > s_draw(&rng, 1))
            wins++;
    double share = (double)wins / rounds;
    assert(share > 0.73 && share < 0.77);
    //  Weight 0 never beats a positive weight.
    for (int i = 0; i < 1000; i++)
        assert(s_draw(&rng, 0) < s_draw(&rng, 1) || s_draw(&rng, 1) == 0);
    //  Priority dominates the draw.
    s_option_t options[2] = {{.priority = {0, 0, 0}, .draw = UINT64_MAX},
                             {.priority = {1, 0, 0}, .draw = 0}};
    qsort(options, 2, sizeof options[0], s_compare);
    assert(options[0].priority[0] == 1);
    //  An empty catalog knows no model.
    proto_catalog_t *catalog = proto_catalog_new_empty();
    proto_candidate_t out[4];
    assert(router_select(catalog, "nope", &rng, out, 4) == -1);
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK (weight 3 vs 1 won %.3f)\n", share);
}
