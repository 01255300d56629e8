/*  router_select: the route decision, as a pure function of a catalog.

    A logical model resolves to its active routes; each route to the active
    keys of its (active) provider. Order: route priority (higher first), then
    provider priority, then key priority; within equal priority the order is a
    weighted random shuffle, so load spreads by weight instead of always
    landing on the first. The result is the ordered candidate list that
    dispatch fails over along.
*/
#ifndef ROUTER_SELECT_H_INCLUDED
#define ROUTER_SELECT_H_INCLUDED

#include "proto_catalog.h"
#include "proto_msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  A small, fast random source (xorshift64*); one per process, not shared.
typedef struct {
    uint64_t state; //  never zero
} router_rng_t;

//  Seeds a generator; a zero seed is replaced by a constant.
void router_rng_seed(router_rng_t *rng, uint64_t seed);

//  Next random number.
uint64_t router_rng_next(router_rng_t *rng);

//  Fills `out` (capacity max) with candidates for `model`. Returns how many,
//  0 when the model has no usable route, or -1 when the model is unknown or
//  disabled.
int router_select(proto_catalog_t *catalog, const char *model, router_rng_t *rng,
                  proto_candidate_t *out, size_t max);

//  Self test.
void router_select_test(bool verbose);

#endif
