/*  router_select: the route decision, as a function of the catalog and the
    router's soft state (breakers, health, bindings, limits).

    1. Resolve the requested name to (provider, upstream model) pairs:
       a logical model's pairs from proto_map; "provider/name" pins one
       provider (name is a logical model, or under zero-config a model the
       provider lists); any other name, under zero-config, goes to every
       provider that lists it.
    2. Expand each pair to the active keys of its provider, and exclude
       (with the reason, for explain): disabled provider, route or key; a
       missing required capability (the key's or the logical model's tags);
       a breaker that is open or disabled; a key at its max_rps or
       max_concurrent share.
    3. Order what is left by the model's scheduling mode:
         priority      route/rule priority, provider priority, key priority;
                       ties weighted-random (two stages, below)
         key_priority  key priority across all providers; ties by key weight
         weighted      weighted random (two stages, below)
         latency       EWMA time to first token from health (log buckets of
                       ~10%, unknown = mean of the known); ties uniform
         cost          key multiplier_ppm, lowest first; ties uniform
         reliability   success rate from health (1% buckets, unknown = mean
                       of the known); ties uniform
         balanced      one score blending weight, latency, reliability and
                       price (weights 0.25, 0.30, 0.30, 0.15; 5% buckets);
                       ties weighted as in weighted
       Ties are drawn in two stages: the provider by its weight, then one of
       its candidates by route x key weight, so a provider with many
       matching models or keys gets no bigger share; within a tier the
       providers then take turns (a failover moves to another provider
       before a provider's second candidate). key_priority has one stage.
       "Ties uniform" means a fresh random order on every decision, so equal
       candidates share the load evenly instead of the first taking it all.
    4. A session (account and session id) orders the candidates within each
       tier by rendezvous hashing instead of by chance: every instance puts
       the same candidate first for it, without shared state, and two
       accounts sending the same session string are placed independently.
       Then, per provider, the model that last served this client key well
       is preferred over that provider's other models.
    5. Nothing eligible but some candidates only breaker-open: the best of
       them goes alone, as the last resort (its success closes the breaker).
       Nothing eligible but some at their limit: 429. Otherwise 503.
*/
#ifndef ROUTER_SELECT_H_INCLUDED
#define ROUTER_SELECT_H_INCLUDED

#include "proto_catalog.h"
#include "proto_msg.h"
#include "router_breaker.h"
#include "router_limit.h"
#include "proto_map.h"
#include "router_stats.h"
#include "router_sticky.h"

#include <jansson.h>
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

typedef enum {
    ROUTER_MODE_PRIORITY = 0,
    ROUTER_MODE_KEY_PRIORITY,
    ROUTER_MODE_WEIGHTED,
    ROUTER_MODE_LATENCY,
    ROUTER_MODE_COST,
    ROUTER_MODE_RELIABILITY,
    ROUTER_MODE_BALANCED,
} router_mode_t;

//  Parses a models.scheduling value; unknown names are "priority".
router_mode_t router_mode_parse(const char *name);

//  Name of a mode. Static string.
const char *router_mode_name(router_mode_t mode);

//  Working space a caller may lend every decision (it is large): decisions
//  with one do not allocate. Not shared between threads.
typedef struct _router_scratch_t router_scratch_t;

//  Creates working space. Caller owns return value.
router_scratch_t *router_scratch_new(void);

//  Destroys it; nulls the pointer.
void router_scratch_destroy(router_scratch_t **self_p);

//  What a decision consults. Everything but catalog, map and rng may be NULL.
typedef struct {
    proto_catalog_t *catalog;  //  configuration
    proto_map_t *map;          //  resolved pairs of that catalog
    router_breaker_t *breaker; //  circuit breakers
    router_sticky_t *sticky;   //  per-key model preferences
    router_stats_t *stats;     //  health per candidate
    router_limit_t *limit;     //  per-key rate and concurrency shares
    router_rng_t *rng;         //  tie-breaking
    uint64_t stats_max_age_ms; //  health older than this is ignored, 0 = keep
    router_scratch_t *scratch; //  working space to use, or NULL: allocate
} router_context_t;

//  One request to decide.
typedef struct {
    const char *request_id;   //  for limits; may be NULL
    const char *model;        //  as the client asked
    uint64_t key_id;          //  client api key, 0 = none
    uint64_t account_id;      //  the key's account: scopes the session
    const char *session;      //  sticky session, may be NULL or ""
    const char *capabilities; //  required tags, comma-separated, may be NULL
    uint64_t now_ms;          //  monotonic clock of the breakers and tables
    bool dry_run;             //  explain: claim no trial, bind nothing, count nothing
} router_request_t;

//  The answer.
typedef struct {
    int status;                                             //  200, 404, 429 or 503
    const char *error_code;                                 //  static; NULL on 200
    char error_message[512];                                //  for the client
    uint64_t retry_after_ms;                                //  for a 429
    proto_candidate_t candidates[PROTO_MSG_CANDIDATES_MAX]; //  in order; past count: unset
    size_t count;                                           //  entries in candidates
    router_mode_t mode;                                     //  scheduling mode used
    bool last_resort;                                       //  every candidate was open
    bool sticky;                                            //  first came from a binding
} router_decision_t;

//  Decides. With `explain` (a JSON object) it is filled with the model,
//  mode, every candidate in order with its score, and every excluded one
//  with why ("rule", "pinned", "disabled", "owner", "blocked", "capability", "breaker",
//  "limit").
void router_select_decide(const router_context_t *context, const router_request_t *request,
                          router_decision_t *decision, json_t *explain);

//  Self test: every mode's distribution, exclusions, stickiness, last resort.
void router_select_test(bool verbose);

#endif
